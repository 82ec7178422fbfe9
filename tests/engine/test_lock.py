"""One writer per output directory."""
import json
import os
import subprocess
import sys

import pytest

from knowledge_distill_util.config.schema import ConfigError
from knowledge_distill_util.engine.lock import LOCK_FILE, DirectoryLock, lock_directories


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    with DirectoryLock(str(tmp_path)):
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid()
        with pytest.raises(ConfigError, match=rf"another run \(pid {os.getpid()} on .*\) is writing to {tmp_path}"):
            DirectoryLock(str(tmp_path)).acquire()
    assert not (tmp_path / LOCK_FILE).exists()                       # released
    DirectoryLock(str(tmp_path)).acquire().release()


def test_a_stale_lock_is_taken_over(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    import socket

    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": int(dead), "host": socket.gethostname(), "started": "x"}))
    lock = DirectoryLock(str(tmp_path)).acquire()
    assert "stale lock" in caplog.text and json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def test_a_lock_of_another_host_is_never_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "x"}))
    with pytest.raises(ConfigError, match=r"pid 1 on elsewhere.*delete .*\.kdu\.lock"):
        DirectoryLock(str(tmp_path)).acquire()


def test_locking_several_directories_releases_all_on_failure(tmp_path):
    (tmp_path / "b").mkdir()
    held = DirectoryLock(str(tmp_path / "b")).acquire()
    with pytest.raises(ConfigError):
        lock_directories(str(tmp_path / "a"), str(tmp_path / "b"))
    assert not (tmp_path / "a" / LOCK_FILE).exists()
    held.release()


def test_a_lock_of_a_killed_but_unreaped_process_is_stale(tmp_path):
    """A zombie (killed, not yet reaped by its parent) answers ``kill(pid, 0)`` but holds nothing: a killed
    multi-process job's rank 0 is one until init reaps it, and the resumed run must not wait for that."""
    import socket
    import time

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 30
    while time.time() < deadline:  # exited, not reaped: a zombie
        with open(f"/proc/{child.pid}/stat", encoding="utf-8") as stream:
            if stream.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.05)
    else:
        pytest.fail("the child did not exit")
    os.kill(child.pid, 0)  # what the lock used to check: the zombie still "exists"
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": child.pid, "host": socket.gethostname(), "started": "x"}))
    try:
        lock = DirectoryLock(str(tmp_path)).acquire()
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
        lock.release()
    finally:
        child.wait()


def test_the_lock_is_created_complete_and_with_the_umask_permissions(tmp_path, monkeypatch):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / f"{LOCK_FILE}.{dead}-0123").write_text("{")  # a run killed while taking the lock
    links = []
    real_link = os.link

    def link(source, target):
        links.append(json.loads(open(source).read()))  # complete before it gets the lock's name
        return real_link(source, target)

    monkeypatch.setattr(os, "link", link)
    old = os.umask(0o022)
    try:
        lock = DirectoryLock(str(tmp_path)).acquire()
    finally:
        os.umask(old)
    assert links[0]["pid"] == os.getpid() and os.stat(tmp_path / LOCK_FILE).st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == [LOCK_FILE]  # the dead run's temporary file is gone
    lock.release()
    assert os.listdir(tmp_path) == []


def test_without_hard_links_the_lock_is_created_exclusively(tmp_path, monkeypatch):
    import errno

    def no_links(source, target):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    with DirectoryLock(str(tmp_path)):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
        with pytest.raises(ConfigError, match="another run"):
            DirectoryLock(str(tmp_path)).acquire()
    assert os.listdir(tmp_path) == []
