"""One writer per output directory: a lock file holding the writer's pid, host and start time.

:class:`DirectoryLock` creates ``<directory>/.kdu.lock`` exclusively and complete: its content is written to a
temporary file first, which is then hard-linked to the lock's name (``link`` fails when the name exists), so
a run killed at any moment never leaves an empty lock (where hard links are not supported: ``O_CREAT |
O_EXCL``, then the content). It gets the umask's permissions, like every output. A second run
on the same directory stops with one sentence naming the holder. A lock whose holder is gone (same host,
no such process) is stale: it is taken over, and the takeover is logged. Locks of other hosts are never
taken over (their processes cannot be checked from here): the message says how to remove one by hand.
"""
import errno
import json
import logging
import os
import socket
import time
import uuid
from typing import Dict, List, Optional

from .._errors import ConfigError

__all__ = ["LOCK_FILE", "DirectoryLock", "lock_directories"]

LOCK_FILE = ".kdu.lock"
logger = logging.getLogger(__name__)


def _alive(pid: int) -> bool:
    """``pid`` runs: exists and is not a zombie (a killed process its parent has not reaped yet, e.g. a
    rank whose launcher was killed with it, until init reaps it: it holds nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stream:
            state = stream.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # no /proc (not Linux) or gone in between
        return True
    return state not in ("Z", "X")


class DirectoryLock:
    """The lock of one output directory (a context manager; :meth:`release` is idempotent)."""

    def __init__(self, directory: str):
        self.directory = os.path.abspath(directory)
        self.path = os.path.join(self.directory, LOCK_FILE)
        self.held = False

    def _holder(self) -> Optional[Dict]:
        try:
            with open(self.path, encoding="utf-8") as stream:
                return json.load(stream)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written right now, or garbage: treated as held

    def acquire(self) -> "DirectoryLock":
        os.makedirs(self.directory, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                self._create(json.dumps(me))
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released in between: try again
                if holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) \
                        and not _alive(holder["pid"]):
                    logger.warning("taking over the stale lock %s of pid %s (no longer running)", self.path,
                                   holder["pid"])
                    os.remove(self.path)
                    continue
                raise ConfigError(
                    f"another run (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since "
                    f"{holder.get('started', '?')}) is writing to {self.directory}; wait for it to finish or use "
                    f"another output directory (if that run is gone, delete {self.path})")
            self.held = True
            self._clean_temporaries()
            return self
        raise ConfigError(f"could not take the lock {self.path}; try again")

    def _create(self, text: str) -> None:
        """Create the lock file holding ``text`` (complete at once); ``FileExistsError`` when it exists."""
        temporary = os.path.join(self.directory, f".kdu.lock.{os.getpid()}-{uuid.uuid4().hex}")
        with open(temporary, "w", encoding="utf-8") as stream:  # the umask's permissions
            stream.write(text)
        try:
            os.link(temporary, self.path)
            return
        except OSError as error:
            if error.errno == errno.EEXIST:
                raise FileExistsError(errno.EEXIST, "the lock exists", self.path) from None
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                raise
        finally:
            os.remove(temporary)
        descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # no hard links here
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)

    def _clean_temporaries(self) -> None:
        """Remove the temporary lock files of runs killed while taking a lock here."""
        for name in os.listdir(self.directory):
            pid = name[len(LOCK_FILE) + 1:].split("-", 1)[0]
            if name.startswith(LOCK_FILE + ".") and pid.isdigit() and not _alive(int(pid)):
                try:
                    os.remove(os.path.join(self.directory, name))
                except OSError:
                    pass

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_directories(*directories: str) -> List[DirectoryLock]:
    """Lock each distinct directory (in a fixed order); on failure release those already taken and raise."""
    taken: List[DirectoryLock] = []
    try:
        for directory in sorted({os.path.abspath(d) for d in directories}):
            taken.append(DirectoryLock(directory).acquire())
    except BaseException:
        for lock in taken:
            lock.release()
        raise
    return taken
