"""Staging beside a target path, shared by the atomic writers of :mod:`._io` and :mod:`._replace_dir`: the
temporary names, the leftovers of killed writers, ``fsync`` and the checks of a target path.

Temporary names start with ``.<name>.kdu-tmp-<pid>-`` (a new file or directory being written) or
``.<name>.kdu-old-<pid>-`` (a directory's old content, renamed aside by :mod:`._replace_dir`'s fallback);
``<name>`` is the target's base name, ``<pid>`` the writer's process id. :func:`leftovers` finds those of
writers that are no longer running (a concurrent writer's are left alone), and the hidden staging folders
of the earlier ``save_model`` (``.<name>.XXXXXXXX`` holding only ``state`` and ``old-<hex>``).
"""
import logging
import os
import re
import shutil
from typing import List

__all__ = ["TMP_TAG", "OLD_TAG", "pid_alive", "prefix", "leftovers", "remove", "clean_leftovers",
           "fsync_directory", "fsync_tree", "target_path", "tree_size"]

logger = logging.getLogger(__name__)

TMP_TAG = "kdu-tmp"
OLD_TAG = "kdu-old"
# save_model before this module: tempfile.mkdtemp(prefix=".<name>.") holding "state" and "old-<hex>".
_LEGACY_STAGING = re.compile(r"[a-z0-9_]{8}")
_LEGACY_CONTENT = re.compile(r"state|old-[0-9a-f]{32}")


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` runs (this process, or another user's: it cannot be signalled)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def prefix(base: str, tag: str) -> str:
    """``.<base>.<tag>-<pid>-``: the start of this process's temporary names beside ``base``."""
    return f".{base}.{tag}-{os.getpid()}-"


def leftovers(path: str) -> List[str]:
    """Temporary entries beside ``path`` left by writers to ``path`` that are no longer running."""
    parent, base = os.path.split(path)
    pattern = re.compile(rf"\.{re.escape(base)}\.({TMP_TAG}|{OLD_TAG})-(\d+)-")
    found = []
    try:
        entries = os.listdir(parent)
    except OSError:
        return []
    for entry in entries:
        match = pattern.match(entry)
        if match and not pid_alive(int(match.group(2))):
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


def remove(entry: str) -> None:
    """Delete the file or directory tree ``entry`` (gone already: nothing to do)."""
    if os.path.isdir(entry) and not os.path.islink(entry):
        shutil.rmtree(entry, ignore_errors=True)
    else:
        try:
            os.remove(entry)
        except FileNotFoundError:
            pass


def clean_leftovers(path: str) -> None:
    """Delete the :func:`leftovers` beside ``path`` (each logged)."""
    for entry in leftovers(path):
        logger.info("removing %s, left by an interrupted write to %s", entry, path)
        remove(entry)


def fsync_directory(directory: str) -> None:
    """``fsync`` ``directory`` so a rename in it is durable (skipped where directories cannot be opened)."""
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


def fsync_tree(root: str) -> None:
    """``fsync`` every file and directory under ``root``."""
    for directory, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(directory, name), "rb") as handle:
                os.fsync(handle.fileno())
        fsync_directory(directory)


def target_path(path) -> str:
    """``path`` (str, bytes or ``os.PathLike``) as an absolute str; anything else is a ``TypeError``."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return os.path.abspath(path)


def tree_size(path: str) -> int:
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
