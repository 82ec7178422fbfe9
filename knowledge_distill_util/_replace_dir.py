"""Atomic replacement of a directory (:func:`replace_directory`, re-exported by :mod:`._io`).

``fill(tmpdir)`` writes the new content into a fresh directory beside the target; the two directories are
then swapped in one system call, ``renameat2(RENAME_EXCHANGE)`` (Linux >= 3.15, glibc >= 2.28, called
through ``ctypes``), and the old copy is deleted. A target that does not exist yet is created with a plain
``os.rename``. At every instant the target holds the old or the new complete content, also when the
process is killed (SIGKILL) half-way.

Fallback, where ``renameat2`` is missing (macOS, Windows, old glibc) or the file system refuses
``RENAME_EXCHANGE`` (``EINVAL``, e.g. some network file systems): the old directory is renamed aside,
then the new one renamed in. Between these two renames (two consecutive system calls, microseconds)
the target path does not exist; a process killed exactly there leaves the old content complete in
``.<name>.kdu-old-<pid>-*`` beside the target (:func:`interrupted_copies` finds it, and the next write
to the same path removes it).

Permissions, a full disk and the temporary names are as for :mod:`._io`'s file writers (see its module doc
and :mod:`._staging`). Concurrent writers to one path are not coordinated: the last swap wins, each swap is
atomic.
"""
import ctypes
import ctypes.util
import errno
import os
import shutil
import sys
import tempfile
import uuid
from typing import Callable, List

from ._staging import (OLD_TAG, TMP_TAG, clean_leftovers, fsync_directory, fsync_tree, leftovers, prefix,
                       target_path, tree_size)
from ._umask import directory_mode
from ._write_errors import _write_error

__all__ = ["replace_directory", "interrupted_copies", "exchange_supported"]

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h


def _libc_renameat2():
    """glibc's ``renameat2`` through ``ctypes``, or None (not Linux, or a glibc before 2.28)."""
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


def interrupted_copies(path) -> List[str]:
    """Copies of ``path``'s previous content left beside it by an interrupted fallback swap (newest
    last). Empty unless a writer was killed inside the fallback's two-rename window (see the module
    doc); rename the last one to ``path`` to restore the old content."""
    path = os.path.abspath(os.fspath(path))
    base = os.path.basename(path)
    copies = [p for p in leftovers(path) if os.path.basename(p).startswith(f".{base}.{OLD_TAG}-")]
    return sorted(copies, key=os.path.getmtime)


def replace_directory(path, fill: Callable[[str], None]) -> str:
    """Replace the directory ``path`` with the content ``fill(tmpdir)`` writes, atomically.

    ``fill`` receives a fresh empty directory beside ``path`` (same file system) and writes the
    complete new content into it. Then the new directory takes the place of the old one in one step
    (see the module doc for the mechanism and the fallback's window), and the old copy is deleted.
    The new directory gets the umask's permissions (:mod:`._io`'s module doc); so does what ``fill`` creates with
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
    path = target_path(path)
    if not callable(fill):
        raise TypeError(f"fill must be a function fill(directory) writing the new content of {path}, "
                        f"got {type(fill).__name__}")
    parent, base = os.path.split(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise NotADirectoryError(errno.ENOTDIR, f"{path} exists and is not a directory; remove it or "
                                                f"choose another path", path)
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=prefix(base, TMP_TAG), dir=parent)
        os.chmod(staging, directory_mode())  # mkdtemp creates 0o700
    except OSError as err:
        raise _write_error(err, path) from err
    try:
        fill(staging)
        fsync_tree(staging)
        _swap_in(staging, path)
    except BaseException as err:
        written = tree_size(staging) if os.path.isdir(staging) else None
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, OSError):
            raise _write_error(err, path, written, at_least=True) from err
        raise
    fsync_directory(parent)
    clean_leftovers(path)  # only now: an interrupted copy may be the only old content until the swap
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
    aside = os.path.join(parent, prefix(base, OLD_TAG) + uuid.uuid4().hex)
    os.rename(path, aside)  # the fallback's window: path is absent until the next rename
    try:
        os.rename(staging, path)
    except BaseException:
        os.rename(aside, path)
        raise
    shutil.rmtree(aside, ignore_errors=True)
