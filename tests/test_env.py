"""The KDU_* environment variables: one sentence naming the variable for every bad value (issue 16)."""
import os
import subprocess
import sys

import pytest

from knowledge_distill_util import _startup
from knowledge_distill_util._env import env_flag, env_float, env_int, env_port
from knowledge_distill_util.engine import distributed


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "abc", "0", "-5", "1e300"])
def test_a_timeout_must_be_finite_positive_and_at_most_a_day(raw, monkeypatch):
    monkeypatch.setenv("KDU_DIST_TIMEOUT", raw)
    with pytest.raises(ValueError, match=rf"^environment variable KDU_DIST_TIMEOUT='{raw}' must be a finite number of "
                                         r"seconds in \(0, 86400\]; set it to such a number or unset it for the default 60$"):
        distributed._timeout()


def test_a_timeout_unset_or_valid_is_read(monkeypatch):
    monkeypatch.delenv("KDU_DIST_TIMEOUT", raising=False)
    assert distributed._timeout() == distributed.DEFAULT_TIMEOUT_S
    monkeypatch.setenv("KDU_DIST_TIMEOUT", " 2.5 ")
    assert distributed._timeout() == 2.5


@pytest.mark.parametrize("raw", ["abc", "99999", "0", "-1", "80.5"])
def test_the_watchdog_port_must_be_a_port(raw, monkeypatch):
    monkeypatch.setenv("KDU_WATCHDOG_PORT", raw)
    with pytest.raises(ValueError, match=rf"^environment variable KDU_WATCHDOG_PORT='{raw}' must be a TCP port number "
                                         r"in \[1, 65535\]"):
        distributed.check_environment()


def test_the_watchdog_port_defaults_to_the_master_port_plus_one(monkeypatch):
    monkeypatch.delenv("KDU_WATCHDOG_PORT", raising=False)
    monkeypatch.setenv("MASTER_PORT", "31000")
    assert distributed._watchdog_port() == 31001
    monkeypatch.setenv("KDU_WATCHDOG_PORT", "4242")
    assert distributed._watchdog_port() == 4242


@pytest.mark.parametrize("raw", ["xyz", "-1", "2", "1.0"])
def test_the_node_rank_must_name_a_node(raw, monkeypatch):
    monkeypatch.setenv("RANK", "-1")  # outside the launcher
    monkeypatch.setenv("KDU_NODE_RANK", raw)
    with pytest.raises(ValueError, match=rf"^environment variable KDU_NODE_RANK='{raw}' must be this node's position in "
                                         r"--node_ips \(--num_nodes 2\) in \[0, 1\]"):
        distributed.launch_command({"num_nodes": "2", "node_ips": "10.0.0.1,10.0.0.2"}, [], ["x.py"])


@pytest.mark.parametrize("raw", ["abc", "70000"])
def test_the_master_port_must_be_a_port(raw, monkeypatch):
    monkeypatch.setenv("RANK", "-1")
    monkeypatch.setenv("KDU_MASTER_PORT", raw)
    with pytest.raises(ValueError, match=rf"^environment variable KDU_MASTER_PORT='{raw}' must be a TCP port number"):
        distributed.launch_command({"gpu_num_per_node": "2"}, [], ["x.py"])


@pytest.mark.parametrize("raw", ["nan", "-3", "later"])
def test_the_start_timeout_exits_2_with_one_sentence(raw, monkeypatch, capsys):
    monkeypatch.setenv("KDU_START_TIMEOUT", raw)
    with pytest.raises(SystemExit) as done:
        _startup._start_timeout()
    assert done.value.code == 2
    assert capsys.readouterr().err == (f"error: environment variable KDU_START_TIMEOUT='{raw}' must be a finite number "
                                       f"of seconds in (0, 86400]; set it to such a number or unset it for the "
                                       f"default 300\n")


def test_the_readers():
    assert env_float("X", 1.0, 0.0, 10.0, environ={}) == 1.0
    assert env_int("X", 3, 0, 5, environ={"X": "4"}) == 4
    assert env_port("X", None, environ={"X": ""}) is None
    assert env_flag("X", environ={"X": "1"}) and not env_flag("X", environ={})
    with pytest.raises(ValueError, match="environment variable X='2' must be 1 or 0"):
        env_flag("X", environ={"X": "2"})


def test_a_bad_node_rank_on_the_command_line_is_one_sentence(tmp_path):
    env = dict(os.environ, GLOG_minloglevel="3", KDU_NODE_RANK="xyz", RANK="-1")
    done = subprocess.run([sys.executable, "-m", "knowledge_distill_util", "train", "--num_nodes", "2",
                           "--node_ips", "10.0.0.1,10.0.0.2", "--recipe", "kd"], capture_output=True, text=True,
                          env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "error: environment variable KDU_NODE_RANK='xyz' must be this node's position in --node_ips " \
           "(--num_nodes 2) in [0, 1]" in done.stderr
