"""The dead-rank watchdog of a data-parallel job (:mod:`.distributed`'s module doc, **A dead rank**): a TCP
connection from every rank to rank 0 (port ``KDU_WATCHDOG_PORT``, default ``MASTER_PORT + 1``); a rank that
fails, vanishes or stays silent for ``KDU_DIST_TIMEOUT`` seconds ends every other rank with one line naming it.
:func:`fail` reports this rank's failure; :func:`at_abort` registers what to release before the end.

Part of :mod:`.distributed` (which re-exports every public name here). The :class:`Watchdog` class is one
protocol (both ends, beats, SIGTERM grace), so it is kept whole.
"""
import os
import signal
import socket
import sys
import threading
import time
from typing import Callable, List, Optional

from .._env import MAX_TIMEOUT_S, env_float, env_int, env_port
from .world import is_distributed, rank, world_size

__all__ = ["Watchdog", "start_watchdog", "stop_watchdog", "watchdog_running", "check_environment", "fail",
           "at_abort", "DEFAULT_TIMEOUT_S", "SIGTERM_GRACE_S"]

DEFAULT_TIMEOUT_S = 60.0
#: Seconds a rank given SIGTERM waits for its watchdog to name a failed rank before it exits (module doc).
SIGTERM_GRACE_S = 3.0


def _timeout() -> float:
    """``KDU_DIST_TIMEOUT`` in seconds (default :data:`DEFAULT_TIMEOUT_S`, finite, in (0, one day])."""
    return env_float("KDU_DIST_TIMEOUT", DEFAULT_TIMEOUT_S, 0.0, MAX_TIMEOUT_S)


def _watchdog_port() -> int:
    """``KDU_WATCHDOG_PORT``, default ``MASTER_PORT + 1`` (``MASTER_PORT`` is the launcher's)."""
    master = env_int("MASTER_PORT", 29500, 1, 65534, "a TCP port number below 65535")
    return env_port("KDU_WATCHDOG_PORT", master + 1)


def check_environment() -> None:
    """Read every ``KDU_*`` variable this module uses (``ValueError``, one sentence, on a bad one)."""
    _timeout()
    _watchdog_port()


_AT_ABORT: List[Callable[[], None]] = []


def at_abort(callback: Callable[[], None]) -> None:
    """Call ``callback`` (release a lock, ...) before this process is ended by the watchdog or :func:`fail`."""
    _AT_ABORT.append(callback)


def _say(message: str) -> None:
    """Write this rank's one line to stderr at once."""
    sys.stderr.write(f"[knowledge_distill_util.distributed] rank {rank()}: {message}\n")
    sys.stderr.flush()
    sys.stdout.flush()


def _die(message: Optional[str], code: int = 1) -> None:
    """Log ``message`` (None: already said) and end this process at once (OneFlow's exit would wait for the
    lost rank)."""
    for callback in list(_AT_ABORT):
        try:
            callback()
        except Exception:  # noqa: BLE001 - ending anyway
            pass
    try:
        if message is not None:
            _say(message)
    finally:
        os._exit(code)


