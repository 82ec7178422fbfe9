"""Atomic file writes, and JSON reads whose errors name the file: the one module to import every atomic
write from (it re-exports :func:`replace_directory`, :func:`interrupted_copies` and
:func:`exchange_supported` of :mod:`._replace_dir`, and the names of :mod:`._umask` and :mod:`._write_errors`).

Every writer leaves, at every instant, either the old or the new complete content at the target
path, also when the process is killed (SIGKILL) half-way:

- :func:`atomic_write_file` (binary, e.g. ``.npz``), :func:`atomic_write_text`, :func:`atomic_write_json`:
  a temporary file beside the target, flushed and ``fsync``-ed, then ``os.replace`` (atomic on POSIX
  and Windows).
- :func:`replace_directory` (:mod:`._replace_dir`): a new directory beside the target, swapped in with
  ``renameat2(RENAME_EXCHANGE)`` or, where that is missing, two renames (its module doc says the window).

Permissions: every file and directory written here gets the permissions a plain ``open``/``mkdir``
would give under the process's umask: files ``0o666 & ~umask``, directories ``0o777 & ~umask`` (the
staging directory of :func:`replace_directory` becomes the target, so it gets them too; what ``fill``
creates with ``open``/``os.makedirs`` follows the umask already). A replaced file gets these permissions
too, not those of the file it replaces (kept simple: ``chmod`` it again after a write if it needs others).

A full disk (``ENOSPC``) or an exceeded quota (``EDQUOT``) is one sentence naming the path, the bytes the
write needed (the size being written when known, else what was written before the disk filled) and the
free bytes there (:func:`disk_full_message`); the target is unchanged, as for every other failure.

Temporary names start with ``.<name>.kdu-tmp-<pid>-`` (:mod:`._staging`). Leftovers of killed writers are
deleted at the next successful write to the same path; those of a writer that is still running (a
concurrent write) are left alone. Concurrent writers to one path are otherwise not coordinated: the last
write wins, each is atomic.
"""
import errno
import json
import os
import tempfile
from typing import Any, BinaryIO, Callable, Iterable, Optional

from ._replace_dir import exchange_supported, interrupted_copies, replace_directory  # noqa: F401 - re-exported
from ._staging import TMP_TAG, clean_leftovers, fsync_directory, prefix, remove, target_path, tree_size
from ._umask import _IMPORT_UMASK, current_umask, directory_mode, file_mode  # noqa: F401 - re-exported
from ._write_errors import DISK_FULL, _write_error, disk_full_message, write_error_message  # noqa: F401

__all__ = [
    "atomic_write_file",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_npy",
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
    path = target_path(path)
    if not callable(write):
        raise TypeError(f"write must be a function write(stream) producing {path}, got {type(write).__name__}")
    directory, base = os.path.split(path)
    try:
        os.makedirs(directory, exist_ok=True)
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, "it is a directory", path)
        handle, temporary = tempfile.mkstemp(prefix=prefix(base, TMP_TAG), dir=directory)
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
        written = tree_size(temporary)
        remove(temporary)
        if isinstance(err, OSError):
            raise _write_error(err, path, written if size is None else size, at_least=size is None) from err
        raise
    fsync_directory(directory)
    clean_leftovers(path)


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8, line ends as given) to ``path`` atomically (see :func:`atomic_write_file`).

    >>> import tempfile, os
    >>> target = os.path.join(tempfile.mkdtemp(), "LATEST")
    >>> atomic_write_text(target, "step-00000010")
    >>> open(target).read()
    'step-00000010'
    """
    if not isinstance(text, str):
        raise TypeError(f"text to write to {target_path(path)} must be a str, got {type(text).__name__}")
    data = text.encode("utf-8")
    atomic_write_file(path, lambda stream: stream.write(data), size=len(data))


def atomic_write_npy(path, dtype, shape, blocks: Iterable = ()) -> None:
    """Write a ``.npy`` file of ``dtype`` and ``shape`` to ``path`` atomically (see :func:`atomic_write_file`):
    the arrays of ``blocks`` in order (C order, their bytes end to end), the rest of the array zeros (a sparse
    file where the file system allows). Read it back memory-mapped with ``np.load(path, mmap_mode=...)``.

    >>> import tempfile, os, numpy as np
    >>> target = os.path.join(tempfile.mkdtemp(), "rows.npy")
    >>> atomic_write_npy(target, np.float32, (3, 2), [np.ones((1, 2))])
    >>> np.load(target).tolist()
    [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
    """
    import numpy as np

    dtype = np.dtype(dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize

    def write(stream) -> None:
        np.lib.format.write_array_header_2_0(stream, header)
        start = stream.tell()
        for block in blocks:
            stream.write(np.ascontiguousarray(block, dtype=dtype).tobytes())
        stream.truncate(start + size)

    atomic_write_file(path, write, size=size)


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
    path = target_path(path)
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
