"""SIGINT/SIGTERM stop kdu-train and kdu-compress cleanly (the whole process tree, the locks released, one
line, exit 130/143) and ``--resume`` continues; the one-line refusal of kdu-compress's plan (its flags:
tests/cli/test_compress.py)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from knowledge_distill_util.cli.compress import main as compress_main
from knowledge_distill_util.data import prepare_default_data
from knowledge_distill_util.training import compression, interrupt
from knowledge_distill_util.config.schema import ConfigError
from knowledge_distill_util.training.recipes import RECIPES
from knowledge_distill_util.engine.lock import LOCK_FILE
from knowledge_distill_util.cli.train import run_entry

PYTHON = sys.executable
ENV = dict(os.environ, GLOG_minloglevel="3")
TINY = {"max_train_examples": 48, "max_eval_examples": 32, "checkpoint_every": 20, "batch_size_per_device": 8,
        "eval_batch_size": 16, "seq_length": 32, "teacher_model": "scratch", "teacher_num_hidden_layers": 1,
        "teacher_hidden_size": 16, "teacher_intermediate_size": 32, "teacher_num_attention_heads": 2,
        "student_num_hidden_layers": 1, "student_hidden_size": 16, "student_intermediate_size": 32,
        "student_num_attention_heads": 2}
#: the teacher and KD; the student trains 100 steps (about a second), long enough to be stopped (stopping
#: several jobs at once: test_stop_ends_every_job_group_and_kills_one_ignoring_sigterm).
PLAN = {"data": {"max_per_class": 30, "source": "synthetic"}, "common": dict(TINY, num_epochs=100.0),
        "jobs": {"teacher": {"max_steps": 2}, "kd": {"max_steps": 100}},
        "skip": [name for name in RECIPES.names() if name not in ("teacher", "kd")]}


# ------------------------------------------------------------------------------------------ helpers
def descendants(pid):
    """Every live process below ``pid`` (a /proc scan: pid -> parent)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stream:
                    parents[int(entry)] = int(stream.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def running(pid):
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def progress_step(path):
    try:
        with open(path) as stream:
            return json.load(stream)["step"]
    except (OSError, ValueError, KeyError):
        return -1


def wait_for(condition, process, timeout=240.0, what=""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        assert process.poll() is None, f"the run ended (status {process.returncode}) before {what}"
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"timed out waiting for {what}")


def locks_under(root):
    return [os.path.join(d, LOCK_FILE) for d, _, files in os.walk(root) if LOCK_FILE in files]


def one_line_end(stderr, prog, name):
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"{prog}: interrupted by {name};") and "--resume" in last, stderr[-2000:]
    return last


