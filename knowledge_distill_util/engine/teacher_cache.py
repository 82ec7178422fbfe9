"""Teacher-output caching for the :class:`~knowledge_distill_util.engine.Distiller`: the teacher runs once per row.

    TrainingConfig(output_dir=..., cache_teacher_outputs="memory", cache_dtype="float32", index_key="index")
    TrainingConfig(output_dir=..., cache_teacher_outputs="disk")   # memory-mapped .npy files in output_dir

**Batches** are dicts carrying an integer row id per example under ``index_key``, shape ``[B]`` (e.g. a
``Dataset`` returning ``{"input": x, "labels": y, "index": i}``). The id is taken out of the batch before the
models are called (the adaptors still see it in the raw batch; :meth:`Distiller.evaluate` drops it too).

**Per batch**: when every id of the batch is cached, the teacher does not run and its outputs are rebuilt from
the cache as float32 tensors on the student's device; otherwise the teacher runs on the batch and each row's
outputs are stored (a lazy per-row cache: shuffled loaders, a short last batch and each rank's rows of a
data-parallel run all work). Only what the losses read from the teacher is stored, the *teacher reads* of
:meth:`~.objective.DistillStep.teacher_reads`: ``"logits"`` (through ``adaptor_T``, averaged over several
teachers; when ``logit_weight > 0``) and ``"match<i>.<j>"`` (the teacher tensors of intermediate match ``i``:
module-path captures, adaptor features by index). Each must have the batch's rows as its first dimension and
the same shape for every row of the run (pad every batch to one length).

**Exactness**: ``cache_dtype="float32"`` stores the teacher's values unchanged, so the losses equal an uncached
run's bit for bit (the teacher runs in eval mode under ``no_grad``, and a row's outputs must not depend on the
other rows of its batch, true of any model without batch statistics in eval mode). ``"float16"`` halves the
memory and rounds each value (relative error <= 2**-11); every batch reads the rounded values, those where the
teacher runs too, so that every epoch and a resumed run see the same teacher values.

**Memory**: ``rows x bytes per row``; the limit is ``TrainingConfig.cache_max_mb`` (default 1024 MB). A run
whose data set (``len(data.dataset)``, else ``len(data)`` batches of the first batch's size) would exceed it is
refused before the first step, else the first batch that would exceed it stops the run; the message says to
raise the limit, use ``cache_dtype="float16"``, or set ``cache_max_mb=None`` (no limit).

**Data-parallel** (OneFlow's launcher, :mod:`.parallel`): each process caches the rows it trains on (its part
of each global batch) in a cache of its own, and its teacher runs only when its part holds a row it has not
cached; the losses equal an uncached run's (float32: bit for bit). A loader that reshuffles each epoch hands a
process other rows each epoch, so its teacher runs again for those: the cache pays off fully with a fixed order
(or one process). The limit applies to each process for all the data's rows (the most it can cache).

**Logged**: at the end of the first full pass over the data (or at the end of a shorter run), one line: the rows
cached, the tensors (row shapes), MB and dtype (data-parallel: rank 0's cache, by rank 0 only).

**Resume**: the cache lives in memory for one :meth:`Distiller.train` call; a resumed run starts with an empty
cache and fills it lazily again (the teacher runs again for each row's first batch after the resume; with
float32 the numbers are unchanged).

**Storage**: a :class:`~.row_store.RowStore` (the store of the recipes' ``--cache_teacher_outputs`` too), one
array per teacher read, ``[rows, *row shape]``, sized for the data set's rows and grown by doubling past them.

**In memory or on disk**: ``cache_teacher_outputs="auto"`` decides after the probe: in memory when the data's rows
fit :data:`AUTO_MEMORY_MB` (1024 MB), else on disk (also when the data has no length).
``cache_teacher_outputs="disk"`` keeps the same arrays as memory-mapped ``.npy`` files in
``<output_dir>/.kdu-teacher-cache/rank<r>/`` (each created atomically, sized for the data set's rows; the
operating system pages them in and out), deleted when ``train`` ends, also when it fails. ``cache_max_mb`` limits
them too, and a cache the file system has no room for is refused before the first step. A killed run leaves them
behind; the next ``"disk"`` run on the directory deletes them at its first store.

**Graph mode** (``use_graph=True``): the teacher runs eagerly, outside the compiled step, through the cache (only
for batches with a row not cached), and the teacher reads are inputs of a student-only ``nn.Graph``
(:meth:`~.objective.DistillStep.cached_reads`); the losses equal an uncached compiled run's (float32: bit for bit).
The compiled step's batch has no row ids (the adaptors see none there). Data-parallel: the teachers stay local
to each process; only the student and the projections become global tensors (so a compiled data-parallel
run with ``step_inputs=``, which become global too, is refused before the first step).

Not with ``objective=`` (the ``kdu-train`` recipes whose stages are objectives cache their own teacher outputs:
``--cache_teacher_outputs``): refused.

**Prefilled** (:meth:`TeacherCache.prefilled`, ``Distiller.train(teacher_logits=)``): the teacher's logits of every
row, computed beforehand, stored as float32; the teacher never runs, and a row id without a row is refused.

    >>> import numpy as np
    >>> cache = TeacherCache("float32", "index", None, "cpu")
    >>> _ = cache.reads(np.array([3, 5]), lambda: {"logits": flow.tensor([[1.0, 2.0], [3.0, 4.0]])})
    >>> cache.reads(np.array([5]), lambda: 1 / 0)["logits"].tolist()
    [[3.0, 4.0]]
"""
import logging
import os
import shutil
from collections import OrderedDict
from typing import Callable, Dict, Mapping, Optional, Tuple

