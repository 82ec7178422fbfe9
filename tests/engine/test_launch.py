"""``kdu-train --nproc``'s decision and launcher command (knowledge_distill_util/engine/launch.py); nothing is
launched here (the end-to-end run is in tests/training/test_nproc.py)."""
import os
import socket
import sys

import pytest

from knowledge_distill_util.engine import launch


def test_split_nproc_removes_every_form_and_keeps_the_last_value():
    assert launch.split_nproc(["--recipe", "kd", "--nproc", "2", "--quick"]) == (["--recipe", "kd", "--quick"], "2")
    assert launch.split_nproc(["--nproc=auto", "--seed", "1", "--nproc", "1"]) == (["--seed", "1"], "1")
    assert launch.split_nproc(["--recipe", "kd"]) == (["--recipe", "kd"], None)
    assert launch.split_nproc(["--nproc_x", "2"]) == (["--nproc_x", "2"], None)  # another flag's name
    with pytest.raises(ValueError, match=r"^--nproc needs a value: a number of processes or 'auto'$"):
        launch.split_nproc(["--recipe", "kd", "--nproc"])


@pytest.mark.parametrize("raw, value", [("1", 1), ("2", 2), (" 16 ", 16), ("auto", "auto"), ("AUTO", "auto")])
def test_parse_nproc_accepts_positive_integers_and_auto(raw, value):
    assert launch.parse_nproc(raw) == value


@pytest.mark.parametrize("raw", ["0", "-1", "abc", "1.5", "", "2x"])
def test_parse_nproc_refuses_anything_else_in_one_sentence(raw):
    with pytest.raises(ValueError) as caught:
        launch.parse_nproc(raw)
    assert str(caught.value) == f"--nproc must be a positive number of processes or 'auto', got {raw!r}"


def test_default_nproc_is_auto_unless_kdu_nproc_says_otherwise(monkeypatch):
    monkeypatch.delenv("KDU_NPROC", raising=False)
    assert launch.DEFAULT == "auto" and launch.default_nproc() == "auto"
    monkeypatch.setenv("KDU_NPROC", "1")
    assert launch.default_nproc() == 1
    monkeypatch.setenv("KDU_NPROC", " ")
    assert launch.default_nproc() == "auto"
    monkeypatch.setenv("KDU_NPROC", "zero")
    with pytest.raises(ValueError) as caught:
        launch.default_nproc()
    assert str(caught.value) == ("environment variable KDU_NPROC='zero' must be a positive number of processes or "
                                 "'auto'; set it to such a value or unset it for the default auto")


@pytest.mark.parametrize("batch, available, expected", [
    (32, 2, 2), (32, 1, 1), (9, 2, 1), (6, 4, 3), (32, 8, 8), (12, 5, 4), (1, 2, 1), (2, 64, 2)])
def test_auto_takes_the_most_processes_that_divide_the_batch(batch, available, expected):
    assert launch.processes("auto", batch, "cpu", available) == expected
    assert launch.processes("auto", batch, "cuda", available) == expected


def test_auto_is_one_process_when_nothing_is_gained():
    assert launch.processes("auto", 32, "cpu", 2, trains=False) == 1
    assert launch.processes("auto", 32, "cpu", 2, one_process="recipe 'x' runs in one process") == 1


def test_an_explicit_number_is_checked():
    assert launch.processes(1, 7, "cpu", 1) == 1
    assert launch.processes(2, 32, "cpu", 2) == 2
    with pytest.raises(ValueError) as caught:
        launch.processes(3, 30, "cpu", 2)
    assert str(caught.value) == ("--nproc 3 is more than the 2 CPU cores this process may use; pass at most 2 or "
                                 "--nproc auto")
    with pytest.raises(ValueError, match=r"^--nproc 2 is more than the 0 CUDA devices visible; pass at most 0"):
        launch.processes(2, 32, "cuda", 0)
    with pytest.raises(ValueError) as caught:
        launch.processes(2, 7, "cpu", 2)
    assert str(caught.value) == ("--nproc 2 cannot split the batch of 7 rows (--batch_size_per_device) into 2 equal "
                                 "parts; pass a batch divisible by 2, another --nproc or --nproc auto")
    with pytest.raises(ValueError) as caught:
        launch.processes(2, 32, "cpu", 2, one_process="recipe 'tinybert_general' runs in one process")
    assert str(caught.value) == "--nproc 2: recipe 'tinybert_general' runs in one process; pass --nproc 1"


def test_usable_cpus_is_this_process_s_affinity():
    assert launch.usable_cpus() == len(os.sched_getaffinity(0))


