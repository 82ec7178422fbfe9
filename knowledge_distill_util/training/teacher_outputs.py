"""The teacher's hidden states and attentions on the training rows, computed once per stage and reused every
epoch (``--cache_teacher_outputs``; the teacher's logits alone are cached by :mod:`.teacher_cache`).

The teacher runs in eval mode under ``no_grad``, so what it returns for a row depends only on the row. Before a
stage whose objective reads teacher layers (``reps``, ``atts``, ``scores``, ``queries``, ``keys``, ``values``),
:func:`build_cache`:

1. finds which teacher tensors the objective reads: one call of the objective on the stage's first batch
   (student in eval mode, no gradients, nothing drawn from a random generator) with the teacher's per-layer
   lists wrapped so that every entry read is recorded (:class:`_Recording`). Only those entries are kept:
   TinyBERT's intermediate stage with 2 of 6 layers reads ``reps`` 0, 3, 6 and ``atts`` 2, 5; MiniLM the last
   layer's ``scores`` and ``values``; the logits are kept when the objective reads them;
2. runs the teacher over the rows in epoch 0's batches (the training batch size and order, so epoch 0 gets the
   very values the uncached run computes) and stores each row's entries, flattened and concatenated, as one
   row of ``[N, D]`` ``float16`` (``--cache_teacher_dtype float32``: the stored values are the computed ones)
   in visiting order, in the engine's :class:`~knowledge_distill_util.engine.row_store.RowStore` (the storage
   of the Distiller's teacher cache too) keyed by row id;
3. holds them in memory, or in ``<model_save_dir>/teacher_outputs.<stage>.npy`` (``.<stage>.rank<r>.npy``
   under the launcher: each rank caches every row, for the rows of its shard change with the epoch), created
   beside and renamed (zero-filled, sized for the rows), filled memory-mapped, and deleted when the stage ends,
   also when it fails (a resumed run computes it again).
   ``auto`` keeps up to :data:`MEMORY_BUDGET_MB` in memory, a larger cache on disk; the log says how many MB
   and where.

Each batch then carries the rows of its entries as inputs named :func:`Entry.key` (``cached_teacher_reps_3``,
float32 tensors); :class:`CacheLayout` turns them back into what the objective reads (lists of the original
length whose cached entries are tensors, :class:`CachedLayers`), and the teacher is not run.
"""
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import oneflow as flow

from .._write_errors import _free_bytes
from ..engine import distributed
from ..engine.row_store import MB, RowStore
from ..config.schema import ConfigError
from .objective_schedules import ScheduledArgs, schedule_factors

__all__ = ["MEMORY_BUDGET_MB", "CACHE_FILE", "Entry", "CacheLayout", "CachedLayers", "TeacherOutputCache",
           "build_cache", "reads_teacher_layers"]

logger = logging.getLogger(__name__)
#: ``auto`` holds a cache of at most this many MB in memory; a larger one goes to disk.
MEMORY_BUDGET_MB = 1024
#: The file of ``--cache_teacher_outputs disk`` in ``--model_save_dir``: ``teacher_outputs.<stage>.npy``.
CACHE_FILE = "teacher_outputs.{stage}{rank}.npy"
_PREFIX = "cached_"
_ROWS = "rows"  # the name of the store's one array, [N_unique, D]


def reads_teacher_layers(objective) -> bool:
    """True when ``objective`` reads a teacher output other than the logits (what this module caches)."""
    return any(name != "logits" for name in objective.teacher_outputs)


@dataclass(frozen=True)
class Entry:
    """One cached teacher tensor: ``name`` (``teacher_reps``), ``index`` in its per-layer list (None: a tensor,
    the logits) and the shape of one row."""

    name: str
    index: Optional[int]
    shape: Tuple[int, ...]

    @property
    def key(self) -> str:
        """The batch input carrying it: ``cached_teacher_logits``, ``cached_teacher_reps_3``."""
        return _PREFIX + self.name + ("" if self.index is None else f"_{self.index}")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


