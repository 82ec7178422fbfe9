"""The one sentence of a failed write (:mod:`._io`'s module doc): a full disk or quota names the path, the
bytes needed and the bytes free (:func:`disk_full_message`); any other ``OSError`` names the path and the
reason (:func:`write_error_message`, :func:`_write_error`).
"""
import errno
import os
import shutil
from typing import Optional

__all__ = ["DISK_FULL", "disk_full_message", "write_error_message", "nearest_existing"]

#: errno values of a full disk: no space left, disk quota exceeded.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

def nearest_existing(path: str) -> str:
    """``path`` made absolute, or its nearest ancestor that exists (the root at the latest)."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    return probe


def _free_bytes(path: str) -> Optional[int]:
    """Free bytes of the file system holding ``path`` (its nearest existing ancestor); None if unknown."""
    try:
        return shutil.disk_usage(nearest_existing(path)).free
    except OSError:
        return None


def disk_full_message(path, needed: Optional[int] = None, *, at_least: bool = False, code: int = errno.ENOSPC) -> str:
    """One sentence for a write of ``path`` that failed on a full disk (``code`` ENOSPC) or quota (EDQUOT):
    the bytes it needed (``at_least``: a lower bound), the free bytes there, and the fix.

    >>> disk_full_message("/out/model", 1000, code=errno.EDQUOT).startswith(
    ...     "could not write /out/model: the disk quota is exceeded (it needs 1000 bytes")
    True
    """
    path = os.fspath(path)
    cause = "the disk quota is exceeded" if code == errno.EDQUOT else "the disk is full"
    if at_least and not needed:
        needed = None  # "at least 0 bytes" says nothing
    need = "" if needed is None else f"it needs {'at least ' if at_least else ''}{needed} bytes, "
    free = _free_bytes(path)
    have = "free space unknown" if free is None else f"{free} bytes free there"
    return (f"could not write {path}: {cause} ({need}{have}); nothing written before was changed: free some "
            f"space or choose another directory, then run again")


def write_error_message(err: OSError) -> str:
    """The one sentence for a failed write ``err``: the sentence of this module's writers as they raised
    it, else (an ``OSError`` from elsewhere, e.g. a library's own ``open``) one built from its errno and
    file name (``could not write ...: the disk is full ...`` for ENOSPC/EDQUOT, else ``<file>: <reason>``)."""
    if getattr(err, "kdu_sentence", None):
        return err.kdu_sentence
    if err.filename is None:  # e.g. a stream's write: the file is not known here
        cause = "disk quota exceeded" if err.errno == errno.EDQUOT else "no space left on device" \
            if err.errno == errno.ENOSPC else (err.strerror or str(err))
        return f"could not write a file: {cause}; free some space or choose another directory, then run again"
    if err.errno in DISK_FULL:
        return disk_full_message(err.filename, code=err.errno)
    return f"{err.filename}: {err.strerror or err}"


def _write_error(err: OSError, path: str, needed: Optional[int] = None, at_least: bool = False) -> OSError:
    """``err`` as an ``OSError`` of the same errno (hence subclass) whose message is one sentence naming
    ``path``; an error already described by a nested writer is returned as it is."""
    if getattr(err, "kdu_sentence", None):
        return err
    if err.errno in DISK_FULL:
        sentence = disk_full_message(path, needed, at_least=at_least, code=err.errno)
    else:
        reason = err.strerror or str(err)
        sentence = (f"could not write {path}: {reason}; check that its directory is writable "
                    f"and the disk is not full")
    error = OSError(err.errno, sentence, path)
    error.kdu_sentence = sentence
    return error
