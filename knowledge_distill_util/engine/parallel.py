"""Data-parallel :class:`~knowledge_distill_util.engine.Distiller` runs under OneFlow's launcher (eager mode).

``python -m oneflow.distributed.launch --nproc_per_node W script.py`` starts ``W`` processes that each build
the same models and data and call ``train``. With :mod:`knowledge_distill_util.engine.distributed`:

- every rank draws the same batches (same seed, :mod:`.state`) and trains on its contiguous ``1/W`` of the
  rows of each batch (the batch size must be divisible by ``W``); the batch is the **global** batch;
- the student's and the projections' weights start as rank 0's (broadcast); after ``backward`` the gradients
  are averaged over the ranks (one all-reduce), and the logged terms are averaged too: with mean losses and
  dropout off, ``W`` processes give the weights and losses of one process;
- only rank 0 writes (lock, checkpoints, ``losses.csv``, ``losses.png``); every rank reads the checkpoint
  on resume; each rank evaluates the whole ``eval_data``;
- the watchdog of :mod:`~knowledge_distill_util.engine.distributed` ends every rank with one line naming
  the rank that failed, vanished or hung (OneFlow 0.9 would wait forever in a collective): under the
  launcher a failed ``train`` ends its process (status 1) instead of raising.

In one process every method is the identity.
"""
from typing import Dict, List

import oneflow as flow
import oneflow.nn as nn

from .batches import Batch

__all__ = ["Ranks"]


def _rows_of(value, rows: int) -> bool:
    return isinstance(value, flow.Tensor) and value.ndim > 0 and int(value.shape[0]) == rows


class Ranks:
    """This process's part of a data-parallel run (see the module doc)."""

    def __init__(self, use_graph: bool):
        from . import distributed
        self.dist = distributed
        self.world, self.rank = distributed.world_size(), distributed.rank()
        self.active = self.world > 1
        if self.active and use_graph:
            raise ValueError(f"a data-parallel Distiller ({self.world} processes) trains eagerly: set "
                             f"TrainingConfig(use_graph=False)")

    @property
    def writer(self) -> bool:
        return self.rank == 0

    def start(self, trainable: nn.Module) -> None:
        """Check the node layout, start the watchdog, give every rank rank 0's weights."""
        if not self.active:
            return
        self.dist.check_local_rank()
        self.dist.start_watchdog()
        with flow.no_grad():
            for tensor in list(trainable.parameters()) + list(trainable.buffers()):
                flow.comm.broadcast(tensor, 0)

    def shard(self, batch: Batch) -> Batch:
        """This rank's contiguous rows of every tensor with the batch's row count."""
        if not self.active:
            return batch
        rows = batch.rows()
        if rows % self.world:
            raise ValueError(f"a batch of {rows} rows cannot be cut into {self.world} equal shards; use a batch size "
                             f"divisible by the number of processes (and DataLoader(drop_last=True))")
        size = rows // self.world
        cut = slice(self.rank * size, (self.rank + 1) * size)

        def part(value):
            return value[cut] if _rows_of(value, rows) else value

        raw = batch.raw
        raw = {k: part(v) for k, v in raw.items()} if isinstance(raw, dict) else type(raw)(part(v) for v in raw)
        return Batch(tuple(part(v) for v in batch.args), {k: part(v) for k, v in batch.kwargs.items()},
                     part(batch.labels), raw)

    def after_backward(self, parameters: List[nn.Parameter]) -> None:
        """Average the gradients over the ranks."""
        if self.active:
            self.dist.all_reduce_gradients(parameters)

    def values(self, terms: Dict[str, float]) -> Dict[str, float]:
        """The terms averaged over the ranks (the one-process values of the global batch)."""
        if not self.active:
            return terms
        return dict(zip(terms, self.dist.mean_across_ranks(list(terms.values()))))

    def failed(self, error: BaseException) -> None:
        """Tell the other ranks and end this process (see the module doc); nothing in one process."""
        if self.active:
            self.dist.fail(f"{type(error).__name__}: {error}")

    def finished(self) -> None:
        if self.active:
            self.dist.stop_watchdog()
