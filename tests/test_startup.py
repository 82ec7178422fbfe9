"""A multi-process job whose master cannot be reached ends with one sentence instead of waiting forever."""
import os
import socket
import subprocess
import sys
import time

from knowledge_distill_util._startup import bound_oneflow_start


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank(rank: int, **env):
    """A rank of a 2-process job started without its peer (nothing listens on the master port)."""
    env = dict(os.environ, WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(_free_port()), GLOG_minloglevel="3", **env)
    began = time.time()
    done = subprocess.run([sys.executable, "-m", "knowledge_distill_util", "train", "--recipe", "kd", "--quick"],
                          capture_output=True, text=True, env=env, timeout=240)
    return done, time.time() - began


def test_one_process_needs_no_watcher(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert bound_oneflow_start() is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert bound_oneflow_start() is None  # OneFlow is already imported in this process: too late to watch


def test_an_unreachable_master_ends_the_rank_with_one_sentence():
    done, seconds = _rank(1, KDU_START_TIMEOUT="4")
    assert done.returncode != 0 and seconds < 120  # OneFlow alone retries every 10 s without end
    assert "error: rank 1: the 2-process OneFlow job did not start within 4 s: the master 127.0.0.1:" in done.stderr
    assert "is unreachable from this machine" in done.stderr


def test_a_master_whose_peers_never_come_ends_with_one_sentence():
    done, _ = _rank(0, KDU_START_TIMEOUT="4")
    assert done.returncode != 0
    assert "error: rank 0: the 2-process OneFlow job did not start within 4 s: the other processes did not " \
           "register with this master 127.0.0.1:" in done.stderr


def test_a_bad_start_timeout_is_refused():
    done, _ = _rank(1, KDU_START_TIMEOUT="soon")
    assert done.returncode == 2
    assert "error: environment variable KDU_START_TIMEOUT='soon' must be a finite number of seconds in (0, 86400]" \
        in done.stderr


_FILTER_SCRIPT = r"""
import importlib.util, os, subprocess, sys, types
package = types.ModuleType("knowledge_distill_util")   # the package's folder without running its __init__
package.__path__ = [os.path.dirname(sys.argv[1])]
sys.modules["knowledge_distill_util"] = package
spec = importlib.util.spec_from_file_location("knowledge_distill_util._startup", sys.argv[1])
startup = importlib.util.module_from_spec(spec)
spec.loader.exec_module(startup)                       # without importing the package (and OneFlow)
assert "oneflow" not in sys.modules
os.write(2, b"before\n")
with startup.quiet_ibverbs_notice():
    os.write(2, startup.IBVERBS_NOTICE + b"real error\n")
    os.write(2, b"libibverbs not available, ibv_fork_init skipped and more\n")
    subprocess.run(["sh", "-c", "echo from a child >&2"])
    print("from python", file=sys.stderr)
    os.write(2, b"no newline")
os.write(2, b"\nafter\n")
"""


def test_only_the_exact_ibverbs_line_is_dropped(tmp_path):
    """The notice alone goes; every other line (a similar one, a child's, Python's, an unfinished one) is
    forwarded in order, and stderr is the real one again after the block."""
    path = os.path.join(os.path.dirname(__file__), "..", "knowledge_distill_util", "_startup.py")
    done = subprocess.run([sys.executable, "-c", _FILTER_SCRIPT, path], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode() == ("before\nreal error\nlibibverbs not available, ibv_fork_init skipped and more\n"
                                    "from a child\nfrom python\nno newline\nafter\n")


def test_importing_the_package_prints_no_ibverbs_notice():
    env = dict(os.environ, GLOG_minloglevel="3")
    env.pop("KDU_IBVERBS_NOTICE", None)
    done = subprocess.run([sys.executable, "-c", "import knowledge_distill_util"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0 and "ibv_fork_init" not in done.stderr, done.stderr
