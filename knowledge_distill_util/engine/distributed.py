"""Data-parallel training on the processes started by OneFlow's launcher.

``python -m oneflow.distributed.launch --nproc_per_node N [--nnodes M --node_rank R --master_addr A
--master_port P] <entry point> ...`` starts ``N * M`` processes; the launcher gives each its ``RANK`` and
``WORLD_SIZE``. Without the launcher (``WORLD_SIZE`` unset or 1) every function here is a no-op and a run
is exactly the one-process run: no collective, no extra random draw, the same data order.

With ``W`` processes and ``--batch_size_per_device b``:

- **Data**: the global batch of ``W * b`` rows is the one-process batch of that size (same seed, same
  order, see :func:`~knowledge_distill_util.training.trainer.batch_indices`); rank ``r`` trains on its
  ``r``-th contiguous shard (:func:`shard`). With dropout off, ``W`` processes give the weights one process gets with batch ``W * b``.
- **Eager**: after ``backward`` the gradients are averaged over the ranks with one all-reduce
  (:func:`all_reduce_gradients`), as ``flow.nn.parallel.DistributedDataParallel`` does, whose hooks are
  not used for two reasons found in its source (OneFlow 0.9, ``oneflow/nn/parallel/distributed.py``):
  (1) it all-reduces a bucket only when every parameter in it got a gradient, and stops at the first bucket
  that did not: a trained parameter without a gradient in a step (the classifier in TinyBERT's intermediate
  stage, the successor blocks BERT-of-Theseus did not pick) then silently leaves every gradient un-reduced
  and the ranks drift apart; (2) its gradient hooks cannot be removed, so the second stage of a two-stage
  recipe (the same parameters wrapped again) scales and reduces them twice. **Graph** (``--use_graph``):
  the loss step becomes global (parameters ``broadcast``, the batch ``split(0)``) and OneFlow inserts the
  collectives. The training loop's side of both is :class:`~.parallel.Ranks`.
- **One writer**: only rank 0 (:func:`is_writer`) writes checkpoints, results, logs, the loss CSV and
  plot, ``progress.json``, the progress bar and the directory locks.
- **Evaluation** (and the teacher's cached logits) is sharded by rows and gathered (:func:`gather_rows`):
  the logits, hence the metrics, equal the one-process ones.
- **A dead rank**: OneFlow 0.9 waits forever in a collective when a peer is gone, and a process that
  raised waits forever at exit. :class:`Watchdog` keeps a TCP connection from every rank to rank 0
  (port ``KDU_WATCHDOG_PORT``, default ``MASTER_PORT + 1``); a rank that fails reports its cause, a rank
  that vanishes closes its connection, a rank silent for ``KDU_DIST_TIMEOUT`` seconds (default 60) is
  declared hung; every other rank then logs one line naming the rank and the cause and exits (status 1).
  SIGTERM (which the launcher sends every rank once one exits) ends a rank after ``SIGTERM_GRACE_S`` seconds,
  so that its line naming the failed rank is written first.
- **Nodes**: OneFlow 0.9 does not take the node layout from the launcher's ``--nnodes``/``--node_rank``: the
  master's bootstrap server counts one node per distinct IP address the ranks connect to it *from*
  (``RankInfoBootstrapServer::OnLoadServer`` records the peer address; ``RankInfoCtrlBootstrap::SetNodeSize``
  counts them) and expects rank ``r`` to use device ``r % (W / nodes)``, while the launcher sets
  ``LOCAL_RANK`` per node. Two launchers on one machine that reach the master at the same address (127.0.0.1
  twice; 127.0.0.2 too, whose connections leave from 127.0.0.1) form one node, rank 1 keeps ``LOCAL_RANK=0``,
  and the first collective aborts in C++. :func:`check_local_rank` refuses that layout with one sentence first;
  on one machine give the second node the machine's own address as ``--master_addr`` (docs: data-parallel).
"""
import hashlib
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import oneflow as flow
import oneflow.nn as nn

from .._env import MAX_TIMEOUT_S, env_float, env_int, env_port

