"""The process's umask and the permissions it gives a new file or directory (what :mod:`._io`'s writers set,
so that an atomic write leaves the permissions a plain ``open``/``mkdir`` would).
"""
import os
import threading

__all__ = ["current_umask", "file_mode", "directory_mode"]

_UMASK_LOCK = threading.Lock()


def _umask_by_swapping() -> int:
    """The umask through ``os.umask`` (set and restored under a lock: another thread creating a file in
    between could otherwise see the temporary value; only used where ``/proc`` cannot tell)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_IMPORT_UMASK = _umask_by_swapping()


def current_umask() -> int:
    """The process's umask now: read from ``/proc/self/status`` (``Umask:``, Linux >= 4.7: no side effect),
    else the umask when this module was imported."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as stream:
            for line in stream:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _IMPORT_UMASK


def file_mode() -> int:
    """The permissions of a new file under the umask: ``0o666 & ~umask`` (e.g. 0o644 under 022)."""
    return 0o666 & ~current_umask()


def directory_mode() -> int:
    """The permissions of a new directory under the umask: ``0o777 & ~umask`` (e.g. 0o755 under 022)."""
    return 0o777 & ~current_umask()
