"""A bounded wait for OneFlow's start-up in a multi-process job.

Under OneFlow's launcher (``WORLD_SIZE`` above 1), ``import oneflow`` connects every process to the
master (``MASTER_ADDR:MASTER_PORT``) and waits until all ranks have registered. OneFlow 0.9 waits
without end when the master address is unreachable or a node's processes were never started (it logs
``LoadServer ... Failed`` every 10 s), inside C++ code that holds Python's interpreter lock, so no
Python thread or signal handler can run meanwhile. :func:`bound_oneflow_start` therefore forks a small
watcher process before that import: if the import has not finished after ``KDU_START_TIMEOUT`` seconds
(default 300, long enough to start the nodes of a multi-node job by hand), the watcher prints one
sentence naming the master address and the likely causes and ends the process (SIGTERM, then SIGKILL).
In one process, or when OneFlow is already imported, it does nothing.

:func:`quiet_ibverbs_notice` wraps the same import: OneFlow's library prints ``libibverbs not available,
ibv_fork_init skipped`` to file descriptor 2 from a C++ static initializer when it is loaded (no
environment variable turns it off: ``ONEFLOW_LIBIBVERBS_PATH`` only says where to look for the library).
During the import, descriptor 2 is a pipe read by a forked forwarder process that copies every line to the
real stderr at once, except that exact line; so nothing else is hidden or delayed, even while the import
waits for a multi-process job's master. ``KDU_IBVERBS_NOTICE=1`` keeps the line.
"""
import contextlib
import os
import select
import signal
import sys
import time
from typing import Optional

from ._env import MAX_TIMEOUT_S, env_float

__all__ = ["bound_oneflow_start", "StartWatcher", "DEFAULT_START_TIMEOUT_S", "quiet_ibverbs_notice",
           "IBVERBS_NOTICE"]

DEFAULT_START_TIMEOUT_S = 300.0
#: The line OneFlow 0.9's library prints when loaded on a machine without InfiniBand.
IBVERBS_NOTICE = b"libibverbs not available, ibv_fork_init skipped\n"


class StartWatcher:
    """The watcher of one start-up; :meth:`started` tells it the import finished."""

    def __init__(self, pid: int, write_end: int):
        self.pid, self._write_end = pid, write_end

    def started(self) -> None:
        os.write(self._write_end, b"1")
        os.close(self._write_end)
        os.waitpid(self.pid, 0)


def _start_timeout() -> float:
    try:
        return env_float("KDU_START_TIMEOUT", DEFAULT_START_TIMEOUT_S, 0.0, MAX_TIMEOUT_S)
    except ValueError as error:
        sys.stderr.write(f"error: {error}\n")
        sys.exit(2)


def _watch(parent: int, read_end: int, timeout: float, message: str) -> None:
    """The watcher process: end ``parent`` unless it reports (or dies) within ``timeout`` seconds."""
    ready, _, _ = select.select([read_end], [], [], timeout)
    if not ready:
        os.write(2, message.encode())
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
            try:
                os.kill(parent, sig)
            except ProcessLookupError:
                break
            ready, _, _ = select.select([read_end], [], [], grace)  # EOF once the parent is gone
            if ready:
                break
    os._exit(0)


def bound_oneflow_start() -> Optional[StartWatcher]:
    """Call right before the first ``import oneflow``, and ``.started()`` on the result right after it
    (None in one process or when OneFlow is already imported)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        return None
    if world <= 1 or "oneflow" in sys.modules:
        return None
    timeout = _start_timeout()
    master = f"{os.environ.get('MASTER_ADDR', '127.0.0.1')}:{os.environ.get('MASTER_PORT', '?')}"
    rank = os.environ.get("RANK", "?")
    cause = (f"the other processes did not register with this master {master} (a node not started, or its "
             f"--master_addr/--master_port differ or cannot reach this machine)" if rank == "0" else
             f"the master {master} is unreachable from this machine, or the processes of another node were not "
             f"started")
    message = (f"error: rank {rank}: the {world}-process OneFlow job did not start within {timeout:.0f} s: {cause}; "
               f"check --master_addr/--master_port and start every node (KDU_START_TIMEOUT sets this wait)\n")
    read_end, write_end = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(write_end)
        try:
            _watch(parent, read_end, timeout, message)
        finally:
            os._exit(0)
    os.close(read_end)
    return StartWatcher(pid, write_end)


def _forward(read_end: int, out: int, drop: bytes) -> None:
    """The forwarder process: copy ``read_end`` to ``out`` line by line, except lines equal to ``drop``."""
    pending = b""
    while True:
        try:
            chunk = os.read(read_end, 65536)
        except InterruptedError:
            continue
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = b"".join(line + b"\n" for line in lines if line + b"\n" != drop)
        if kept:
            os.write(out, kept)
    if pending:
        os.write(out, pending)


@contextlib.contextmanager
def quiet_ibverbs_notice():
    """Within the block, drop :data:`IBVERBS_NOTICE` lines written to file descriptor 2 and forward every
    other line at once (see the module doc). Does nothing when OneFlow is already imported, with
    ``KDU_IBVERBS_NOTICE=1``, or when the pipe or the forwarder process cannot be made."""
    if "oneflow" in sys.modules or os.environ.get("KDU_IBVERBS_NOTICE") == "1" or not hasattr(os, "fork"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_end, write_end = os.pipe()
        pid = os.fork()
    except OSError:
        yield
        return
    if pid == 0:  # the forwarder
        try:
            os.close(write_end)
            _forward(read_end, saved, IBVERBS_NOTICE)
        finally:
            os._exit(0)
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        finally:
            os.dup2(saved, 2)  # the forwarder sees the end of the pipe, copies the rest and exits
            os.close(saved)
            _reap(pid)


def _reap(pid: int, wait: float = 2.0) -> None:
    """Wait up to ``wait`` seconds for the forwarder (so its last lines come before later output); a
    forwarder still held open by a process the import started is left to finish on its own."""
    deadline = time.monotonic() + wait
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done or time.monotonic() > deadline:
            return
        time.sleep(0.002)
