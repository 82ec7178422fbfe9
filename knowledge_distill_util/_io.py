"""Atomic file and directory writes, and JSON reads whose errors name the file.

Every writer here leaves, at every instant, either the old or the new complete content at the target
path, also when the process is killed (SIGKILL) half-way:

- :func:`atomic_write_file` (binary, e.g. ``.npz``), :func:`atomic_write_text`, :func:`atomic_write_json`:
  a temporary file beside the target, flushed and ``fsync``-ed, then ``os.replace`` (atomic on POSIX
  and Windows).
- :func:`replace_directory`: ``fill(tmpdir)`` writes the new content into a fresh directory beside the
  target; the two directories are then swapped in one system call, ``renameat2(RENAME_EXCHANGE)``
  (Linux >= 3.15, glibc >= 2.28, called through ``ctypes``), and the old copy is deleted. A target that
  does not exist yet is created with a plain ``os.rename``.

  Fallback, where ``renameat2`` is missing (macOS, Windows, old glibc) or the file system refuses
  ``RENAME_EXCHANGE`` (``EINVAL``, e.g. some network file systems): the old directory is renamed aside,
  then the new one renamed in. Between these two renames (two consecutive system calls, microseconds)
  the target path does not exist; a process killed exactly there leaves the old content complete in
  ``.<name>.kdu-old-<pid>-*`` beside the target (:func:`interrupted_copies` finds it, and the next write
  to the same path removes it).

Permissions: every file and directory written here gets the permissions a plain ``open``/``mkdir``
would give under the process's umask: files ``0o666 & ~umask``, directories ``0o777 & ~umask`` (the
staging directory of :func:`replace_directory` becomes the target, so it gets them too; what ``fill``
creates with ``open``/``os.makedirs`` follows the umask already). A replaced file gets these permissions
too, not those of the file it replaces (kept simple: ``chmod`` it again after a write if it needs others).

A full disk (``ENOSPC``) or an exceeded quota (``EDQUOT``) is one sentence naming the path, the bytes the
write needed (the size being written when known, else what was written before the disk filled) and the
free bytes there (:func:`disk_full_message`); the target is unchanged, as for every other failure.
The umask (:mod:`._umask`) and these sentences (:mod:`._write_errors`) live in their own modules; this one
re-exports their names.

Temporary names start with ``.<name>.kdu-tmp-<pid>-`` (``<name>`` is the target's base name, ``<pid>``
the writer's process id). Leftovers of killed writers are deleted at the next successful write to the
same path; those of a writer that is still running (a concurrent write) are left alone. So are the
hidden staging folders of the earlier ``save_model`` (``.<name>.XXXXXXXX`` holding only ``state`` and
``old-<hex>``). Concurrent writers to one
path are otherwise not coordinated: the last swap wins, each swap is atomic.
"""
import ctypes
import ctypes.util
import errno
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import uuid
from typing import Any, BinaryIO, Callable, List, Optional

from ._umask import _IMPORT_UMASK, current_umask, directory_mode, file_mode  # noqa: F401 - re-exported
from ._write_errors import DISK_FULL, _write_error, disk_full_message, write_error_message  # noqa: F401

__all__ = [
    "atomic_write_file",
    "atomic_write_text",
    "atomic_write_json",
    "replace_directory",
    "read_json",
    "interrupted_copies",
    "exchange_supported",
    "current_umask",
    "file_mode",
    "directory_mode",
    "DISK_FULL",
    "disk_full_message",
    "write_error_message",
]

logger = logging.getLogger(__name__)

_TMP_TAG = "kdu-tmp"
_OLD_TAG = "kdu-old"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h
# save_model before this module: tempfile.mkdtemp(prefix=".<name>.") holding "state" and "old-<hex>".
_LEGACY_STAGING = re.compile(r"[a-z0-9_]{8}")
_LEGACY_CONTENT = re.compile(r"state|old-[0-9a-f]{32}")


def _libc_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _libc_renameat2()


def exchange_supported() -> bool:
    """True when ``renameat2`` is available (the file system may still refuse ``RENAME_EXCHANGE``)."""
    return _RENAMEAT2 is not None


