"""Data-parallel :class:`~knowledge_distill_util.engine.Distiller` runs under OneFlow's launcher (eager or
``nn.Graph``): the one implementation, for the Distiller and every ``kdu-train`` recipe.

``python -m oneflow.distributed.launch --nproc_per_node W script.py`` starts ``W`` processes that each build
the same models and data and call ``train``. With :mod:`knowledge_distill_util.engine.distributed`:

- every rank draws the same batches (same seed, :mod:`.state`) and trains on its contiguous ``1/W`` of the
  rows of each batch (the batch size must be divisible by ``W``); the batch is the **global** batch;
- the student's and the projections' weights start as rank 0's (broadcast); after ``backward`` the gradients
  are averaged over the ranks (one all-reduce), and the logged terms are averaged too: with mean losses and
  dropout off, ``W`` processes give the weights and losses of one process;
- ``use_graph``: the modules are made global tensors (broadcast) for the compiled step, each rank's rows of
  the batch become one global tensor split along dim 0, the step inputs and weights are broadcast; the
  gradients are then reduced by OneFlow; the modules are made local again when training ends;
- only rank 0 writes (lock, checkpoints, ``losses.csv``, ``losses.png``); every rank reads the checkpoint
  on resume; each rank evaluates the whole ``eval_data``;
- the watchdog of :mod:`~knowledge_distill_util.engine.distributed` ends every rank with one line naming
  the rank that failed, vanished or hung (OneFlow 0.9 would wait forever in a collective): under the
  launcher a failed ``train`` ends its process (status 1) instead of raising. When the caller started the
  watchdog already (``kdu-train`` does), the caller owns it: errors propagate and the watchdog keeps running.

In one process every method is the identity.
"""
from typing import Dict, List

import numpy as np
import oneflow as flow
import oneflow.nn as nn

from .batches import Batch, to_device

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
        self.graph = use_graph and self.active
        self.owner = False  # this object started the watchdog
        self.placed: List[nn.Module] = []

    @property
    def writer(self) -> bool:
        return self.rank == 0

    def start(self, trainable: nn.Module) -> None:
        """Check the node layout, start the watchdog (unless running), give every rank rank 0's weights."""
        if not self.active:
            return
        self.owner = not self.dist.watchdog_running()
        if self.owner:
            self.dist.check_local_rank()
            self.dist.start_watchdog()
        with flow.no_grad():
            for tensor in list(trainable.parameters()) + list(trainable.buffers()):
                flow.comm.broadcast(tensor, 0)

    # ------------------------------------------------------------------ nn.Graph: global tensors
    def _placement(self, device):
        device = device if isinstance(device, flow.device) else flow.device(device)
        return flow.placement(device.type, ranks=list(range(self.world)))

    def place(self, module: nn.Module, device, optimizer=None) -> None:
        """``use_graph``: make ``module`` global (broadcast), in place, until :meth:`unplace`. OneFlow replaces
        each parameter by a new global one: ``optimizer``'s groups are pointed at them."""
        if not self.graph:
            return
        names = {id(p): name for name, p in module.named_parameters()}
        module.to_global(placement=self._placement(device), sbp=flow.sbp.broadcast)
        self.placed.append(module)
        if optimizer is not None:
            placed = dict(module.named_parameters())
            for group in optimizer.param_groups:
                group._parameters = [placed[names[id(p)]] if id(p) in names else p for p in group.parameters]

    def unplace(self) -> None:
        """Undo :meth:`place` (every rank keeps the full, identical weights)."""
        for module in self.placed:
            for parameter in module.parameters():
                parameter.grad = None  # the graph's gradients are lazy tensors that cannot leave it
            module.to_local()
        self.placed = []

    def rows(self, value: flow.Tensor) -> flow.Tensor:
        """``use_graph``: this rank's rows of a batch tensor as the global batch (split along dim 0); a tensor
        already global (a step input, :meth:`shared`) is left as it is."""
        if not self.graph or value.is_global:
            return value
        return value.to_global(placement=self._placement(value.device), sbp=flow.sbp.split(0))

    def shared(self, value, device) -> flow.Tensor:
        """A value every rank has (a step input, the weights) as a tensor for the compiled step (broadcast)."""
        tensor = flow.tensor(value, device=device) if isinstance(value, np.ndarray) else to_device(value, device)
        if not self.graph:
            return tensor
        return tensor.to_global(placement=self._placement(tensor.device), sbp=flow.sbp.broadcast)

    def local(self, tensor: flow.Tensor) -> flow.Tensor:
        """A (possibly global) result as this rank's full local value."""
        return tensor.to_global(sbp=flow.sbp.broadcast).to_local() if tensor.is_global else tensor

    def saved(self, state):
        """A state to save: global tensors as their full local values."""
        return self.dist.to_local_state(state) if self.active else state

    def loadable(self, state):
        """A saved (local) state made loadable into placed modules or graphs."""
        if not self.graph or not self.placed:
            return state
        placement = self._placement(next(self.placed[0].parameters()).placement.type)
        return self.dist._map_tensors(state, lambda t: t.to_global(placement=placement, sbp=flow.sbp.broadcast))

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
        """Average the gradients over the ranks (eager)."""
        if self.active and not self.graph:
            self.dist.all_reduce_gradients(parameters)

    def values(self, terms: Dict[str, float]) -> Dict[str, float]:
        """The terms averaged over the ranks (the one-process values of the global batch)."""
        if not self.active:
            return terms
        return dict(zip(terms, self.dist.mean_across_ranks(list(terms.values()))))

    def failed(self, error: BaseException) -> None:
        """Tell the other ranks and end this process (see the module doc); nothing in one process, nor when
        the caller owns the watchdog (the error propagates to it)."""
        self.unplace()
        if self.active and self.owner:
            self.dist.fail(f"{type(error).__name__}: {error}")

    def finished(self) -> None:
        self.unplace()
        if self.active and self.owner:
            self.dist.stop_watchdog()