class Watchdog:
    """Ends this rank within a bounded time when another rank fails, vanishes or hangs (module doc).

    Protocol: newline-terminated ASCII lines over one TCP connection per rank to rank 0:
    ``hello R``, ``beat``, ``fail R CAUSE``, ``bye``; rank 0 forwards ``fail R CAUSE`` to every rank.
    """

    def __init__(self, timeout: Optional[float] = None, port: Optional[int] = None,
                 address: Optional[str] = None):
        self.timeout = _timeout() if timeout is None else float(timeout)
        self.rank, self.world = rank(), world_size()
        self.address = address or os.environ.get("MASTER_ADDR", "127.0.0.1")
        self.port = port or _watchdog_port()
        self.peers: Dict[int, socket.socket] = {}
        self.seen: Dict[int, float] = {}
        self.connected = threading.Event()  # rank > 0: its hello has been sent to rank 0
        self.finished: set = set()  # ranks that said bye (done normally)
        self.lock = threading.Lock()
        self.closing = False
        self.sock: Optional[socket.socket] = None

    # -- shared
    def _send(self, sock: socket.socket, line: str) -> None:
        try:
            with self.lock:
                sock.sendall((line + "\n").encode("utf-8", "replace"))
        except OSError:
            pass

    def _lines(self, sock: socket.socket):
        buffer = b""
        while True:
            try:
                chunk = sock.recv(4096)
            except OSError:
                chunk = b""
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                yield line.decode("utf-8", "replace")

    def start(self) -> "Watchdog":
        if self.rank == 0:
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                server.bind(("", self.port))
            except OSError as error:
                raise ValueError(f"the watchdog of rank 0 cannot listen on port {self.port} ({error}); set "
                                 f"KDU_WATCHDOG_PORT to a free port") from None
            server.listen(self.world)
            threading.Thread(target=self._serve, args=(server,), daemon=True, name="kdu-watchdog").start()
        else:
            threading.Thread(target=self._client, daemon=True, name="kdu-watchdog").start()
            # connected before the first collective: a rank stopped later is then "silent", not "never came"
            self.connected.wait(self.timeout + 5.0)
        threading.Thread(target=self._beat, daemon=True, name="kdu-watchdog-beat").start()
        self._watch_sigterm()
        return self

    def _watch_sigterm(self) -> None:
        """OneFlow's launcher sends SIGTERM to every rank as soon as one rank exits, within a second: on a
        loaded machine that can come before this rank's watchdog has read that a peer died, and the line naming
        the dead rank was lost. SIGTERM therefore ends this rank only after :data:`SIGTERM_GRACE_S` seconds
        (the watchdog ends it sooner, naming the cause, when a peer failed), telling the other ranks why.
        The signal is seen by a thread through ``signal.set_wakeup_fd`` (a Python handler alone would wait for
        the main thread, which may be blocked in a collective). Only from the main thread, and only when no
        other SIGTERM handler or wakeup fd is installed."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
            return
        read, write = os.pipe()
        os.set_blocking(write, False)
        try:
            previous = signal.set_wakeup_fd(write)
        except (ValueError, OSError):
            os.close(read)
            os.close(write)
            return
        if previous != -1:  # someone else's (an event loop): leave it alone
            signal.set_wakeup_fd(previous)
            os.close(read)
            os.close(write)
            return
        signal.signal(signal.SIGTERM, lambda signum, frame: None)  # the thread below ends the process
        threading.Thread(target=self._on_sigterm, args=(read,), daemon=True, name="kdu-watchdog-sigterm").start()

    def _on_sigterm(self, read: int) -> None:
        while True:
            received = os.read(read, 64)  # one byte per signal caught (SIGINT's too)
            if not received:
                return
            if int(signal.SIGTERM) in received:
                break
        time.sleep(SIGTERM_GRACE_S)  # the watchdog ends this process first when a peer failed
        self.closing = True  # from now on the peers' reactions to this rank's end are not news
        _say("stopped by SIGTERM")  # first: once the others stop, OneFlow may abort this process any moment
        self.report("stopped by SIGTERM")
        time.sleep(0.2)  # let the line leave
        _die(None, 128 + int(signal.SIGTERM))

    def _beat(self) -> None:
        began = time.time()
        while not self.closing:
            time.sleep(min(5.0, self.timeout / 6))
            now = time.time()
            if self.rank == 0:
                with self.lock:
                    peers = dict(self.peers)
                for peer in peers.values():
                    self._send(peer, "beat")
                missing = [r for r in range(1, self.world) if r not in self.seen and r not in self.finished]
                if missing and now - began > self.timeout and not self.closing:
                    _die(f"rank(s) {missing} did not reach the watchdog within {self.timeout:.0f} s "
                         f"(not started, or the master address {self.address} is unreachable); stopping")
                late = [r for r, t in list(self.seen.items()) if now - t > self.timeout]
                if late and not self.closing:
                    self._abort(late[0], f"silent for more than {self.timeout:.0f} s (hung)")
            elif self.sock is not None:
                self._send(self.sock, "beat")
                if now - self.seen.get(0, began) > self.timeout and not self.closing:
                    _die(f"rank 0 silent for more than {self.timeout:.0f} s (hung or unreachable); stopping")

    def _abort(self, dead: int, cause: str) -> None:
        with self.lock:
            peers = dict(self.peers)
        for r, peer in peers.items():
            if r != dead:
                self._send(peer, f"fail {dead} {cause}")
        _die(f"rank {dead} {cause}; stopping this rank too")

    def _serve(self, server: socket.socket) -> None:
        while len(self.peers) < self.world - 1:
            conn, _ = server.accept()
            threading.Thread(target=self._watch_peer, args=(conn,), daemon=True).start()

    def _watch_peer(self, conn: socket.socket) -> None:
        peer = None
        for line in self._lines(conn):
            if line.startswith("hello ") and peer is None:
                peer = int(line.split()[1])
                with self.lock:
                    self.peers[peer] = conn
            if peer is None:
                continue
            self.seen[peer] = time.time()
            if line == "bye":
                self.finished.add(peer)
                self.seen.pop(peer, None)
                return
            if line.startswith("fail "):
                _, who, cause = line.split(" ", 2)
                self._abort(int(who), cause)
        if peer is not None and not self.closing:
            self._abort(peer, "is gone (its process ended without a word: killed, out of memory, or crashed)")

    def _client(self) -> None:
        began = time.time()
        while True:
            try:
                sock = socket.create_connection((self.address, self.port), timeout=5)
                sock.settimeout(None)
                break
            except OSError:
                if time.time() - began > self.timeout:
                    _die(f"cannot reach rank 0's watchdog at {self.address}:{self.port} within "
                         f"{self.timeout:.0f} s; stopping")
                time.sleep(0.5)
        self.sock = sock
        self.seen[0] = time.time()
        self._send(sock, f"hello {self.rank}")
        self.connected.set()
        for line in self._lines(sock):
            self.seen[0] = time.time()
            if line.startswith("fail "):
                _, who, cause = line.split(" ", 2)
                _die(f"rank {who} {cause}; stopping this rank too")
            if line == "bye":
                return
        if not self.closing:
            _die("rank 0 is gone (its process ended without a word: killed, out of memory, or crashed); "
                 "stopping this rank too")

    # -- public
    def report(self, cause: str) -> None:
        """Tell the other ranks that this rank fails with ``cause`` (they stop)."""
        cause = " ".join(str(cause).split())[:500]
        if self.rank == 0:
            self._abort_quietly(cause)
            return
        deadline = time.time() + min(5.0, self.timeout)
        while self.sock is None and time.time() < deadline:  # a rank failing at start: let it connect first
            time.sleep(0.05)
        if self.sock is not None:
            self._send(self.sock, f"fail {self.rank} failed: {cause}")

    def _abort_quietly(self, cause: str) -> None:
        with self.lock:
            peers = dict(self.peers)
        for peer in peers.values():
            self._send(peer, f"fail 0 failed: {cause}")

    def close(self) -> None:
        """This rank finished normally."""
        self.closing = True
        targets = list(self.peers.values()) if self.rank == 0 else ([self.sock] if self.sock else [])
        for sock in targets:
            self._send(sock, "bye")


_WATCHDOG: Optional[Watchdog] = None


def start_watchdog() -> Optional[Watchdog]:
    """Start this process's :class:`Watchdog` once (None in one process)."""
    global _WATCHDOG
    if _WATCHDOG is None and is_distributed():
        _WATCHDOG = Watchdog().start()
    return _WATCHDOG


def watchdog_running() -> bool:
    """True when this process's watchdog runs (started by :func:`start_watchdog`)."""
    return _WATCHDOG is not None


def stop_watchdog() -> None:
    """This rank finished normally: tell the watchdog (its peers will not treat the exit as a death)."""
    global _WATCHDOG
    if _WATCHDOG is not None:
        _WATCHDOG.close()
        _WATCHDOG = None


def fail(cause: str, code: int = 1) -> None:
    """In a multi-process job: report ``cause`` to the other ranks and end this process with ``code``
    at once (a normal exit would wait forever for the others in OneFlow's shutdown). In one process:
    nothing (the caller returns or raises as usual)."""
    if not is_distributed():
        return
    if _WATCHDOG is not None:
        _WATCHDOG.report(cause)
        time.sleep(0.5)  # let the line leave before the process ends
    _die(f"failed: {cause}", code)
