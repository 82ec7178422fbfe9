#!/usr/bin/env python
"""Data-parallel smoke test: a tiny KD training on N processes started by OneFlow's launcher.

    python scripts/dp_smoke.py --device cuda              # what scripts/gpu_check.sh runs (2 GPUs)
    python scripts/dp_smoke.py --device cpu               # the same on the CPU (the test suite runs it)

Writes a tiny synthetic task, trains a tiny teacher from scratch for 2 steps in one process, then runs
``kdu-train --recipe kd`` (2 steps, tiny student) under ``python -m oneflow.distributed.launch
--nproc_per_node N`` in eager mode and with ``--use_graph``, one process per device (``--device cuda``
takes the GPU of each process's ``LOCAL_RANK``). A mode passes when the job exits 0 within ``--timeout``
seconds and rank 0 wrote the model (``model/weights``) and the results (``results/results_eval.json``).
Prints one line per mode; exits 0 when every mode passed, 1 otherwise. With ``--device cuda`` and fewer
than N visible GPUs it prints one line saying why it skips and exits 0. A job that dies from a segfault
(the nn.Graph runtime's rare race in OneFlow 0.9) is run once more, and the line says so.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

TINY_TEACHER = ["--teacher_model", "scratch", "--teacher_num_hidden_layers", "1", "--teacher_hidden_size", "32",
                "--teacher_num_attention_heads", "2", "--teacher_intermediate_size", "64"]
TINY_STUDENT = ["--student_num_hidden_layers", "1", "--student_hidden_size", "32", "--student_num_attention_heads",
                "2", "--student_intermediate_size", "64"]
TINY_RUN = ["--max_train_examples", "32", "--max_eval_examples", "16", "--max_steps", "2", "--seq_length", "16",
            "--batch_size_per_device", "4", "--eval_batch_size", "8", "--checkpoint_every", "2"]
CRASH = re.compile(r"Signals\.SIG(SEGV|BUS)|Segmentation fault")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(command, timeout, env):
    """Run ``command`` in its own session; kill the whole group on timeout. Returns (code or None, stderr)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)
    try:
        _, err = process.communicate(timeout=timeout)
        code = process.returncode
    except subprocess.TimeoutExpired:
        code, err = None, ""
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if code is None:
        _, err = process.communicate()
    return code, err or ""


def gpu_count() -> int:
    """The CUDA devices OneFlow sees (0 without CUDA), asked in a child process (a CUDA call may abort)."""
    probe = "import oneflow, sys; print(oneflow.cuda.device_count() if oneflow.cuda.is_available() else 0)"
    try:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, GLOG_minloglevel="3")).stdout.split()
        return int(out[-1]) if out else 0
    except (subprocess.TimeoutExpired, ValueError):
        return 0


def prepare(workdir: str, device: str, timeout: float, env) -> tuple:
    """The tiny task and teacher under ``workdir``; returns (data directory, task name, teacher directory).
    Run in child processes: this process never imports OneFlow (whose import sets RANK, MASTER_PORT, ...)."""
    data = os.path.join(workdir, "data")
    code = ("import sys; from knowledge_distill_util.data import prepare_default_data as p; "
            "print(p(sys.argv[1], seed=0, source='synthetic', max_per_class=12)[0])")
    made = subprocess.run([sys.executable, "-c", code, data], capture_output=True, text=True, timeout=timeout, env=env)
    if made.returncode != 0 or not made.stdout.split():
        raise RuntimeError(f"the tiny task was not written (exit {made.returncode}):\n{made.stderr[-3000:]}")
    task = made.stdout.split()[-1]
    teacher = os.path.join(workdir, "teacher")
    command = [sys.executable, "-m", "knowledge_distill_util", "train", "--recipe", "teacher", "--data_dir", data,
               "--task_name", task, "--model_save_dir", teacher, "--result_dir", os.path.join(workdir, "teacher_results"),
               "--device", device, *TINY_TEACHER, *TINY_RUN]
    code, err = _run(command, timeout, env)
    if code != 0:
        raise RuntimeError(f"the tiny teacher did not train (exit {code}):\n{err[-3000:]}")
    return data, task, teacher


def smoke(workdir: str, data: str, task: str, teacher: str, device: str, nproc: int, mode: str, timeout: float,
          env) -> tuple:
    """One data-parallel KD run; returns (passed, one line)."""
    out = os.path.join(workdir, f"kd_{mode}")
    args = ["--recipe", "kd", "--data_dir", data, "--task_name", task, "--teacher_model", teacher, "--model_save_dir",
            os.path.join(out, "model"), "--result_dir", os.path.join(out, "results"), "--device", device,
            *TINY_STUDENT, *TINY_RUN] + (["--use_graph"] if mode == "graph" else [])
    note = ""
    for attempt in range(2):
        shutil.rmtree(out, ignore_errors=True)
        command = [sys.executable, "-m", "oneflow.distributed.launch", "--nproc_per_node", str(nproc),
                   "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "knowledge_distill_util",
                   "train", *args]
        started = time.time()
        code, err = _run(command, timeout, dict(env, KDU_WATCHDOG_PORT=str(_free_port())))
        seconds = time.time() - started
        if code != 0 and CRASH.search(err) and attempt == 0:
            note = " (the first attempt died from a segfault, run again)"
            continue
        break
    if code is None:
        return False, f"dp_smoke: {mode} on {nproc} x {device}: FAILED, no end within {timeout:.0f} s"
    if code != 0:
        return False, f"dp_smoke: {mode} on {nproc} x {device}: FAILED, exit {code}{note}\n{err[-3000:]}"
    missing = [p for p in (os.path.join(out, "model", "weights"), os.path.join(out, "results", "results_eval.json"))
               if not os.path.exists(p)]
    if missing:
        return False, f"dp_smoke: {mode} on {nproc} x {device}: FAILED, exit 0 but rank 0 did not write {missing}"
    return True, f"dp_smoke: {mode} on {nproc} x {device}: ok, exit 0, rank 0 wrote the model and results " \
                 f"({seconds:.1f} s){note}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    parser.add_argument("--nproc", type=int, default=2, help="processes (one per GPU with --device cuda)")
    parser.add_argument("--modes", default="eager,graph", help="comma-separated: eager, graph")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per job")
    parser.add_argument("--workdir", default=None, help="keep the files here (default: a temporary directory)")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.nproc < 2 or not modes or any(m not in ("eager", "graph") for m in modes):
        parser.error(f"--nproc must be at least 2 and --modes a list of eager/graph, got {args.nproc} and "
                     f"{args.modes!r}")
    if args.device == "cuda":
        count = gpu_count()
        if count < args.nproc:
            print(f"dp_smoke: {args.nproc}-GPU data-parallel smoke test skipped: OneFlow sees {count} CUDA "
                  f"device(s), {args.nproc} needed", flush=True)
            return 0
    env = dict(os.environ, GLOG_minloglevel=os.environ.get("GLOG_minloglevel", "3"))
    workdir = args.workdir or tempfile.mkdtemp(prefix="kdu_dp_smoke_")
    os.makedirs(workdir, exist_ok=True)
    try:
        try:
            data, task, teacher = prepare(workdir, args.device, args.timeout, env)
        except RuntimeError as error:
            print(f"dp_smoke: FAILED: {error}", flush=True)
            return 1
        passed = True
        for mode in modes:
            ok, line = smoke(workdir, data, task, teacher, args.device, args.nproc, mode, args.timeout, env)
            print(line, flush=True)
            passed = passed and ok
        return 0 if passed else 1
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