import numpy as np
import oneflow as flow

from .._write_errors import _free_bytes
from .batches import Batch
from .row_store import MB, RowStore

__all__ = ["TeacherCache", "check_cache_options", "cache_directory", "CACHE_DIR", "AUTO_MEMORY_MB"]

logger = logging.getLogger(__name__)
#: The directory of ``output_dir`` holding the ``"disk"`` cache while a run trains.
CACHE_DIR = ".kdu-teacher-cache"
#: ``"auto"`` keeps a cache of at most this many MB in memory, a larger one on disk.
AUTO_MEMORY_MB = 1024


def check_cache_options(training_config, objective, teachers) -> None:
    """Refuse caching where it cannot apply: a custom ``objective``, no teacher (each its own sentence)."""
    mode = training_config.cache_teacher_outputs
    if mode == "off":
        return
    if objective is not None or not teachers:
        raise ValueError(f"cache_teacher_outputs={mode!r} caches the configuration's teacher outputs, but this "
                         f"Distiller has an objective= of its own; cache in the objective (the kdu-train recipes: "
                         f"--cache_teacher_outputs) or set cache_teacher_outputs='off'")


def cache_directory(output_dir: str, rank: int) -> str:
    """Where ``"disk"`` keeps rank ``rank``'s files: ``<output_dir>/.kdu-teacher-cache/rank<rank>``."""
    return os.path.join(output_dir, CACHE_DIR, f"rank{rank}")


def _fix(index_key: str, prefilled: bool = False) -> str:
    return (f"yield dicts with an integer row id per example under {index_key!r} (e.g. a Dataset returning "
            f"{{'input': x, 'labels': y, {index_key!r}: i}}) or "
            + ("drop teacher_logits= (the teacher then runs)" if prefilled
               else "set TrainingConfig(cache_teacher_outputs='off')"))


