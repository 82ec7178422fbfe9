#!/usr/bin/env python
"""Data-parallel scaling of the training loop (``scripts/benchmark.py --scaling --json PATH``).

Trains the default KD student (the ``common`` settings of ``kdu-compress``'s default run plan: 2 layers of
the teacher's width 384, 12 heads, intermediate 1536, frozen word embeddings, sequence length 48,
``--batch_size_per_device`` 32) and the TinyBERT intermediate stage (the same student, the teacher's
forward pass every step) for a fixed number of steps, in eager and graph mode, through the real
``kdu-train`` command, in three layouts: ``one`` (one process), ``data_parallel`` (one job on N processes
started by OneFlow's launcher) and ``jobs`` (N one-process jobs at once, as ``kdu-compress --jobs N``
starts its students, with :func:`~knowledge_distill_util._device.share_cpu_cores`). The teacher is a BERT of
all-MiniLM-L6-v2's shape (6 layers, hidden 384, 12 heads, intermediate 1536) trained one step from scratch
on a synthetic task (the throughput does not depend on its weights). ``--quick`` (a smoke run of the same
rows) trains a tiny teacher (2 layers, hidden 32, 2 heads, intermediate 64) and a student of its width
(:data:`QUICK_STUDENT`) instead.

Each row: ``recipe``, ``mode`` (eager/graph), ``layout``, ``processes``, ``batch_size_per_device``,
``global_batch``, ``steps_timed``, ``samples_per_s`` (global batch x timed steps / their wall time, from
the loss log's ``seconds`` column, after ``--warmup`` untimed steps; for ``jobs`` the sum over the jobs,
which start together) and ``efficiency`` (samples/s at N over N times samples/s of ``one``, same mode), and the machine's 1-minute load average at the end of the job (on a
machine shared with other jobs the second process finds no idle core and the efficiency means little).
The per-device batch stays fixed (the global batch grows with N), as in the original
``batch_size_per_device``.
"""
import argparse
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEACHER = ["--teacher_model", "scratch", "--teacher_num_hidden_layers", "6", "--teacher_hidden_size", "384",
           "--teacher_num_attention_heads", "12", "--teacher_intermediate_size", "1536"]
QUICK_TEACHER = ["--teacher_model", "scratch", "--teacher_num_hidden_layers", "2", "--teacher_hidden_size", "32",
                 "--teacher_num_attention_heads", "2", "--teacher_intermediate_size", "64"]
#: ``--quick``: the plan's student settings replaced by these (a student of the tiny teacher's width).
QUICK_STUDENT = {"student_hidden_size": 32, "student_intermediate_size": 64, "student_num_attention_heads": 2}
RECIPES = {"kd": ["--recipe", "kd"], "tinybert_intermediate": ["--recipe", "tinybert", "--intermediate_distill"]}
STAGE = {"kd": "kd", "tinybert_intermediate": "intermediate"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env() -> Dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, GLOG_minloglevel="3", KDU_WATCHDOG_PORT=str(_free_port()),
                PYTHONPATH=ROOT + (os.pathsep + path if path else ""))


def _start(command: List[str], env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or _env(), cwd=ROOT, start_new_session=True)