# ------------------------------------------------------------------------------- end-to-end signals
@pytest.mark.slow
def test_sigterm_stops_kdu_compress_with_its_jobs_and_resume_finishes(tmp_path):
    plan, out = tmp_path / "plan.json", tmp_path / "out"
    plan.write_text(json.dumps(PLAN))
    command = [PYTHON, "-m", "knowledge_distill_util", "compress", "--plan", str(plan), "--result_dir", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for(lambda: progress_step(out / "kd" / "progress.json") >= 1, process, what="the student job's first step")
    tree = descendants(process.pid)
    assert len(tree) >= 1
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    last = one_line_end(stderr, "kdu-compress", "SIGTERM")
    assert "stopped the running job(s)" in last
    assert not [pid for pid in tree if running(pid)], "processes of the run are still running"
    assert locks_under(out) == [] and not (out / "summary.json").exists()

    done = subprocess.run(command + ["--resume"], capture_output=True, text=True, env=ENV, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert [row["model"] for row in rows] == ["teacher", "KD"]
    assert locks_under(out) == []


@pytest.mark.slow
def test_sigint_stops_kdu_train_and_resume_continues_from_the_checkpoint(tmp_path):
    task, _ = prepare_default_data(str(tmp_path / "data"), seed=0, source="synthetic", max_per_class=30)
    flags = [f"--{key}={value}" for key, value in TINY.items() if not key.startswith("student")]
    command = [PYTHON, "-m", "knowledge_distill_util", "train", "--recipe", "teacher", "--data_dir",
               str(tmp_path / "data"), "--task_name", task, "--model_save_dir", str(tmp_path / "model"),
               "--result_dir", str(tmp_path / "results"), "--max_steps", "80", "--num_epochs", "100", *flags]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for(lambda: progress_step(tmp_path / "results" / "progress.json") >= 25, process,
             what="step 25 (after the first checkpoint)")
    tree = descendants(process.pid) | {process.pid}
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    one_line_end(stderr, "kdu-train", "SIGINT")
    assert not [pid for pid in tree if running(pid)]
    assert locks_under(tmp_path) == []

    done = subprocess.run(command + ["--resume"], capture_output=True, text=True, env=ENV, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stderr and locks_under(tmp_path) == []
    assert (tmp_path / "results" / "results_eval.json").is_file()


# ---------------------------------------------------------------------------- the job runner (fast)
def test_stop_ends_every_job_group_and_kills_one_ignoring_sigterm(tmp_path, monkeypatch):
    runner = compression._Running()
    log = open(tmp_path / "log", "w")
    polite = runner.start("polite", ["sh", "-c", "sleep 60 & sleep 60; wait"], log, dict(os.environ))
    stubborn = runner.start("stubborn", ["sh", "-c", "trap '' TERM; sleep 60 & wait"], log, dict(os.environ))
    time.sleep(0.5)
    tree = descendants(polite.pid) | descendants(stubborn.pid) | {polite.pid, stubborn.pid}
    assert len(tree) >= 4
    began = time.time()
    assert runner.stop(signal.SIGTERM, grace=2.0) == ["polite", "stubborn"]
    assert time.time() - began < 10
    assert polite.returncode == -signal.SIGTERM and stubborn.returncode == -signal.SIGKILL
    time.sleep(0.2)
    assert not [pid for pid in tree if running(pid)]
    with pytest.raises(RuntimeError, match="job late was not started: the run is stopping"):
        runner.start("late", ["true"], log, dict(os.environ))
    log.close()


# ------------------------------------------------------------------------------ refusals at the door
@pytest.mark.parametrize("name", ["../../x", "/abs/job", "a/b", "..", ".", "", "kd job"])
def test_plan_job_names_must_be_plain_names(tmp_path, capsys, name):
    plan, out = tmp_path / "plan.json", tmp_path / "out"
    plan.write_text(json.dumps({"jobs": {name: {"recipe": "kd"}}}))
    assert compress_main(["--quick", "--plan", str(plan), "--result_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {plan}: job name {name!r} is not a plain name") and "\n" not in err
    assert not out.exists() and os.listdir(tmp_path) == ["plan.json"]


def test_plain_job_names_are_accepted():
    plan = {"jobs": {"bilstm_baseline.v2-1": {"recipe": "bilstm"}}}
    for name in plan["jobs"]:
        compression._check_job_name(name, "plan.json")
    with pytest.raises(ConfigError, match=r"plan.json: job name '\.\.' is not a plain name"):
        compression._check_job_name("..", "plan.json")


# --------------------------------------------------------------------------------- run_entry (fast)
@pytest.mark.parametrize("error, status, name", [(interrupt.Interrupted(signal.SIGTERM), 143, "SIGTERM"),
                                                 (KeyboardInterrupt(), 130, "SIGINT")])
def test_run_entry_turns_an_interrupt_into_one_line(capsys, error, status, name):
    def make_config():
        raise error

    assert run_entry(make_config) == status
    err = capsys.readouterr().err.strip()
    assert err.startswith("kdu-train: interrupted by " + name) and "\n" not in err
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)  # restored


def test_run_entry_turns_a_full_disk_into_one_sentence(capsys, tmp_path):
    import errno

    def make_config():
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "model" / "weights"))

    assert run_entry(make_config) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: could not write {tmp_path}/model/weights: the disk is full (")
    assert "bytes free there" in err and "\n" not in err


def test_sigterm_raises_interrupted_in_the_main_thread():
    restore = interrupt.install()
    try:
        with pytest.raises(interrupt.Interrupted) as info:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert info.value.signum == signal.SIGTERM and interrupt.exit_status(info.value) == 143
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal while stopping: ignored
        time.sleep(0.1)
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_run_forwarding_passes_sigterm_on_to_the_launcher_and_its_ranks(tmp_path, capsys):
    """kdu-train's multi-process launch: SIGTERM to kdu-train reaches OneFlow's launcher (here a stand-in
    that records it and exits at once, leaving its "rank" to the group signal, as OneFlow's does) and its
    ranks; kdu-train prints one line and exits 143."""
    import threading

    marker = tmp_path / "got"
    child = ("import signal, subprocess, sys, time, pathlib\n"
             "rank = subprocess.Popen(['sleep', '60'])\n"
             f"signal.signal(signal.SIGTERM, lambda *a: (pathlib.Path({str(marker)!r}).write_text('TERM'), sys.exit(5)))\n"
             f"pathlib.Path({str(marker)!r} + '.ready').write_text(str(rank.pid))\n"
             "time.sleep(60)\n")

    def send_when_ready():
        while not os.path.exists(str(marker) + ".ready") or not open(str(marker) + ".ready").read():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=send_when_ready, daemon=True).start()
    began = time.time()
    assert interrupt.run_forwarding([PYTHON, "-c", child], "kdu-train") == 143
    assert time.time() - began < 30 and marker.read_text() == "TERM"
    assert not running(int(open(str(marker) + ".ready").read()))  # the rank ended too
    assert capsys.readouterr().err.strip().startswith("kdu-train: interrupted by SIGTERM;")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_run_forwarding_returns_the_child_status():
    assert interrupt.run_forwarding([PYTHON, "-c", "raise SystemExit(3)"], "kdu-train") == 3


def test_run_forwarding_hands_every_output_line_to_output_line():
    lines = []
    child = "import sys; print('out', flush=True); sys.stderr.write('err\\nlast'); raise SystemExit(4)"
    assert interrupt.run_forwarding([PYTHON, "-c", child], "kdu-train", output_line=lines.append) == 4
    assert sorted(lines) == ["err\n", "last", "out\n"]
