"""One store of per-row float arrays, the storage of both teacher-output caches: the Distiller's
(:mod:`.teacher_cache`) and the recipes' (:mod:`knowledge_distill_util.training.teacher_outputs`).

A :class:`RowStore` holds named arrays ``[capacity, *row shape]`` of ``float32`` or ``float16`` whose rows are
keyed by integer row ids (:attr:`RowStore.slots`: row id -> stored row, numbered in the order the ids were first
put):

- in memory (``paths=None``): NumPy arrays;
- on disk (``paths(name)``: the ``.npy`` file of each name): memory-mapped ``.npy`` files, each created
  atomically (:func:`knowledge_distill_util._io.atomic_write_npy`: zero-filled, sparse where the file system
  allows) and filled in place; the operating system pages them in and out. :meth:`RowStore.close` deletes the
  files this store created (a caller's file name is reused: a new file renames over a killed run's one).

An array is created at the first :meth:`~RowStore.put` of its name with ``capacity`` rows (at least the rows
stored) and grows by doubling (amortised O(1) per row; on disk the file is replaced by a larger one holding the
same rows). :meth:`~RowStore.get` returns ``float32`` copies: ``float32`` rows exactly as put, ``float16`` rows
rounded once when put (relative error <= 2**-11).

Size accounting: :meth:`~RowStore.row_bytes` (one row of every array, or of given values) and
:meth:`~RowStore.megabytes` (``rows x row bytes / 2**20``). What a limit means (refuse, or go to disk) is the
caller's rule: the Distiller refuses over ``TrainingConfig.cache_max_mb``, ``--cache_teacher_outputs auto``
goes to disk over its memory budget.

    >>> store = RowStore("float16")
    >>> store.put(np.array([7, 3]), {"logits": np.array([[1.0, 2.0], [3.0, 4.0]])})
    >>> store.get(np.array([3, 7, 3]))["logits"].tolist(), store.holds(np.array([3, 5])), store.row_bytes()
    ([[3.0, 4.0], [1.0, 2.0], [3.0, 4.0]], False, 4)
"""
import logging
import os
from collections import OrderedDict
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from .._io import atomic_write_npy

__all__ = ["RowStore", "MB"]

logger = logging.getLogger(__name__)
#: Bytes per megabyte in every size these caches report and limit.
MB = 2 ** 20
_BLOCK = 4096  # rows copied at a time when a file grows


class RowStore:
    """Rows of named arrays keyed by row ids (see the module doc): ``dtype`` ``"float32"``/``"float16"``,
    ``paths`` the ``.npy`` file of a name (None: in memory), ``capacity`` the rows an array starts with."""

    def __init__(self, dtype, paths: Optional[Callable[[str], str]] = None, capacity: int = 64):
        self.dtype, self.paths, self.capacity = np.dtype(dtype), paths, capacity
        self.slots: Dict[int, int] = {}
        self.arrays: "OrderedDict[str, np.ndarray]" = OrderedDict()
        self.files: List[str] = []  # the files this store created (in creation order, each once)

    def __len__(self) -> int:
        """The rows stored."""
        return len(self.slots)

    # ------------------------------------------------------------------------------------------ sizes
    def row_bytes(self, values: Optional[Mapping[str, np.ndarray]] = None) -> int:
        """Bytes of one row in this store's dtype: of ``values`` (name -> ``[B, ...]``), else of the arrays."""
        shapes = [v.shape[1:] for v in (self.arrays if values is None else values).values()]
        return sum(int(np.prod(shape, dtype=np.int64)) for shape in shapes) * self.dtype.itemsize

    def megabytes(self, rows: Optional[int] = None, row_bytes: Optional[int] = None) -> float:
        """``rows`` (default: those stored) x ``row_bytes`` (default: :meth:`row_bytes`) in MB."""
        rows = len(self.slots) if rows is None else rows
        return rows * (self.row_bytes() if row_bytes is None else row_bytes) / MB

    def row_shape(self, name: str) -> Optional[Tuple[int, ...]]:
        """The row shape of ``name``'s array (None: nothing stored under ``name`` yet)."""
        array = self.arrays.get(name)
        return None if array is None else tuple(array.shape[1:])

    # ------------------------------------------------------------------------------------------ the rows
    def holds(self, ids: np.ndarray) -> bool:
        """True when every id of ``ids`` (int ``[B]``, B > 0) has its row stored."""
        return bool(len(ids)) and all(int(i) in self.slots for i in ids)

    def get(self, ids: np.ndarray) -> "OrderedDict[str, np.ndarray]":
        """``{name: float32 [B, *row shape]}``: the stored rows of ``ids`` (every id stored: :meth:`holds`)."""
        positions = [self.slots[int(i)] for i in ids]
        return OrderedDict((name, np.asarray(array[positions], dtype=np.float32))
                           for name, array in self.arrays.items())

    def put(self, ids: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        """Store row ``k`` of each ``values[name]`` (``[B, *row shape]``, one shape per name for the store's
        life) as the row of ``ids[k]`` (new ids get the next rows; a stored row is overwritten)."""
        for i in dict.fromkeys(int(i) for i in ids):
            if i not in self.slots:
                self.slots[i] = len(self.slots)
        positions = [self.slots[int(i)] for i in ids]
        for name, value in values.items():
            array = self.arrays.get(name)
            if array is not None and array.shape[1:] != value.shape[1:]:
                raise ValueError(f"rows of {name!r} have shape {array.shape[1:]} in this store, got {value.shape[1:]}")
            if array is None or len(self.slots) > len(array):
                rows = max(self.capacity, len(self.slots), 2 * (0 if array is None else len(array)))
                array = self.arrays[name] = self._allocate(name, (rows,) + value.shape[1:], array)
            array[positions] = np.asarray(value).astype(self.dtype, copy=False)

    def _allocate(self, name: str, shape: Tuple[int, ...], old: Optional[np.ndarray]) -> np.ndarray:
        """A zero array of ``shape`` starting with ``old``'s rows: in memory, or a memory-mapped ``.npy`` created
        atomically at ``paths(name)``."""
        if self.paths is None:
            array = np.zeros(shape, self.dtype)
            if old is not None:
                array[:len(old)] = old
            return array
        path = self.paths(name)
        old_blocks = () if old is None else (old[first:first + _BLOCK] for first in range(0, len(old), _BLOCK))
        atomic_write_npy(path, self.dtype, shape, old_blocks)
        if path not in self.files:
            self.files.append(path)
        return np.load(path, mmap_mode="r+")

    def close(self) -> None:
        """Forget every row and delete the files this store created (a file that cannot be removed: a warning)."""
        self.slots, self.arrays = {}, OrderedDict()
        for path in self.files:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
            except OSError as error:
                logger.warning("the teacher-output cache %s was not removed (%s)", path, error)
        self.files = []