def _finish(process: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
    command = process.args
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise RuntimeError(f"{' '.join(command[:8])} ... did not finish within {timeout:.0f} s:\n{err[-2000:]}")
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:8])} ... failed ({process.returncode}):\n{err[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def _run(command: List[str], timeout: float) -> subprocess.CompletedProcess:
    return _finish(_start(command), timeout)


def _parallel_jobs(count: int, args_of, timeout: float) -> None:
    """``count`` one-process runs at once, as ``kdu-compress --jobs count`` starts them (CPU sharing on)."""
    from knowledge_distill_util._device import share_cpu_cores

    env = _env()
    share_cpu_cores(env)
    processes = [_start(_train_command(1, args_of(job)), env) for job in range(count)]
    for process in processes:
        _finish(process, timeout)


def _train_command(processes: int, args: List[str]) -> List[str]:
    if processes == 1:
        return [sys.executable, "-m", "knowledge_distill_util", "train", "--nproc", "1", *args]
    return [sys.executable, "-m", "oneflow.distributed.launch", "--nproc_per_node", str(processes), "--master_addr",
            "127.0.0.1", "--master_port", str(_free_port()), "--module", "knowledge_distill_util", "train", *args]


def _throughput(log_path: str, global_batch: int, warmup: int) -> Dict:
    with open(log_path, newline="", encoding="utf-8") as stream:
        seconds = [float(row["seconds"]) for row in csv.DictReader(stream)]
    timed = len(seconds) - warmup
    if timed < 1:
        raise RuntimeError(f"{log_path}: {len(seconds)} steps logged, fewer than --warmup {warmup} + 1")
    elapsed = seconds[-1] - seconds[warmup - 1] if warmup > 0 else seconds[-1]
    return {"steps_timed": timed, "samples_per_s": round(global_batch * timed / elapsed, 2)}


def measure(work: str, steps: int, warmup: int, batch: int, processes: List[int], modes: List[str],
            recipes: List[str], timeout: float, seq_length: int,
            layouts: Sequence[str] = ("data_parallel", "jobs"), quick: bool = False) -> List[Dict]:
    """Every (recipe, mode, layout, processes) row; writes under ``work``. ``quick``: the tiny teacher
    and student (:data:`QUICK_TEACHER`, :data:`QUICK_STUDENT`)."""
    from knowledge_distill_util.data import prepare_default_data

    data = os.path.join(work, "data")
    task, _ = prepare_default_data(data, seed=0, source="synthetic", max_per_class=120)
    from knowledge_distill_util.training.compression import read_plan

    plan = {k: v for k, v in read_plan()["common"].items() if k not in ("seq_length", "batch_size_per_device")}
    if quick:
        plan.update(QUICK_STUDENT)
    student = [item for key, value in sorted(plan.items())
               for item in (f"--{key}", str(value).lower() if isinstance(value, bool) else str(value))]
    common = ["--data_dir", data, "--task_name", task, "--seq_length", str(seq_length), "--do_eval", "false"]
    teacher = os.path.join(work, "teacher")
    _run(_train_command(1, ["--recipe", "teacher", *common, *(QUICK_TEACHER if quick else TEACHER), "--max_steps",
                            "1", "--model_save_dir", teacher, "--result_dir", teacher + "_results"]), timeout)
    rows = []
    for recipe in recipes:
        for mode in modes:
            base = None
            for layout, count in [("one", 1)] + [(lay, n) for n in processes if n > 1 for lay in layouts]:
                tag = os.path.join(work, f"{recipe}_{mode}_{layout}_{count}")

                def args_of(job: int) -> List[str]:
                    out = f"{tag}_{job}" if layout == "jobs" else tag
                    return [*RECIPES[recipe], *common, *student, "--teacher_model", teacher, "--max_steps", str(steps),
                            "--batch_size_per_device", str(batch), "--checkpoint_every", str(10 ** 6),
                            "--model_save_dir", out, "--result_dir", out + "_results",
                            *(["--use_graph"] if mode == "graph" else [])]

                began = time.time()
                if layout == "jobs":
                    _parallel_jobs(count, args_of, timeout)
                    logs = [os.path.join(f"{tag}_{job}_results", f"{STAGE[recipe]}_losses.csv") for job in range(count)]
                    measured = [_throughput(log, batch, warmup) for log in logs]
                    speed = {"steps_timed": measured[0]["steps_timed"],
                             "samples_per_s": round(sum(m["samples_per_s"] for m in measured), 2)}
                else:
                    _run(_train_command(count, args_of(0)), timeout)
                    speed = _throughput(os.path.join(tag + "_results", f"{STAGE[recipe]}_losses.csv"), batch * count,
                                        warmup)
                row = {"recipe": recipe, "mode": mode, "layout": layout, "processes": count,
                       "batch_size_per_device": batch, "global_batch": batch * (1 if layout == "jobs" else count),
                       "seq_length": seq_length, **speed, "job_seconds": round(time.time() - began, 1),
                       "load_average_1min": round(os.getloadavg()[0], 2)}  # other jobs on the machine skew it
                if count == 1:
                    base = row["samples_per_s"]
                row["efficiency"] = round(row["samples_per_s"] / (count * base), 3) if base else None
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def format_table(rows: List[Dict]) -> str:
    lines = ["| recipe | mode | layout | processes | global batch | samples/s | efficiency |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['mode']} | {r['layout']} | {r['processes']} | {r['global_batch']} | "
                     f"{r['samples_per_s']} | {r['efficiency']} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None, json_path: Optional[str] = None, quick: bool = False) -> int:
    """Measure and print the table; ``json_path``: also write the rows there. ``quick``: tiny sizes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", metavar="PATH", default=json_path)
    parser.add_argument("--quick", action="store_true", default=quick, help="tiny sizes and models (a smoke run)")
    parser.add_argument("--steps", type=int, help="training steps per run (default 12, --quick 4)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    parser.add_argument("--batch", type=int, help="batch_size_per_device (default 32, --quick 4)")
    parser.add_argument("--seq_length", type=int, help="default 48, --quick 32")
    parser.add_argument("--modes", default="eager,graph")
    parser.add_argument("--recipes", default="kd,tinybert_intermediate")
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--layouts", default="data_parallel,jobs",
                        help="data_parallel: one job on N processes; jobs: N one-process jobs at once (kdu-compress)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per job")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary directory)")
    args = parser.parse_args(argv or [])
    for key, full, small in (("steps", 12, 4), ("batch", 32, 4), ("seq_length", 48, 32)):
        if getattr(args, key) is None:
            setattr(args, key, small if args.quick else full)
    if args.warmup < 0 or args.steps <= args.warmup:
        parser.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup})")
    work = args.keep or tempfile.mkdtemp(prefix="kdu-scaling-")
    try:
        rows = measure(work, args.steps, args.warmup, args.batch, [int(p) for p in args.processes.split(",")],
                       args.modes.split(","), args.recipes.split(","), args.timeout, args.seq_length,
                       args.layouts.split(","), quick=args.quick)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(rows, stream, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