class CachedLayers(Sequence):
    """A teacher's per-layer list rebuilt from the cache: ``len()`` of the original list, the cached entries as
    tensors; reading an entry that was not cached raises ``RuntimeError`` (the objective read other entries
    than on the first batch)."""

    def __init__(self, name: str, length: int, items: Dict[int, flow.Tensor]):
        self.name, self.length, self.items = name, length, items

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.length))]
        position = index + self.length if index < 0 else index
        if not 0 <= position < self.length:
            raise IndexError(f"{self.name} index {index} out of range ({self.length} entries)")
        if position not in self.items:
            raise RuntimeError(f"{self.name}[{index}] was not cached (cached: {sorted(self.items)}): the objective "
                               f"reads other teacher entries than on the stage's first batch; run without "
                               f"--cache_teacher_outputs")
        return self.items[position]


class _Recording(Sequence):
    """A per-layer list that records which entries are read (iteration reads them all)."""

    def __init__(self, items):
        self.items, self.read = list(items), set()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self.items)))]
        item = self.items[index]  # IndexError ends an iteration, as for a list
        self.read.add(index + len(self.items) if index < 0 else index)
        return item


@dataclass(frozen=True)
class CacheLayout:
    """Which teacher tensors are cached (``entries``) and the length of each per-layer list (``lengths``)."""

    entries: Tuple[Entry, ...]
    lengths: Dict[str, int]

    @property
    def keys(self) -> Tuple[str, ...]:
        return tuple(entry.key for entry in self.entries)

    def tensors(self, named: Dict[str, flow.Tensor]) -> Dict[str, object]:
        """``{teacher_logits: [B, C], teacher_reps: CachedLayers, ...}`` from the batch inputs ``named``."""
        items: Dict[str, Dict[int, flow.Tensor]] = {name: {} for name in self.lengths}
        out: Dict[str, object] = {}
        for entry in self.entries:
            if entry.index is None:
                out[entry.name] = named[entry.key]
            else:
                items[entry.name][entry.index] = named[entry.key]
        out.update((name, CachedLayers(name, self.lengths[name], items[name])) for name in self.lengths)
        return out


class TeacherOutputCache:
    """The cached rows: one ``[N_unique, D]`` array (``float16``/``float32``, in memory or memory-mapped from
    ``path``) of a :class:`~knowledge_distill_util.engine.row_store.RowStore` keyed by training row id, ``layout``
    the entries of a row."""

    def __init__(self, layout: CacheLayout, store: RowStore, path: Optional[str]):
        self.layout, self.store, self.path = layout, store, path

    @property
    def megabytes(self) -> float:
        return self.store.megabytes()

    def batch(self, index: np.ndarray) -> Dict[str, np.ndarray]:
        """``{entry key: float32 [B, *shape]}`` of the training rows ``index``."""
        block = self.store.get(index)[_ROWS]
        out, start = {}, 0
        for entry in self.layout.entries:
            out[entry.key] = block[:, start:start + entry.size].reshape((len(index),) + entry.shape)
            start += entry.size
        return out

    def close(self) -> None:
        """Forget the rows; a disk cache: delete its file (this run's own, :data:`CACHE_FILE` in ``model_save_dir``)."""
        self.store.close()


def _teacher(step, batch: Dict[str, flow.Tensor]) -> Dict[str, object]:
    return step.teacher_tensors(batch["input_ids"], batch["input_mask"], batch["segment_ids"])


def _probe(step, batch: Dict[str, flow.Tensor]) -> Tuple[Dict[str, object], Dict[str, set]]:
    """The teacher tensors of ``batch`` the objective reads and, per list, the entries it reads (see the module
    doc); the student is put back in its mode."""
    if getattr(step.student, "step_input_names", None):
        raise ConfigError("--cache_teacher_outputs cannot probe a student that draws inputs at every step "
                          "(BERT-of-Theseus); drop --cache_teacher_outputs")
    student, was_training = step.student, step.student.training
    student.eval()
    try:
        with flow.no_grad():
            tensors = step.student_tensors(batch["input_ids"], batch["input_mask"], batch["segment_ids"], {})
            tensors.update(labels=batch["labels"], input_mask=batch["input_mask"])
            teacher = {name: value for name, value in _teacher(step, batch).items() if name in step.objective.inputs}
            recorded = {name: _Recording(value) if isinstance(value, (list, tuple)) else value
                        for name, value in teacher.items()}
            args = step.args
            if step.scheduled:
                args = ScheduledArgs(args, flow.tensor(schedule_factors(0, 1), device=batch["input_ids"].device))
            step.objective(args, **tensors, **recorded)
    finally:
        student.train(was_training)
    reads = {name: value.read for name, value in recorded.items() if isinstance(value, _Recording)}
    return teacher, reads