__all__ = ["world_size", "rank", "is_distributed", "is_writer", "shard", "row_block", "all_reduce_gradients",
           "mean_across_ranks", "gather_rows", "agree", "check_same", "global_batch", "Watchdog",
           "start_watchdog", "stop_watchdog", "watchdog_running",
           "check_environment", "fail", "at_abort", "split_launch_flags", "launch_command", "to_local_state",
           "local_rank", "check_local_rank", "interface_addresses", "DEFAULT_TIMEOUT_S", "SIGTERM_GRACE_S"]

logger = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 60.0
#: Seconds a rank given SIGTERM waits for its watchdog to name a failed rank before it exits (module doc).
SIGTERM_GRACE_S = 3.0


def world_size() -> int:
    """Number of processes of the job (``WORLD_SIZE`` set by the launcher; 1 without it)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def rank() -> int:
    """This process's rank (``RANK`` set by the launcher; 0 without it)."""
    return int(os.environ.get("RANK", "0") or 0) if world_size() > 1 else 0


def local_rank() -> int:
    """This process's index on its node (the launcher's ``LOCAL_RANK`` as OneFlow reads it; 0 without it):
    the CUDA device ``--device cuda`` takes."""
    return int(flow.env.get_local_rank()) if world_size() > 1 else 0


def check_local_rank() -> None:
    """Raise ``ValueError`` when this rank's ``LOCAL_RANK`` contradicts the node layout OneFlow derived (see
    the module doc, **Nodes**): the first collective would abort the process in C++. Call it before any
    collective. No-op in one process.
    """
    world = world_size()
    if world == 1:
        return
    nodes = max(1, int(flow.env.get_node_size()))
    per_node = world // nodes
    expected, local = rank() % per_node, local_rank()
    if local != expected:
        raise ValueError(
            f"rank {rank()} has LOCAL_RANK {local} but OneFlow sees {nodes} node(s) for {world} processes (one "
            f"node per address the ranks reach the master from) and expects LOCAL_RANK {expected}: several "
            f"--node_rank launchers on one machine reached the master at the same address; on one machine use "
            f"--nnodes 1 --nproc_per_node {world}, or give each node's launcher a different address of the master "
            f"machine as --master_addr (127.0.0.1 for node 0, the machine's own IP for node 1)")


def is_distributed() -> bool:
    """More than one process."""
    return world_size() > 1


def is_writer() -> bool:
    """This process writes files (rank 0)."""
    return rank() == 0


def shard(index: np.ndarray, rank_: Optional[int] = None, world: Optional[int] = None) -> np.ndarray:
    """Rank ``rank_``'s contiguous part of the global batch ``index`` (``len(index)`` divisible by ``world``).

    >>> shard(np.array([5, 1, 4, 0]), rank_=1, world=2).tolist()
    [4, 0]
    """
    world = world_size() if world is None else world
    rank_ = rank() if rank_ is None else rank_
    if len(index) % world:
        raise ValueError(f"a global batch of {len(index)} rows cannot be cut into {world} equal shards; "
                         f"use a batch size divisible by the number of processes")
    size = len(index) // world
    return index[rank_ * size:(rank_ + 1) * size]


def row_block(count: int, rank_: Optional[int] = None, world: Optional[int] = None) -> slice:
    """Rank ``rank_``'s contiguous block of ``count`` evaluation rows (``ceil(count / world)`` rows each,
    the last ranks fewer or none).

    >>> row_block(5, rank_=1, world=2), row_block(5, rank_=0, world=2)
    (slice(3, 5, None), slice(0, 3, None))
    """
    world = world_size() if world is None else world
    rank_ = rank() if rank_ is None else rank_
    per = math.ceil(count / world)
    return slice(min(count, rank_ * per), min(count, (rank_ + 1) * per))


def all_reduce_gradients(parameters: Sequence[nn.Parameter]) -> None:
    """Replace every existing ``.grad`` by its mean over the ranks (one all-reduce of a flat buffer).

    Parameters without a gradient keep none (every rank runs the same graph, so the set is the same).
    """
    world = world_size()
    params = [p for p in parameters if p.grad is not None]
    if world == 1 or not params:
        return
    flat = flow.cat([p.grad.reshape(-1) for p in params])
    flow.comm.all_reduce(flat)
    flat = flat * (1.0 / world)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].reshape(p.shape)
        offset += n