class TeacherCache:
    """The teacher reads of every row seen so far (see the module doc), stored in a :class:`~.row_store.RowStore`:
    ``dtype`` ``"float32"``/``"float16"``, the batches' ``index_key``, the limit ``max_mb`` (None: none), the
    ``device`` the reads come back on; ``directory``: where ``"disk"`` keeps its files (None: in memory); ``rank``
    of ``world`` processes (only rank 0 logs). While ``probing`` (the probe forward before the first step), rows
    are checked and measured, not stored."""

    def __init__(self, dtype: str, index_key: str, max_mb: Optional[float], device, directory: Optional[str] = None,
                 rank: int = 0, world: int = 1, auto: bool = False):
        self.index_key, self.max_mb, self.device, self.directory = index_key, max_mb, device, directory
        self.rank, self.world, self.auto = rank, world, auto
        self.store = self._store(dtype)
        self.probing, self.row_bytes = False, 0
        self.wrote = False  # "disk": this cache created its files (only then does close delete the directory)
        self.closed: Optional[str] = None  # the summary when closed
        self.teacher_runs, self.reported, self.first_epoch = 0, False, None
        self.names: Tuple[str, ...] = ()  # the teacher reads' names, in order (set by the probe)
        self.complete: Optional[int] = None  # prefilled with the rows 0..complete-1: the teacher never runs

    def _store(self, dtype) -> RowStore:
        directory = self.directory
        return RowStore(dtype, None if directory is None else (lambda name: os.path.join(directory, f"{name}.npy")))

    @classmethod
    def prefilled(cls, logits, index_key: str, device) -> "TeacherCache":
        """A cache holding ``logits`` (``[N, ..., C]``, computed beforehand) as every row's ``"logits"``, row ``i`` for
        id ``i``: the teacher never runs (a batch with an id outside ``0..N-1`` is refused)."""
        array = np.asarray(logits.numpy() if isinstance(logits, flow.Tensor) else logits)
        if array.ndim < 2 or array.shape[0] == 0 or not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"teacher_logits must be a float array [N, ..., C] (one row per row id), got "
                             f"{array.dtype} of shape {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError("teacher_logits holds NaN or infinite values; recompute the teacher's logits")
        cache = cls("float32", index_key, None, device)
        cache.store.capacity = len(array)
        cache.store.put(np.arange(len(array)), {"logits": array.astype(np.float32, copy=False)})
        cache.names, cache.complete, cache.reported = ("logits",), len(array), True
        return cache

    @property
    def dtype(self) -> np.dtype:
        return self.store.dtype

    @property
    def slots(self) -> Dict[int, int]:
        """Row id -> stored row (:attr:`.RowStore.slots`)."""
        return self.store.slots

    @property
    def arrays(self) -> "OrderedDict[str, np.ndarray]":
        """Teacher read -> ``[capacity, *row shape]`` (:attr:`.RowStore.arrays`)."""
        return self.store.arrays

    @property
    def capacity(self) -> int:
        """The rows an array starts with (:meth:`check_capacity` sets the data set's)."""
        return self.store.capacity

    @capacity.setter
    def capacity(self, rows: int) -> None:
        self.store.capacity = rows

    # ------------------------------------------------------------------------------------------ the batch
    def take_ids(self, batch: Batch) -> Tuple[Batch, np.ndarray]:
        """``(batch without the ids, ids int64 [B])``; one sentence when the batch carries no usable ids."""
        key, prefilled = self.index_key, self.complete is not None
        what = "teacher_logits=" if prefilled else "cache_teacher_outputs"
        if not isinstance(batch.raw, Mapping):
            raise TypeError(f"{what} needs dict batches, got a {type(batch.raw).__name__} batch; "
                            f"{_fix(key, prefilled)}")
        if key not in batch.kwargs:
            raise ValueError(f"{what} needs the row ids under TrainingConfig.index_key={key!r}, but "
                             f"the batch has only {', '.join(map(repr, batch.raw))}; {_fix(key, prefilled)}")
        value = batch.kwargs[key]
        ids = value.numpy() if isinstance(value, flow.Tensor) else np.asarray(value)
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"the row ids under {key!r} must be integers, got dtype {ids.dtype}; "
                            f"{_fix(key, prefilled)}")
        kwargs = {k: v for k, v in batch.kwargs.items() if k != key}
        rows = Batch(batch.args, kwargs, batch.labels).rows()
        if ids.shape != (rows,):
            raise ValueError(f"the row ids under {key!r} must have shape [{rows}] (one per example of the batch), "
                             f"got {ids.shape}; {_fix(key, prefilled)}")
        return Batch(batch.args, kwargs, batch.labels, batch.raw), ids.astype(np.int64)

    # ------------------------------------------------------------------------------------------ the rows
    def reads(self, ids: np.ndarray, run_teacher: Callable[[], Mapping[str, flow.Tensor]]) -> Dict[str, flow.Tensor]:
        """The teacher reads of the rows ``ids``: rebuilt from the cache when all are cached, else
        ``run_teacher()`` (whose rows are then stored) as it returned them."""
        if self.store.holds(ids):
            return OrderedDict((name, flow.tensor(rows, device=self.device))
                               for name, rows in self.store.get(ids).items())
        if self.complete is not None:
            outside = next(int(i) for i in ids.tolist() if int(i) not in self.slots)
            raise ValueError(f"the batch holds the row id {outside} under {self.index_key!r}, but teacher_logits has "
                             f"rows for the ids 0..{self.complete - 1} only; give one row of logits per row id")
        reads = run_teacher()
        values = self._rows(ids, reads)
        self.names = tuple(values)
        self.row_bytes = self.store.row_bytes(values)
        new = len(dict.fromkeys(i for i in ids.tolist() if int(i) not in self.slots))
        self._check_budget(len(self.slots) + new, self.row_bytes)
        if not self.probing:
            self.teacher_runs += 1
            if self.directory is not None and not self.wrote:
                if os.path.isdir(self.directory):
                    shutil.rmtree(self.directory)  # a killed run's files (this run holds output_dir's lock now)
                self.wrote = True
            self.store.put(ids, values)
            if self.dtype != np.float32:  # the rounded values, as every later batch of these rows reads them
                return OrderedDict((name, flow.tensor(rows, device=self.device))
                                   for name, rows in self.store.get(ids).items())
        return reads

    def _rows(self, ids: np.ndarray, reads: Mapping[str, flow.Tensor]) -> "OrderedDict[str, np.ndarray]":
        values = OrderedDict()
        for name, tensor in reads.items():
            if tensor.ndim == 0 or int(tensor.shape[0]) != len(ids):
                raise ValueError(f"cache_teacher_outputs stores the teacher's {name!r} per row, but its shape "
                                 f"{tuple(tensor.shape)} does not start with the batch's {len(ids)} rows; tap a module "
                                 f"whose output is [B, ...] or set cache_teacher_outputs='off'")
            values[name] = tensor.detach().numpy().astype(self.dtype, copy=False)
            known = self.store.row_shape(name)
            if known is not None and known != values[name].shape[1:]:
                raise ValueError(f"cache_teacher_outputs stores one row shape per tensor, but the teacher's {name!r} "
                                 f"has rows of shape {values[name].shape[1:]} in this batch and {known} "
                                 f"before; pad every batch to one length or set cache_teacher_outputs='off'")
        return values

    def close(self) -> None:
        """Forget every row (:meth:`summary` still describes them); ``"disk"``: delete its files (the directory,
        and its parent when left empty)."""
        self.closed = self.summary()
        self.store.close()
        if self.wrote and os.path.isdir(self.directory):
            shutil.rmtree(self.directory)
            try:  # the other ranks may be deleting their own directories beside it at the same time
                os.rmdir(os.path.dirname(self.directory))
            except OSError:  # not empty (another rank's files), or already deleted
                pass

    def _check_budget(self, rows: int, row_bytes: int, where: str = "at this batch") -> None:
        if self.max_mb is None or rows * row_bytes <= self.max_mb * MB:
            return
        size = self.store.megabytes(rows, row_bytes)
        raise ValueError(f"the teacher-output cache would hold {rows} rows x {row_bytes} bytes = {size:.1f} MB "
                         f"{where}, over TrainingConfig.cache_max_mb={self.max_mb:g}; "
                         f"raise cache_max_mb, use cache_dtype='float16' (half), set cache_max_mb=None (no limit) or "
                         f"cache_teacher_outputs='off'")

    def check_capacity(self, data, batch_rows: int) -> None:
        """After the probe (which measured :attr:`row_bytes`): refuse up front when the whole of ``data`` (its
        data set's rows, else ``len(data)`` batches of ``batch_rows``, the rows of a **global** batch) would
        exceed the limit, and size the arrays for it (nothing when ``data`` has no length). Data-parallel: each
        process is checked for all the rows, since a reshuffling loader hands it other rows each epoch."""
        try:
            rows = len(data.dataset)
        except (AttributeError, TypeError):
            try:
                rows = len(data) * batch_rows
            except TypeError:
                return
        self.capacity = max(1, rows)
        self._check_budget(rows, self.row_bytes, where=f"for the data's {rows} rows")
        size = self.store.megabytes(rows, self.row_bytes)
        if self.auto:
            if size <= AUTO_MEMORY_MB:
                self.directory = None
                self.store = self._store(self.dtype)
                self.capacity = max(1, rows)
            if self.rank == 0:
                logger.info("cache_teacher_outputs='auto': %.1f MB for the data's %d rows, %s", size, rows,
                            "in memory" if self.directory is None else f"on disk in {os.path.dirname(self.directory)}")
        if self.directory is not None:
            free = _free_bytes(self.directory)
            if free is not None and free < size * MB * 1.05:
                raise ValueError(f"the teacher-output cache needs {size:.0f} MB on disk for the data's {rows} rows but "
                                 f"{os.path.dirname(self.directory)} has {free / MB:.0f} MB free; free some space, use "
                                 f"cache_dtype='float16' (half) or cache_teacher_outputs='memory'")

    # ------------------------------------------------------------------------------------------ the log
    def summary(self) -> str:
        """``"<rows> rows of logits [10], match0.0 [128] (float32, 0.05 MB)"``."""
        if self.closed is not None:
            return self.closed
        shapes = ", ".join(f"{name} {list(array.shape[1:])}" for name, array in self.arrays.items()) or "no tensors"
        size = self.store.megabytes(row_bytes=self.row_bytes)
        return f"{len(self.slots)} rows of {shapes} ({self.dtype.name}, {size:.2f} MB)"

    def epoch(self, epoch: int) -> None:
        """Called with the epoch of each batch: the first time it changes, log what the first pass cached."""
        if self.first_epoch is None:
            self.first_epoch = epoch
        elif epoch != self.first_epoch:
            self.report("after the first pass")

    def report(self, when: str = "at the end of training") -> None:
        """Log :meth:`summary` once (nothing when no row was stored); data-parallel: rank 0's, by rank 0 only."""
        if not self.reported and self.slots and self.rank == 0:
            self.reported = True
            whose = "" if self.world == 1 else f" of rank 0 (of {self.world} processes, each caching its own rows)"
            logger.info("teacher-output cache%s %s: %s; the teacher ran on %d batches and runs only for rows not "
                        "cached", whose, when, self.summary(), self.teacher_runs)
