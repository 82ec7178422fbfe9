"""SIGINT and SIGTERM end a run the clean way: an exception in the main thread, so every ``finally``
runs (locks released, logs written), then one line and the shell's status ``128 + signal``.

:func:`install` makes both signals raise :class:`Interrupted` (a ``KeyboardInterrupt``: code that already
cleans up after Ctrl-C cleans up after SIGTERM too). Only the first signal raises: once the run is
stopping, further SIGINT/SIGTERM are ignored so that the clean-up itself is not interrupted (SIGKILL
still ends the process at once; every write is atomic, so a resume still finds a consistent state).
The entry points print :func:`sentence` and return :func:`exit_status`: 130 for SIGINT, 143 for SIGTERM.
:func:`run_forwarding` runs a child (OneFlow's launcher) and passes such a signal on to it.
"""
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Optional, Sequence

__all__ = ["Interrupted", "install", "exit_status", "signal_name", "sentence", "run_forwarding"]

_STATE = {"stopping": False}


class Interrupted(KeyboardInterrupt):
    """The run received ``signum`` (SIGINT or SIGTERM)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)


def _raise(signum, frame) -> None:
    if _STATE["stopping"]:
        return  # already stopping: let the clean-up finish
    _STATE["stopping"] = True
    raise Interrupted(signum)


def install(signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> Callable[[], None]:
    """Make ``signals`` raise :class:`Interrupted` in the main thread; returns a function restoring the
    previous handlers. Outside the main thread (Python allows handlers only there): nothing."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    _STATE["stopping"] = False
    previous = {sig: signal.signal(sig, _raise) for sig in signals}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        _STATE["stopping"] = False

    return restore


def _signum(error: BaseException) -> int:
    return error.signum if isinstance(error, Interrupted) else int(signal.SIGINT)  # a plain Ctrl-C


def exit_status(error: BaseException) -> int:
    """The shell's status of a process ended by the signal of ``error``: ``128 + signal`` (130, 143)."""
    return 128 + _signum(error)


def signal_name(error: BaseException) -> str:
    """``"SIGINT"`` or ``"SIGTERM"``."""
    return signal.Signals(_signum(error)).name


def sentence(prog: str, error: BaseException, detail: Optional[str] = None) -> str:
    """The one line a stopped run prints, e.g. ``kdu-train: interrupted by SIGTERM; ... --resume``."""
    middle = f"; {detail}" if detail else ""
    return (f"{prog}: interrupted by {signal_name(error)}{middle}; the last checkpoints are kept: run the same "
            f"command with --resume to continue")


def run_forwarding(command: Sequence[str], prog: str, grace: float = 60.0,
                   output_line: Optional[Callable[[str], None]] = None) -> int:
    """Run ``command`` (OneFlow's launcher) in its own process group and return its exit status.

    SIGINT/SIGTERM meanwhile go to that whole group (the launcher and its ranks: the launcher's own handler
    signals its group, which it expects to lead); the group gets ``grace`` seconds to end (then SIGKILL),
    one line is printed and the status is 130 / 143. ``output_line``: the group's stdout and stderr, merged,
    are read line by line (a thread) and each line handed to it instead of inherited (``kdu-train``'s ranks
    write to stderr only); the lines are read to the end before returning (at most :data:`READ_GRACE_S`
    seconds once the launcher ended)."""
    restore = install()
    reader = None
    try:
        piped = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace") if output_line else {}
        process = subprocess.Popen(list(command), start_new_session=True, **piped)
        if output_line:
            reader = threading.Thread(target=_read_lines, args=(process.stdout, output_line), daemon=True)
            reader.start()
        try:
            status = process.wait()
            if reader is not None:
                reader.join(READ_GRACE_S)  # a process left holding the pipe must not hold this one
            return status
        except KeyboardInterrupt as error:
            _signal_group(process.pid, _signum(error))
            deadline = time.monotonic() + grace
            while _group_alive(process) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _group_alive(process):
                _signal_group(process.pid, signal.SIGKILL)
            process.wait()
            if reader is not None:
                reader.join(READ_GRACE_S)
            print(sentence(prog, error), file=sys.stderr, flush=True)
            return exit_status(error)
    finally:
        restore()


#: Seconds :func:`run_forwarding` waits for the last stderr lines once the launcher has ended.
READ_GRACE_S = 10.0


def _read_lines(stream, handle: Callable[[str], None]) -> None:
    for line in stream:
        handle(line)


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(process: "subprocess.Popen") -> bool:
    """A process of the group ``process`` led still runs (a process id is not reused while a group of that
    id exists; zombies count as ended). Without ``/proc``: the leader only."""
    if process.poll() is None:
        return True
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == process.pid and fields[0] not in ("Z", "X"):
            return True
    return False