def mean_across_ranks(values: Sequence[float]) -> List[float]:
    """The mean over the ranks of each of ``values`` (the same list on every rank)."""
    if world_size() == 1:
        return list(values)
    tensor = flow.tensor(np.asarray(values, dtype=np.float64))
    flow.comm.all_reduce(tensor)
    return (tensor.numpy() / world_size()).tolist()


def gather_rows(local: np.ndarray, count: int) -> np.ndarray:
    """Concatenate every rank's :func:`row_block` rows ``local [rows, ...]`` into ``[count, ...]``
    (on every rank). A rank with no rows passes any ``[k, ...]`` array of the right trailing shape."""
    world = world_size()
    if world == 1:
        return local
    per = math.ceil(count / world)
    padded = np.zeros((per,) + local.shape[1:], dtype=local.dtype)
    mine = row_block(count)
    rows = mine.stop - mine.start
    padded[:rows] = local[:rows]
    tensor = flow.tensor(padded)
    parts = [flow.zeros_like(tensor) for _ in range(world)]
    flow.comm.all_gather(parts, tensor)
    return np.concatenate([p.numpy() for p in parts])[:count]


def agree(ok: bool) -> bool:
    """True when every rank passes ``ok=True`` (a collective: every rank must call it)."""
    if world_size() == 1:
        return ok
    failures = mean_across_ranks([0.0 if ok else 1.0])[0]
    return failures == 0.0


def check_same(text: str, what: str, fix: str = "start every rank with the same command line and files"
               ) -> Optional[str]:
    """None when every rank passed the same ``text``; else one sentence naming the ranks that differ from
    rank 0, ending with ``fix`` (a collective)."""
    if world_size() == 1:
        return None
    digest = np.frombuffer(hashlib.sha256(text.encode()).digest()[:8], dtype=np.int32).astype(np.int64)
    tensor = flow.tensor(digest)
    parts = [flow.zeros_like(tensor) for _ in range(world_size())]
    flow.comm.all_gather(parts, tensor)
    values = [p.numpy().tolist() for p in parts]
    differ = [r for r, v in enumerate(values) if v != values[0]]
    if differ:
        return f"the {what} of rank(s) {differ} differs from rank 0's; {fix}"
    return None


def _map_tensors(obj, fn):
    if isinstance(obj, flow.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return type(obj)((k, _map_tensors(v, fn)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return obj


def to_local_state(state):
    """``state`` (a nested dict/list of tensors) with every global (broadcast) tensor made local."""
    return _map_tensors(state, lambda t: t.to_local() if t.is_global else t)


def global_batch(batch_size: int, num_rows: int, world: Optional[int] = None) -> int:
    """The global batch of ``world`` processes with ``batch_size`` rows each (``batch_size`` in one process,
    where a batch larger than the data is cut to it); raises ``ValueError`` when it exceeds the data.

    >>> global_batch(8, 20, world=2)
    16
    """
    world = world_size() if world is None else world
    if world == 1:
        return batch_size
    total = batch_size * world
    if total > num_rows:
        raise ValueError(f"{world} processes x batch_size_per_device {batch_size} = {total} rows per step exceeds "
                         f"the {num_rows} training rows; lower --batch_size_per_device or --nproc_per_node")
    return total


# ------------------------------------------------------------------------------------------ watchdog
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


# ------------------------------------------------------------------------------- the original's flags
#: The original scripts' multi-device flags; ``kdu-train`` starts OneFlow's launcher with them.
ORIGINAL_FLAGS = ("--gpu_num_per_node", "--num_nodes", "--node_ips")


def split_launch_flags(argv: Sequence[str]) -> Tuple[List[str], Dict[str, str]]:
    """``argv`` without the :data:`ORIGINAL_FLAGS` (``--flag value`` or ``--flag=value``), and their values.

    >>> split_launch_flags(["--recipe", "kd", "--gpu_num_per_node", "2", "--num_nodes=1"])
    (['--recipe', 'kd'], {'gpu_num_per_node': '2', 'num_nodes': '1'})
    """
    rest, found, items = [], {}, list(argv)
    i = 0
    while i < len(items):
        item = items[i]
        name, _, value = item.partition("=")
        if name in ORIGINAL_FLAGS:
            if not value:
                if i + 1 >= len(items):
                    raise ValueError(f"{name} needs a value")
                value, i = items[i + 1], i + 1
            found[name[2:]] = value
        else:
            rest.append(item)
        i += 1
    return rest, found


def _positive(flags: Dict[str, str], name: str) -> int:
    raw = flags.get(name, "1")
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"--{name} must be a positive integer, got {raw!r}")
    return value


def interface_addresses() -> List[str]:
    """The IPv4 addresses of this machine's network interfaces (Linux; empty where it cannot ask)."""
    try:
        import fcntl
        import struct

        names = socket.if_nameindex()
    except (ImportError, OSError, AttributeError):
        return []
    found = []
    for _, name in names:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:  # SIOCGIFADDR
                packed = fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))
            except OSError:
                continue
        found.append(socket.inet_ntoa(packed[20:24]))
    return found