def test_the_command_runs_the_same_arguments_under_the_launcher_with_the_batch_split(monkeypatch):
    monkeypatch.delenv("KDU_MASTER_PORT", raising=False)
    monkeypatch.setenv("RANK", "-1")  # what ``import oneflow`` sets outside the launcher

    def command(count, argv, entry, batch, port=None):  # kdu-train --nproc's command: the original flags' builder
        return launch.launch_command({"gpu_num_per_node": str(count)}, argv, entry, port=port, batch=batch)

    entry = ["-m", "knowledge_distill_util", "train"]
    assert command(2, ["--recipe", "kd", "--quick"], entry, 32, port=31000) == [
        sys.executable, "-m", "oneflow.distributed.launch", "--nproc_per_node", "2", "--nnodes", "1",
        "--node_rank", "0", "--master_addr", "127.0.0.1", "--master_port", "31000", *entry,
        "--recipe", "kd", "--quick", "--batch_size_per_device", "16"]
    monkeypatch.setenv("KDU_MASTER_PORT", "31234")  # the user's port is kept
    assert command(4, [], entry, 8)[-7:] == ["--master_port", "31234", *entry, "--batch_size_per_device", "2"]
    monkeypatch.delenv("KDU_MASTER_PORT")
    port = int(command(2, [], entry, 8)[12])  # a free one (the original's flags alone: 29500)
    assert 0 < port < 65535
    assert launch.launch_command({"gpu_num_per_node": "2"}, [], entry)[12] == "29500"
    for count, batch in ((1, 8), (2, 7)):
        with pytest.raises(ValueError, match=r"^launch_command\(batch=...\) needs at least 2 processes on one node"):
            command(count, [], entry, batch)


def test_free_port_leaves_the_watchdog_s_port_free():
    port = launch.free_port()
    for candidate in (port, port + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", candidate))


def test_under_launcher_reads_rank(monkeypatch):
    monkeypatch.setenv("RANK", "-1")  # what ``import oneflow`` sets outside the launcher
    assert not launch.under_launcher()
    monkeypatch.setenv("RANK", "1")
    assert launch.under_launcher()
    monkeypatch.delenv("RANK")
    assert not launch.under_launcher()


#: What a 2-process ``kdu-train --recipe kd --quick --nproc 2`` without ``--task_name`` wrote (stdout and stderr
#: of the launcher and its ranks, merged; OneFlow 0.9, recorded).
FAILED_JOB = """\
*****************************************
Setting OMP_NUM_THREADS environment variable for each process to be 1 in default, to avoid your system being overloaded, please further tune the variable for optimal performance in your application as needed. 
*****************************************
libibverbs not available, ibv_fork_init skipped
error: no --task_name given; name a GLUE task (e.g. sst-2) or the default task written by kdu-compress (see its data/data_info.json)
[knowledge_distill_util.distributed] rank 1: rank 0 failed: no --task_name given; name a GLUE task (e.g. sst-2) or the default task written by kdu-compress (see its data/data_info.json); stopping this rank too
F20261206 08:11:48.275125 14214 io_event_poller.cpp:95] Check failed: !(cur_event->events & EPOLLERR) fd: 31: Resource temporarily unavailable [11]
[knowledge_distill_util.distributed] rank 0: rank 1 is gone (its process ended without a word: killed, out of memory, or crashed); stopping this rank too
Killing subprocess 14015
Killing subprocess 14016
Traceback (most recent call last):
  File "/usr/lib/python3.10/runpy.py", line 196, in _run_module_as_main
    return _run_code(code, main_globals, None,
  File "/work/main/.venv/lib/python3.10/site-packages/oneflow/distributed/launch.py", line 196, in sigkill_handler
    raise subprocess.CalledProcessError(
subprocess.CalledProcessError: Command '['python', '-u', '-m', 'knowledge_distill_util', 'train']' returned non-zero exit status 2.
"""


def _shown(text):
    shown = []
    output = launch.LauncherOutput(stream=None)
    output.write = shown.append
    for line in text.splitlines(keepends=True):
        output(line)
    return shown, output


def test_a_rank_s_user_error_is_the_job_s_one_sentence_and_status_2():
    shown, output = _shown(FAILED_JOB)
    assert shown == ["libibverbs not available, ibv_fork_init skipped\n",
                     "error: no --task_name given; name a GLUE task (e.g. sst-2) or the default task written by "
                     "kdu-compress (see its data/data_info.json)\n"]
    assert output.status(1) == 2 and output.status(0) == 0


def test_a_crash_keeps_the_ranks_lines_and_drops_the_launcher_s_traceback():
    crash = FAILED_JOB.replace("error: no --task_name", "[knowledge_distill_util] rank 0 failed: no --task_name")
    shown, output = _shown(crash)
    text = "".join(shown)
    assert "rank 0 failed: no --task_name" in text and "rank 1 is gone" in text and "io_event_poller" in text
    assert "Killing subprocess" not in text and "Traceback" not in text and "CalledProcessError" not in text
    assert "OMP_NUM_THREADS" not in text and "*****" not in text
    assert output.status(1) == 1
    shown, output = _shown("step 1\nTraceback (most recent call last):\n  File x\nValueError: y\n")  # a rank's own
    assert "".join(shown) == "step 1\nTraceback (most recent call last):\n  File x\nValueError: y\n"
