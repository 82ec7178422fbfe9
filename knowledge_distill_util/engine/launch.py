"""``kdu-train --nproc N|auto``: one training job spread over ``N`` processes of this machine.

OneFlow 0.9 runs a process's CPU kernels on one core (docs/performance.md, "CPU kernels and threads"), so a
job alone on a machine uses its other cores only as data-parallel processes. With ``--nproc N`` (``N`` > 1)
``kdu-train`` runs the same command again under OneFlow's launcher (:func:`launch_command` with ``batch``:
``python -m oneflow.distributed.launch --nproc_per_node N --master_port P ...``, ``P`` a free port of this machine or
``KDU_MASTER_PORT``), waits for it and exits with its status; :mod:`.distributed` does the rest (gradients
averaged, rank 0 the one writer, the watchdog for a dead rank).

**The batch.** ``--batch_size_per_device B`` stays the batch of the whole job, as in one process: each of the
``N`` processes trains on ``B / N`` rows of it (the ranks are started with ``--batch_size_per_device B/N``,
and :mod:`.distributed` cuts the global batch of ``N x B/N = B`` rows, taken in the one-process order, into
contiguous shards). So ``--nproc N`` trains with the one-process batch, data order, steps and schedule; only
the dropout masks differ (each rank draws its own). ``B`` must divide by ``N``. (Under the launcher started
by hand, or with the original ``--gpu_num_per_node``, ``--batch_size_per_device`` stays per process.)

**How many** (:func:`processes`): an integer ``N`` is checked (at least 1, at most the CPU cores this process
may use, ``os.sched_getaffinity``, or the visible CUDA devices; ``B`` divisible by ``N``; a recipe that runs
in one process refuses ``N`` > 1); ``auto`` takes the largest ``N`` up to the cores (CPU) or devices (CUDA)
that divides ``B``, and 1 when that leaves nothing to gain (one core, an odd batch, no training, a
one-process recipe). Already under the launcher (``RANK`` set), nothing is started again.

**The original's flags** (:func:`split_launch_flags`, :func:`launch_command`): ``--gpu_num_per_node``,
``--num_nodes``, ``--node_ips`` become the same launcher command (the one function builds both), over nodes
too (re-exported by :mod:`.distributed`).

**Output** (:class:`LauncherOutput`, for both): a rank's one-sentence refusal is the job's one sentence and
exit status 2, as in one process, without the launcher's banner and traceback.
"""
import os
import socket
import sys
from typing import Dict, List, Optional, Sequence, TextIO, Tuple, Union

from .._env import env_int, env_port

__all__ = ["AUTO", "FLAG", "DEFAULT", "DEFAULT_VARIABLE", "HELP", "default_nproc", "split_nproc", "parse_nproc",
           "usable_cpus", "processes", "free_port", "under_launcher", "LauncherOutput",
           "ORIGINAL_FLAGS", "split_launch_flags", "launch_command", "interface_addresses"]

#: ``--nproc auto``: as many processes as pay (module doc).
AUTO = "auto"
#: The flag, read and removed by ``kdu-train`` before the configuration is parsed.
FLAG = "--nproc"
#: ``--nproc``'s default (measured, docs/performance.md "Both cores for one job").
DEFAULT = AUTO
#: An environment variable that replaces :data:`DEFAULT` (``KDU_NPROC=1``: one process unless ``--nproc`` says
#: otherwise; the test suite sets it).
DEFAULT_VARIABLE = "KDU_NPROC"
#: ``--nproc``'s line in ``kdu-train --help``.
HELP = ("kdu-train only: processes of this machine for this one job, N or 'auto' (default auto, or $KDU_NPROC: the "
        "CPU cores this process may use, or the visible GPUs, as many as divide the batch; 1 for a job that does "
        "not train). Above 1 the command runs again under OneFlow's launcher; --batch_size_per_device stays the "
        "whole job's batch and each process trains on batch/N of its rows, so the results differ from one "
        "process's by the dropout masks only (each process draws its own)")


def split_nproc(argv: Sequence[str]) -> Tuple[List[str], Optional[str]]:
    """``argv`` without ``--nproc VALUE`` / ``--nproc=VALUE`` (every occurrence; the last wins), and that
    value (None when absent). Raises ``ValueError`` when the flag ends ``argv`` without a value.

    >>> split_nproc(["--recipe", "kd", "--nproc", "2", "--quick"])
    (['--recipe', 'kd', '--quick'], '2')
    """
    rest, value, items, i = [], None, list(argv), 0
    while i < len(items):
        name, eq, given = items[i].partition("=")
        if name == FLAG:
            if not eq:
                if i + 1 >= len(items):
                    raise ValueError(f"{FLAG} needs a value: a number of processes or '{AUTO}'")
                given, i = items[i + 1], i + 1
            value = given
        else:
            rest.append(items[i])
        i += 1
    return rest, value


