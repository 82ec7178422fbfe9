"""``kdu-train``'s entry point (knowledge_distill_util/cli/train.py): the log level's one rule, and the original
``--gpu_num_per_node`` relaunch showing the launcher's output through the filter ``--nproc`` uses (nothing is
launched here: the launcher is replaced by a function that prints what a failed two-rank job prints)."""
import logging
import sys

import pytest

from knowledge_distill_util._errors import ConfigError
from knowledge_distill_util.cli import train
from knowledge_distill_util.training import interrupt

#: A two-rank job whose rank 0 refused its configuration: the launcher's banner, the sentence (from both ranks),
#: the other rank stopping, and the launcher's own report and traceback.
LAUNCHER_LINES = [
    "*****************************************\n",
    "Setting OMP_NUM_THREADS environment variable for each process to be 1 in default\n",
    "error: no --task_name given; name a GLUE task\n",
    "error: no --task_name given; name a GLUE task\n",
    "[knowledge_distill_util.distributed] rank 1: rank 0 failed: no --task_name given; stopping this rank too\n",
    "Killing subprocess 4242\n",
    "Traceback (most recent call last):\n",
    '  File "launch.py", line 1, in <module>\n',
    "subprocess.CalledProcessError: Command '[...]' returned non-zero exit status 2.\n",
]


def test_setup_logging_takes_the_log_level_rule_of_the_flag():
    with pytest.raises(ConfigError) as caught:
        train.setup_logging("LOUD")
    assert str(caught.value) == "--log_level must be one of DEBUG, INFO, WARNING, ERROR, got 'LOUD'"
    with pytest.raises(ConfigError, match="^--log_level must be one of DEBUG, INFO, WARNING, ERROR, got 'debug'$"):
        train.setup_logging("debug")  # as kdu-train's --log_level and kdu-compress's
    try:
        train.setup_logging("DEBUG")
        assert logging.getLogger("knowledge_distill_util").level == logging.DEBUG
    finally:
        train.setup_logging("INFO")


def test_the_original_relaunch_filters_the_launcher_output_as_nproc_does(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "-1")  # outside the launcher (what ``import oneflow`` sets)
    monkeypatch.setenv("KDU_MASTER_PORT", "31000")
    seen = {}

    def launcher(command, prog, output_line=None):
        seen.update(command=command, prog=prog)
        for line in LAUNCHER_LINES:
            output_line(line)
        return 1  # the launcher's status after a rank failed

    monkeypatch.setattr(interrupt, "run_forwarding", launcher)
    argv, status = train.relaunch(["--recipe", "kd", "--gpu_num_per_node", "2"], ["task_student_kd.py"])
    assert (argv, status) == (["--recipe", "kd"], 2)  # a rank's user error: the job's status is 2, as in one process
    assert seen["command"][1:4] == ["-m", "oneflow.distributed.launch", "--nproc_per_node"]
    assert seen["command"][-3:] == ["task_student_kd.py", "--recipe", "kd"]
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"starting: {sys.executable} -m oneflow.distributed.launch --nproc_per_node 2 ")
    assert err[1:] == ["error: no --task_name given; name a GLUE task"]  # no banner, no second copy, no traceback


def test_the_relaunch_keeps_one_process_and_refuses_a_bad_flag_in_one_sentence(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "-1")
    assert train.relaunch(["--recipe", "kd", "--gpu_num_per_node", "1"], ["x.py"]) == (["--recipe", "kd"], None)
    assert train.relaunch(["--gpu_num_per_node", "0"], ["x.py"]) == ([], 2)
    assert capsys.readouterr().err == "error: --gpu_num_per_node must be a positive integer, got '0'\n"