def _exchange(a: str, b: str) -> bool:
    """Swap the directory entries ``a`` and ``b`` atomically; False when not supported here."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"could not swap {b} with its new version {a}: {os.strerror(code)}", b)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _prefix(base: str, tag: str) -> str:
    return f".{base}.{tag}-{os.getpid()}-"


def _leftovers(path: str) -> List[str]:
    """Temporary entries beside ``path`` left by writers to ``path`` that are no longer running."""
    parent, base = os.path.split(path)
    pattern = re.compile(rf"\.{re.escape(base)}\.({_TMP_TAG}|{_OLD_TAG})-(\d+)-")
    found = []
    try:
        entries = os.listdir(parent)
    except OSError:
        return []
    for entry in entries:
        match = pattern.match(entry)
        if match and not _pid_alive(int(match.group(2))):
            found.append(os.path.join(parent, entry))
        elif entry.startswith(f".{base}.") and _LEGACY_STAGING.fullmatch(entry[len(base) + 2:]):
            full = os.path.join(parent, entry)
            try:
                legacy = os.path.isdir(full) and all(_LEGACY_CONTENT.fullmatch(e) for e in os.listdir(full))
            except OSError:
                legacy = False
            if legacy:
                found.append(full)
    return sorted(found)


def interrupted_copies(path) -> List[str]:
    """Copies of ``path``'s previous content left beside it by an interrupted fallback swap (newest
    last). Empty unless a writer was killed inside the fallback's two-rename window (see the module
    doc); rename the last one to ``path`` to restore the old content."""
    path = os.path.abspath(os.fspath(path))
    base = os.path.basename(path)
    copies = [p for p in _leftovers(path) if os.path.basename(p).startswith(f".{base}.{_OLD_TAG}-")]
    return sorted(copies, key=os.path.getmtime)


def _remove(entry: str) -> None:
    if os.path.isdir(entry) and not os.path.islink(entry):
        shutil.rmtree(entry, ignore_errors=True)
    else:
        try:
            os.remove(entry)
        except FileNotFoundError:
            pass


def _clean_leftovers(path: str) -> None:
    for entry in _leftovers(path):
        logger.info("removing %s, left by an interrupted write to %s", entry, path)
        _remove(entry)


def _fsync_directory(directory: str) -> None:
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows, or no permission to open directories
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _fsync_tree(root: str) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(directory, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_directory(directory)


def _target(path) -> str:
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return os.path.abspath(path)


def _size(path: str) -> int:
    """Bytes in the file or directory tree ``path`` (0 when it cannot be read)."""
    if not os.path.isdir(path):
        try:
            return os.path.getsize(path)
        except OSError:
            return 0
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(directory, name))
            except OSError:
                pass
    return total


def atomic_write_file(path, write: Callable[[BinaryIO], None], *, size: Optional[int] = None) -> None:
    """Replace the file ``path`` with what ``write(stream)`` writes to a binary stream, atomically.

    The stream is a temporary file beside ``path``; it is flushed, ``fsync``-ed and renamed over
    ``path`` (``os.replace``) only after ``write`` returned. The parent directory is created if needed.
    On failure the target is unchanged, the temporary file is removed, and an ``OSError`` (same
    subclass, e.g. ``PermissionError``) names ``path``; on a full disk it also says the bytes needed
    (``size`` when the caller knows it, else at least what was written) and free. The new file gets the
    umask's permissions (module doc). Use it for ``.npz`` and other binary files:

    >>> import tempfile, os, numpy as np
    >>> target = os.path.join(tempfile.mkdtemp(), "train_logits.npz")
    >>> atomic_write_file(target, lambda stream: np.savez(stream, logits=np.zeros(3)))
    >>> np.load(target)["logits"].tolist()
    [0.0, 0.0, 0.0]
    """
    path = _target(path)
    if not callable(write):
        raise TypeError(f"write must be a function write(stream) producing {path}, got {type(write).__name__}")
    directory, base = os.path.split(path)
    try:
        os.makedirs(directory, exist_ok=True)
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, "it is a directory", path)
        handle, temporary = tempfile.mkstemp(prefix=_prefix(base, _TMP_TAG), dir=directory)
    except OSError as err:
        raise _write_error(err, path, size) from err
    try:
        with os.fdopen(handle, "wb") as stream:
            os.fchmod(stream.fileno(), file_mode())  # mkstemp creates 0o600
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as err:
        written = _size(temporary)
        _remove(temporary)
        if isinstance(err, OSError):
            raise _write_error(err, path, written if size is None else size, at_least=size is None) from err
        raise
    _fsync_directory(directory)
    _clean_leftovers(path)


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8, line ends as given) to ``path`` atomically (see :func:`atomic_write_file`).

    >>> import tempfile, os
    >>> target = os.path.join(tempfile.mkdtemp(), "LATEST")
    >>> atomic_write_text(target, "step-00000010")
    >>> open(target).read()
    'step-00000010'
    """
    if not isinstance(text, str):
        raise TypeError(f"text to write to {_target(path)} must be a str, got {type(text).__name__}")
    data = text.encode("utf-8")
    atomic_write_file(path, lambda stream: stream.write(data), size=len(data))