def _layout(teacher: Dict[str, object], reads: Dict[str, set]) -> CacheLayout:
    entries = []
    for name in sorted(teacher):
        value = teacher[name]
        if name in reads:
            entries += [Entry(name, i, tuple(value[i].shape[1:])) for i in sorted(reads[name])]
        else:
            entries.append(Entry(name, None, tuple(value.shape[1:])))
    return CacheLayout(tuple(entries), {name: len(teacher[name]) for name in reads})


def _flat(layout: CacheLayout, teacher: Dict[str, object], dtype) -> np.ndarray:
    """``[B, D]`` of the layout's entries of one batch's teacher tensors."""
    parts = [(teacher[e.name] if e.index is None else teacher[e.name][e.index]).numpy() for e in layout.entries]
    return np.concatenate([p.reshape(p.shape[0], -1) for p in parts], axis=1).astype(dtype)


def _path(directory: str, stage: str) -> str:
    rank = f".rank{distributed.rank()}" if distributed.world_size() > 1 else ""
    return os.path.join(directory, CACHE_FILE.format(stage=stage, rank=rank))


def _store(mode: str, dtype: str, megabytes: float, directory: str, stage: str) -> RowStore:
    """An empty store for ``megabytes`` of rows: in memory (``memory``; ``auto`` up to :data:`MEMORY_BUDGET_MB`),
    else in its :func:`_path` file, refused (:class:`ConfigError`) when the free space is short of it."""
    if mode == "memory" or (mode == "auto" and megabytes <= MEMORY_BUDGET_MB):
        return RowStore(dtype)
    path = _path(directory, stage)
    free = _free_bytes(path)
    if free is not None and free < megabytes * MB * 1.05:
        raise ConfigError(f"--cache_teacher_outputs {mode}: the teacher outputs of stage {stage} need "
                          f"{megabytes:.0f} MB but {os.path.dirname(path)} has {free / MB:.0f} MB free; free "
                          f"some space, pass --cache_teacher_outputs memory, or drop the flag")
    return RowStore(dtype, lambda name: path)


def build_cache(step, features, batches: List[np.ndarray], device, *, mode: str, dtype: str, directory: str,
                stage: str) -> TeacherOutputCache:
    """The cache of the module doc: ``step`` a :class:`~.trainer.LossStep`, ``features`` the training rows,
    ``batches`` epoch 0's row indices, ``mode`` ``memory``/``disk``/``auto``, ``dtype`` ``float16``/``float32``,
    ``directory`` the run's ``model_save_dir``. A disk cache that does not fit the free space is refused
    (:class:`ConfigError`) before the teacher runs."""
    def tensors(index):
        arrays = features.as_dict(index)
        return {key: flow.tensor(arrays[key], device=device)
                for key in ("input_ids", "input_mask", "segment_ids", "labels")}

    began = time.time()
    teacher, reads = _probe(step, tensors(batches[0]))
    layout = _layout(teacher, reads)
    rows = len(set(int(i) for index in batches for i in index))
    megabytes = rows * sum(entry.size for entry in layout.entries) * np.dtype(dtype).itemsize / MB
    store = _store(mode, dtype, megabytes, directory, stage)
    store.capacity = rows
    try:
        for number, index in enumerate(batches):  # each row stored from the first batch that visits it
            keep = [at for at, row in enumerate(index) if int(row) not in store.slots]
            if keep:
                with flow.no_grad():
                    flat = _flat(layout, teacher if number == 0 else _teacher(step, tensors(index)), dtype)
                store.put(index[keep], {_ROWS: flat[keep]})
    except BaseException:
        store.close()
        raise
    path = store.files[0] if store.files else None
    shown = ", ".join(e.name[len("teacher_"):] + ("" if e.index is None else f"[{e.index}]") for e in layout.entries)
    logger.info("stage %s: teacher outputs cached once for %d rows (%s), %.1f MB %s %s; reused every epoch "
                "(computed in %.1f s)", stage, rows, shown, megabytes, dtype,
                "in memory" if path is None else f"in {path}", time.time() - began)
    return TeacherOutputCache(layout, store, path)