def parse_nproc(raw: str) -> Union[int, str]:
    """``"auto"`` or the positive integer ``raw`` names; ``ValueError`` (one sentence) otherwise.

    >>> parse_nproc("2"), parse_nproc(" AUTO ")
    (2, 'auto')
    >>> parse_nproc("0")
    Traceback (most recent call last):
    ...
    ValueError: --nproc must be a positive number of processes or 'auto', got '0'
    """
    text = str(raw).strip().lower()
    if text == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{FLAG} must be a positive number of processes or '{AUTO}', got {raw!r}")
    return value


def default_nproc() -> Union[int, str]:
    """``--nproc``'s value when the flag is not given: ``$KDU_NPROC`` if set, else :data:`DEFAULT`; a bad
    ``KDU_NPROC`` raises ``ValueError`` naming the variable."""
    raw = os.environ.get(DEFAULT_VARIABLE, "").strip()
    if not raw:
        return parse_nproc(DEFAULT)
    try:
        return parse_nproc(raw)
    except ValueError:
        raise ValueError(f"environment variable {DEFAULT_VARIABLE}={raw!r} must be a positive number of processes "
                         f"or '{AUTO}'; set it to such a value or unset it for the default {DEFAULT}") from None


def usable_cpus() -> int:
    """The CPU cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count()`` where absent)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def processes(nproc: Union[int, str], batch: int, device_kind: str, available: int, trains: bool = True,
              one_process: Optional[str] = None) -> int:
    """The number of processes for ``--nproc nproc`` (an int or ``"auto"``), given the job's batch ``batch``
    (``--batch_size_per_device``), its device kind (``"cpu"``/``"cuda"``), ``available`` cores (CPU) or
    devices (CUDA), whether it ``trains``, and ``one_process`` (a reason when the recipe runs in one process
    only, else None). Raises ``ValueError`` (one sentence) for an integer that cannot be run.

    >>> processes("auto", 32, "cpu", 2), processes("auto", 9, "cpu", 2), processes("auto", 32, "cpu", 1)
    (2, 1, 1)
    >>> processes(3, 32, "cpu", 4)
    Traceback (most recent call last):
    ...
    ValueError: --nproc 3 cannot split the batch of 32 rows (--batch_size_per_device) into 3 equal parts; pass a batch divisible by 3, another --nproc or --nproc auto
    """
    where = "CPU cores this process may use" if device_kind == "cpu" else "CUDA devices visible"
    if nproc == AUTO:
        if not trains or one_process or batch < 2:
            return 1
        return max(n for n in range(1, max(1, available) + 1) if batch % n == 0)
    if nproc == 1:
        return 1
    if nproc > available:
        raise ValueError(f"{FLAG} {nproc} is more than the {available} {where}; pass at most {available} "
                         f"or {FLAG} {AUTO}")
    if one_process:
        raise ValueError(f"{FLAG} {nproc}: {one_process}; pass {FLAG} 1")
    if batch % nproc:
        raise ValueError(f"{FLAG} {nproc} cannot split the batch of {batch} rows (--batch_size_per_device) into "
                         f"{nproc} equal parts; pass a batch divisible by {nproc}, another {FLAG} or {FLAG} {AUTO}")
    return nproc


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(tries: int = 50) -> int:
    """A TCP port of this machine free now, with the next one free too (the watchdog's default port is the
    master port + 1, :mod:`.distributed`). Raises ``OSError`` when none is found in ``tries`` attempts."""
    for _ in range(tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port < 65535 and _bindable(port + 1):
            return port
    raise OSError(f"found no free pair of TCP ports on 127.0.0.1 in {tries} tries; set KDU_MASTER_PORT")


def under_launcher() -> bool:
    """This process was started by OneFlow's launcher (``RANK`` set; ``import oneflow`` sets ``RANK=-1``
    outside it)."""
    return os.environ.get("RANK", "-1") not in ("-1", "")


class LauncherOutput:
    r"""The launcher's output (its stdout and stderr and its ranks', merged) as ``kdu-train`` shows it (call it with each line; :meth:`status` maps the exit).

    - The launcher's ``OMP_NUM_THREADS`` banner is dropped.
    - A rank's one-sentence user error (``error: ...``, exit status 2: a refused configuration, a full disk)
      is shown once, and the other ranks' and the launcher's reactions to it are dropped: the job then ends
      like a one-process run, with that sentence and exit status 2.
    - Otherwise every line is shown but the launcher's own ``Killing subprocess`` lines and its Python
      traceback (``subprocess.CalledProcessError``) once a rank failed: the rank's lines above it say why.

    >>> out, shown = LauncherOutput(stream=None), []
    >>> out.write = shown.append
    >>> for line in ["Setting OMP_NUM_THREADS environment variable ...\n", "error: no --task_name given; name one\n",
    ...              "[x.distributed] rank 1: stop\n", "Killing subprocess 7\n", "Traceback (most recent call last):\n",
    ...              "  File ...\n", "subprocess.CalledProcessError: Command ... exit status 2.\n"]:
    ...     out(line)
    >>> shown, out.status(1)
    (['error: no --task_name given; name one\n'], 2)
    """

    BANNER = ("*****************************************", "Setting OMP_NUM_THREADS environment variable")

    def __init__(self, stream: Optional[TextIO] = sys.stderr):
        self.stream = stream
        self.errors: List[str] = []
        self.killing = False
        self.in_traceback = False

    def write(self, line: str) -> None:
        self.stream.write(line)
        self.stream.flush()

    def __call__(self, line: str) -> None:
        text = line.rstrip("\n")
        if text.startswith(self.BANNER):
            return
        if text.startswith("error: "):
            if text not in self.errors:
                self.errors.append(text)
                self.write(line)
            return
        if self.errors:  # the consequences of a user error: the other ranks stopping, the launcher's report
            return
        if text.startswith("Killing subprocess "):
            self.killing = True
            return
        if self.killing and text.startswith("Traceback (most recent call last):"):
            self.in_traceback = True
        if self.in_traceback:
            self.in_traceback = not text.startswith("subprocess.CalledProcessError")
            return
        self.write(line)

    def status(self, launcher_status: int) -> int:
        """The job's exit status: 2 after a user error, else the launcher's."""
        return 2 if self.errors and launcher_status != 0 else launcher_status


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
                   port: Optional[int] = None, batch: Optional[int] = None) -> Optional[List[str]]:
    """The OneFlow launcher command that runs ``entry + argv`` on ``--gpu_num_per_node`` processes per node
    and ``--num_nodes`` nodes (``--node_ips``: the nodes' addresses, the first is the master), or None when
    one process suffices or this process was already started by the launcher. The one builder of both
    launcher commands: the original's flags, and ``kdu-train --nproc N`` (``flags`` ``{"gpu_num_per_node":
    "N"}`` with ``batch``, the whole job's ``--batch_size_per_device``).

    With ``batch``: one node of at least 2 processes dividing ``batch`` (else ``ValueError``), each started with
    ``--batch_size_per_device batch // N`` (appended: it wins over earlier values), and the master port, unless
    ``port`` or ``KDU_MASTER_PORT`` names one, a free one of this machine (:func:`free_port`).

    This node's rank is ``KDU_NODE_RANK`` if set, else the position of one of its addresses in
    ``--node_ips``. When the master's address and this node's are both this machine's (several nodes simulated
    on one host), this node reaches the master at its own address, so that OneFlow counts it as a node of its
    own (:mod:`.distributed`'s module doc, **Nodes**). The master port is ``port``, else ``KDU_MASTER_PORT`` (default 29500). Raises ``ValueError`` with
    one sentence on inconsistent flags.

    >>> launch_command({"gpu_num_per_node": "2"}, ["--recipe", "kd"], ["-m", "x"])[3:6]
    ['--nproc_per_node', '2', '--nnodes']
    >>> launch_command({"gpu_num_per_node": "2"}, ["--recipe", "kd"], ["-m", "x"], port=29600, batch=32)[3:]
    ['--nproc_per_node', '2', '--nnodes', '1', '--node_rank', '0', '--master_addr', '127.0.0.1', '--master_port', '29600', '-m', 'x', '--recipe', 'kd', '--batch_size_per_device', '16']
    """
    if not flags or os.environ.get("RANK", "-1") != "-1":  # (``import oneflow`` sets RANK=-1 outside the launcher)
        return None
    per_node, nodes = _positive(flags, "gpu_num_per_node"), _positive(flags, "num_nodes")
    if batch is not None:
        if per_node < 2 or nodes != 1 or batch % per_node:
            raise ValueError(f"launch_command(batch=...) needs at least 2 processes on one node and a batch divisible "
                             f"by them, got {per_node} x {nodes} node(s) and {batch}")
        argv = [*argv, "--batch_size_per_device", str(batch // per_node)]
        port = port or env_port("KDU_MASTER_PORT", None) or free_port()
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
        master = ips[node_rank]  # the master runs here too: reach it at this node's address (distributed's doc, Nodes)
    return [sys.executable, "-m", "oneflow.distributed.launch", "--nproc_per_node", str(per_node), "--nnodes",
            str(nodes), "--node_rank", str(node_rank), "--master_addr", master, "--master_port", port,
            *entry, *argv]