def atomic_write_json(path, obj: Any, *, indent: Optional[int] = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (see :func:`atomic_write_text`).

    ``obj`` is serialised before anything is written: a value JSON cannot hold raises ``TypeError``
    naming ``path`` and the target stays unchanged. NaN and infinities are refused (``ValueError``):
    they are not JSON.

    >>> import tempfile, os
    >>> target = os.path.join(tempfile.mkdtemp(), "state.json")
    >>> atomic_write_json(target, {"step": 3})
    >>> read_json(target)
    {'step': 3}
    """
    path = _target(path)
    try:
        text = json.dumps(obj, indent=indent, allow_nan=False)
    except TypeError as err:
        raise TypeError(f"cannot write {path} as JSON: {err}; convert the value to a str, number, "
                        f"list or dict first") from None
    except ValueError as err:
        raise ValueError(f"cannot write {path} as JSON: {err} (NaN or infinity); replace such values "
                         f"with None or a string") from None
    atomic_write_text(path, text + "\n")


def read_json(path, what: str = "JSON file") -> Any:
    """Parse the JSON file ``path``; every error names the file.

    Raises ``FileNotFoundError`` (missing), ``IsADirectoryError`` (a directory), ``ValueError``
    (not UTF-8, or not valid JSON: with the line and column).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"{what} {path} is a directory, expected a file", path)
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, f"{what} {path} does not exist", path)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {path} is not UTF-8 text ({err.reason} at byte {err.start}); "
                         f"it is corrupt: restore or re-create it") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} {path} is not valid JSON ({err.msg} at line {err.lineno}, column "
                         f"{err.colno}); it is truncated or corrupt: restore or re-create it") from None


def replace_directory(path, fill: Callable[[str], None]) -> str:
    """Replace the directory ``path`` with the content ``fill(tmpdir)`` writes, atomically.

    ``fill`` receives a fresh empty directory beside ``path`` (same file system) and writes the
    complete new content into it. Then the new directory takes the place of the old one in one step
    (see the module doc for the mechanism and the fallback's window), and the old copy is deleted.
    The new directory gets the umask's permissions (module doc); so does what ``fill`` creates with
    ``open``/``os.makedirs``. If ``fill`` raises, ``path`` is untouched and the temporary directory
    removed (a full disk: one sentence with at least the bytes written so far). Leftovers of
    earlier killed writes to ``path`` are removed after the new content is in place (never before, so a
    failed write cannot lose an interrupted copy). Returns the absolute ``path``.

    Raises ``NotADirectoryError`` when ``path`` exists and is not a directory (nothing is replaced).

    >>> import tempfile, os
    >>> target = os.path.join(tempfile.mkdtemp(), "weights")
    >>> def fill(directory):
    ...     open(os.path.join(directory, "w.txt"), "w").write("new")
    >>> replace_directory(target, fill) == target
    True
    >>> os.listdir(target)
    ['w.txt']
    """
    path = _target(path)
    if not callable(fill):
        raise TypeError(f"fill must be a function fill(directory) writing the new content of {path}, "
                        f"got {type(fill).__name__}")
    parent, base = os.path.split(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise NotADirectoryError(errno.ENOTDIR, f"{path} exists and is not a directory; remove it or "
                                                f"choose another path", path)
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=_prefix(base, _TMP_TAG), dir=parent)
        os.chmod(staging, directory_mode())  # mkdtemp creates 0o700
    except OSError as err:
        raise _write_error(err, path) from err
    try:
        fill(staging)
        _fsync_tree(staging)
        _swap_in(staging, path)
    except BaseException as err:
        written = _size(staging) if os.path.isdir(staging) else None
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, OSError):
            raise _write_error(err, path, written, at_least=True) from err
        raise
    _fsync_directory(parent)
    _clean_leftovers(path)  # only now: an interrupted copy may be the only old content until the swap
    return path


def _swap_in(staging: str, path: str) -> None:
    """Put ``staging`` at ``path``; the old content, if any, is deleted."""
    if not os.path.lexists(path):
        try:
            os.rename(staging, path)
            return
        except OSError as err:  # created meanwhile by another writer: swap with it instead
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    if _exchange(staging, path):
        shutil.rmtree(staging, ignore_errors=True)  # the old content
        return
    parent, base = os.path.split(path)
    aside = os.path.join(parent, _prefix(base, _OLD_TAG) + uuid.uuid4().hex)
    os.rename(path, aside)  # the fallback's window: path is absent until the next rename
    try:
        os.rename(staging, path)
    except BaseException:
        os.rename(aside, path)
        raise
    shutil.rmtree(aside, ignore_errors=True)