def _local_addresses() -> List[str]:
    names = {"127.0.0.1", "localhost", socket.gethostname()}
    try:
        names.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    names.update(interface_addresses())
    return sorted(names)


def launch_command(flags: Dict[str, str], argv: Sequence[str], entry: Sequence[str],
                   port: Optional[int] = None) -> Optional[List[str]]:
    """The OneFlow launcher command that runs ``entry + argv`` on ``--gpu_num_per_node`` processes per node
    and ``--num_nodes`` nodes (``--node_ips``: the nodes' addresses, the first is the master), or None when
    one process suffices or this process was already started by the launcher.

    This node's rank is ``KDU_NODE_RANK`` if set, else the position of one of its addresses in
    ``--node_ips``. When the master's address and this node's are both this machine's (several nodes simulated
    on one host), this node reaches the master at its own address, so that OneFlow counts it as a node of its
    own (module doc, **Nodes**). The master port is ``port``, else ``KDU_MASTER_PORT`` (default 29500). Raises ``ValueError`` with
    one sentence on inconsistent flags.

    >>> launch_command({"gpu_num_per_node": "2"}, ["--recipe", "kd"], ["-m", "x"])[3:6]
    ['--nproc_per_node', '2', '--nnodes']
    """
    if not flags or os.environ.get("RANK", "-1") != "-1":  # (``import oneflow`` sets RANK=-1 outside the launcher)
        return None
    per_node, nodes = _positive(flags, "gpu_num_per_node"), _positive(flags, "num_nodes")
    ips = [ip.strip() for ip in flags.get("node_ips", "").split(",") if ip.strip()]
    if nodes > 1 and len(ips) != nodes:
        raise ValueError(f"--num_nodes {nodes} needs {nodes} addresses in --node_ips, got {ips or 'none'}; "
                         f"pass --node_ips a,b,... with the master node first")
    if per_node * nodes == 1:
        return None
    port = str(port or env_port("KDU_MASTER_PORT", 29500))
    given_rank = env_int("KDU_NODE_RANK", None, 0, nodes - 1, f"this node's position in --node_ips (--num_nodes {nodes})")
    if nodes == 1:
        node_rank, master = 0, ips[0] if ips else "127.0.0.1"
    elif given_rank is not None:
        node_rank, master = given_rank, ips[0]
    else:
        mine = [i for i, ip in enumerate(ips) if ip in _local_addresses()]
        if len(mine) != 1:
            raise ValueError(f"cannot tell which of --node_ips {ips} is this machine (its addresses: "
                             f"{_local_addresses()}); set KDU_NODE_RANK to its position in --node_ips")
        node_rank, master = mine[0], ips[0]
    if node_rank and ips[0] in _local_addresses() and ips[node_rank] in _local_addresses():
        master = ips[node_rank]  # the master runs here too: reach it at this node's address (module doc, Nodes)
    return [sys.executable, "-m", "oneflow.distributed.launch", "--nproc_per_node", str(per_node), "--nnodes",
            str(nodes), "--node_rank", str(node_rank), "--master_addr", master, "--master_port", port,
            *entry, *argv]
