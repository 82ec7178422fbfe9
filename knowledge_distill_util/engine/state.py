"""Random state, data position and checkpoints of a :class:`~knowledge_distill_util.engine.Distiller` run.

Exact resume rests on three rules:

1. Each epoch starts with :func:`seed_epoch`: Python's, NumPy's and OneFlow's global generators, and the
   ``generator`` of the data and of its samplers, are seeded from ``(seed, epoch)`` before ``iter(data)``, so
   a shuffling ``DataLoader`` yields the same order in every run. (OneFlow 0.9's ``DataLoader`` shuffles
   with its ``generator``, by default ONE ``flow.Generator`` shared by every loader of the process, which
   each ``iter()`` of any loader advances.)
2. In eager mode every dropout generator is seeded from ``(seed, step)`` before each step
   (:func:`~knowledge_distill_util.engine.seeding.reseed`).
   With ``TrainingConfig(seed_epochs=False)`` the global generators are left alone: the data orders itself
   (data with a ``set_epoch(epoch)`` method, like a ``DistributedSampler``, is told each epoch in any case).
3. A checkpoint stores the epoch, the batches consumed in it and the three global generators' states; a
   resumed run seeds that epoch, draws (and drops) those batches, then restores the states.

Checkpoints go through :mod:`knowledge_distill_util.engine.checkpoint` (atomic, ``LATEST``):
``model_state`` is the student's and the projections' ``state_dict``, ``optimizer_state`` the optimizer's
(``nn.Graph``: the graph's), ``state`` the JSON of :func:`capture_state`.
"""
import random
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np
import oneflow as flow

__all__ = ["seed_epoch", "start_epoch", "capture_state", "restore_rng", "BatchStream"]

_GENERATOR = type(flow.Generator("cpu"))  # flow.Generator is a function in OneFlow 0.9


def _derived(seed: int, *keys: int) -> int:
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def _generators(data):
    """The OneFlow generators of ``data``, its sampler and its batch sampler (and that one's sampler)."""
    batch_sampler = getattr(data, "batch_sampler", None)
    owners = (data, getattr(data, "sampler", None), batch_sampler, getattr(batch_sampler, "sampler", None))
    found = {}
    for owner in owners:
        generator = getattr(owner, "generator", None)
        if isinstance(generator, _GENERATOR):
            found[id(generator)] = generator
    return list(found.values())


def seed_epoch(seed: int, epoch: int, data=None) -> None:
    """Seed Python's, NumPy's and OneFlow's global generators and those of ``data`` from ``(seed, epoch)``."""
    value = _derived(seed, epoch)
    random.seed(value)
    np.random.seed(value)
    flow.manual_seed(value)
    for generator in _generators(data):
        generator.manual_seed(value)


def start_epoch(data, seed: int, epoch: int, seed_epochs: bool = True) -> None:
    """Before ``iter(data)`` of ``epoch``: :func:`seed_epoch` (``seed_epochs``), ``data.set_epoch(epoch)`` (if any)."""
    if seed_epochs:
        seed_epoch(seed, epoch, data)
    set_epoch = getattr(data, "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)


def capture_state(epoch: int, done: int, use_graph: bool) -> Dict[str, Any]:
    """The JSON-able resume state: the data position and the global generators' states."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, extra = random.getstate()
    return {"epoch": epoch, "done": done, "use_graph": use_graph,
            "flow_rng": flow.get_rng_state().numpy().tolist(),
            "numpy_rng": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
            "python_rng": [version, list(internal), extra]}


def restore_rng(state: Dict[str, Any]) -> None:
    """Put back the generators' states of :func:`capture_state` (those it holds: a recipe checkpoint of
    earlier versions holds OneFlow's only)."""
    if "flow_rng" in state:
        flow.set_rng_state(flow.tensor(state["flow_rng"], dtype=flow.uint8))
    if "numpy_rng" in state:
        name, keys, pos, has_gauss, gauss = state["numpy_rng"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "python_rng" in state:
        version, internal, extra = state["python_rng"]
        random.setstate((version, tuple(internal), extra))


class BatchStream:
    """The batches of ``data`` epoch after epoch (see the module doc), with their position.

    ``resume``: ``(epoch, done, state)`` of a checkpoint: that epoch's first ``done`` batches are drawn and
    dropped, then the generators are restored from ``state``. ``seed_epochs``: see the module doc. Raises
    ``ValueError`` when the data yields no batch, or fewer than the checkpoint consumed.
    """

    def __init__(self, data, seed: int, resume: Optional[Tuple[int, int, Dict]] = None, seed_epochs: bool = True):
        self.data, self.seed, self.seed_epochs = data, seed, seed_epochs
        self.epoch, self.done = (resume[0], resume[1]) if resume else (0, 0)
        self._iterator = self._start(resume)

    def _start(self, resume) -> Iterator:
        start_epoch(self.data, self.seed, self.epoch, self.seed_epochs)
        iterator = iter(self.data)
        if resume is not None:
            for index in range(self.done):
                if next(iterator, _END) is _END:
                    raise ValueError(f"the data yields {index} batches in epoch {self.epoch}, but the checkpoint "
                                     f"consumed {self.done}; resume with the same data")
            restore_rng(resume[2])
        return iterator

    def next(self):
        """The next batch (a new epoch begins when the data is exhausted)."""
        batch = next(self._iterator, _END)
        if batch is _END:
            if self.done == 0:
                raise ValueError(f"the data yielded no batch in epoch {self.epoch}; give a non-empty, re-iterable "
                                 f"loader (a generator is exhausted after one pass)")
            self.epoch, self.done = self.epoch + 1, 0
            self._iterator = self._start(None)
            return self.next()
        self.done += 1
        return batch


_END = object()
