"""Data-parallel training on the processes started by OneFlow's launcher.

``python -m oneflow.distributed.launch --nproc_per_node N [--nnodes M --node_rank R --master_addr A
--master_port P] <entry point> ...`` starts ``N * M`` processes; the launcher gives each its ``RANK`` and
``WORLD_SIZE``. Without the launcher (``WORLD_SIZE`` unset or 1) every function here is a no-op and a run
is exactly the one-process run: no collective, no extra random draw, the same data order.

With ``W`` processes and ``--batch_size_per_device b``:

- **Data**: the global batch of ``W * b`` rows is the one-process batch of that size (same seed, same
  order, see :func:`~knowledge_distill_util.training.trainer.batch_indices`); rank ``r`` trains on its
  ``r``-th contiguous shard (:func:`shard`). With dropout off, ``W`` processes give the weights one process gets with batch ``W * b``.
- **Eager**: after ``backward`` the gradients are averaged over the ranks with one all-reduce
  (:func:`all_reduce_gradients`), as ``flow.nn.parallel.DistributedDataParallel`` does, whose hooks are
  not used for two reasons found in its source (OneFlow 0.9, ``oneflow/nn/parallel/distributed.py``):
  (1) it all-reduces a bucket only when every parameter in it got a gradient, and stops at the first bucket
  that did not: a trained parameter without a gradient in a step (the classifier in TinyBERT's intermediate
  stage, the successor blocks BERT-of-Theseus did not pick) then silently leaves every gradient un-reduced
  and the ranks drift apart; (2) its gradient hooks cannot be removed, so the second stage of a two-stage
  recipe (the same parameters wrapped again) scales and reduces them twice. **Graph** (``--use_graph``):
  the loss step becomes global (parameters ``broadcast``, the batch ``split(0)``) and OneFlow inserts the
  collectives. The training loop's side of both is :class:`~.parallel.Ranks`.
- **One writer**: only rank 0 (:func:`is_writer`) writes checkpoints, results, logs, the loss CSV and
  plot, ``progress.json``, the progress bar and the directory locks.
- **Evaluation** (and the teacher's cached logits) is sharded by rows and gathered (:func:`gather_rows`):
  the logits, hence the metrics, equal the one-process ones.
- **A dead rank**: OneFlow 0.9 waits forever in a collective when a peer is gone, and a process that
  raised waits forever at exit. :class:`Watchdog` keeps a TCP connection from every rank to rank 0
  (port ``KDU_WATCHDOG_PORT``, default ``MASTER_PORT + 1``); a rank that fails reports its cause, a rank
  that vanishes closes its connection, a rank silent for ``KDU_DIST_TIMEOUT`` seconds (default 60) is
  declared hung; every other rank then logs one line naming the rank and the cause and exits (status 1).
  SIGTERM (which the launcher sends every rank once one exits) ends a rank after ``SIGTERM_GRACE_S`` seconds,
  so that its line naming the failed rank is written first.
- **Nodes**: OneFlow 0.9 does not take the node layout from the launcher's ``--nnodes``/``--node_rank``: the
  master's bootstrap server counts one node per distinct IP address the ranks connect to it *from*
  (``RankInfoBootstrapServer::OnLoadServer`` records the peer address; ``RankInfoCtrlBootstrap::SetNodeSize``
  counts them) and expects rank ``r`` to use device ``r % (W / nodes)``, while the launcher sets
  ``LOCAL_RANK`` per node. Two launchers on one machine that reach the master at the same address (127.0.0.1
  twice; 127.0.0.2 too, whose connections leave from 127.0.0.1) form one node, rank 1 keeps ``LOCAL_RANK=0``,
  and the first collective aborts in C++. :func:`check_local_rank` refuses that layout with one sentence first;
  on one machine give the second node the machine's own address as ``--master_addr`` (docs: data-parallel).
"""
import hashlib
import logging
import math
from typing import List, Optional, Sequence

import numpy as np
import oneflow as flow
import oneflow.nn as nn

from .launch import (ORIGINAL_FLAGS, _local_addresses, _positive, interface_addresses,  # noqa: F401 - re-exported
                     launch_command, split_launch_flags)
from .watchdog import (DEFAULT_TIMEOUT_S, SIGTERM_GRACE_S, Watchdog, _die, _say, _timeout,  # noqa: F401
                       _watchdog_port, at_abort, check_environment, fail, start_watchdog, stop_watchdog,
                       watchdog_running)
from .world import check_local_rank, is_distributed, is_writer, local_rank, rank, world_size  # noqa: F401

__all__ = ["world_size", "rank", "is_distributed", "is_writer", "shard", "row_block", "all_reduce_gradients",
           "mean_across_ranks", "gather_rows", "agree", "check_same", "global_batch", "Watchdog",
           "start_watchdog", "stop_watchdog", "watchdog_running",
           "check_environment", "fail", "at_abort", "split_launch_flags", "launch_command", "to_local_state",
           "local_rank", "check_local_rank", "interface_addresses", "DEFAULT_TIMEOUT_S", "SIGTERM_GRACE_S"]

logger = logging.getLogger(__name__)


def shard(index: np.ndarray, rank_: Optional[int] = None, world: Optional[int] = None) -> np.ndarray:
    """Rank ``rank_``'s contiguous part of the global batch ``index`` (``len(index)`` divisible by ``world``).

    >>> shard(np.array([5, 1, 4, 0]), rank_=1, world=2).tolist()
    [4, 0]
    """
    world = world_size() if world is None else world
    rank_ = rank() if rank_ is None else rank_
    if len(index) % world:
        raise ValueError(f"a global batch of {len(index)} rows cannot be cut into {world} equal shards; "
                         f"use a batch size divisible by the number of processes")
    size = len(index) // world
    return index[rank_ * size:(rank_ + 1) * size]


def row_block(count: int, rank_: Optional[int] = None, world: Optional[int] = None) -> slice:
    """Rank ``rank_``'s contiguous block of ``count`` evaluation rows (``ceil(count / world)`` rows each,
    the last ranks fewer or none).

    >>> row_block(5, rank_=1, world=2), row_block(5, rank_=0, world=2)
    (slice(3, 5, None), slice(0, 3, None))
    """
    world = world_size() if world is None else world
    rank_ = rank() if rank_ is None else rank_
    per = math.ceil(count / world)
    return slice(min(count, rank_ * per), min(count, (rank_ + 1) * per))


def all_reduce_gradients(parameters: Sequence[nn.Parameter]) -> None:
    """Replace every existing ``.grad`` by its mean over the ranks (one all-reduce of a flat buffer).

    Parameters without a gradient keep none (every rank runs the same graph, so the set is the same).
    """
    world = world_size()
    params = [p for p in parameters if p.grad is not None]
    if world == 1 or not params:
        return
    flat = flow.cat([p.grad.reshape(-1) for p in params])
    flow.comm.all_reduce(flat)
    flat = flat * (1.0 / world)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].reshape(p.shape)
        offset += n


def mean_across_ranks(values: Sequence[float]) -> List[float]:
    """The mean over the ranks of each of ``values`` (the same list on every rank)."""
    if world_size() == 1:
        return list(values)
    tensor = flow.tensor(np.asarray(values, dtype=np.float64))
    flow.comm.all_reduce(tensor)
    return (tensor.numpy() / world_size()).tolist()


def gather_rows(local: np.ndarray, count: int) -> np.ndarray:
    """Concatenate every rank's :func:`row_block` rows ``local [rows, ...]`` into ``[count, ...]``
    (on every rank). A rank with no rows passes any ``[k, ...]`` array of the right trailing shape."""
    world = world_size()
    if world == 1:
        return local
    per = math.ceil(count / world)
    padded = np.zeros((per,) + local.shape[1:], dtype=local.dtype)
    mine = row_block(count)
    rows = mine.stop - mine.start
    padded[:rows] = local[:rows]
    tensor = flow.tensor(padded)
    parts = [flow.zeros_like(tensor) for _ in range(world)]
    flow.comm.all_gather(parts, tensor)
    return np.concatenate([p.numpy() for p in parts])[:count]


def agree(ok: bool) -> bool:
    """True when every rank passes ``ok=True`` (a collective: every rank must call it)."""
    if world_size() == 1:
        return ok
    failures = mean_across_ranks([0.0 if ok else 1.0])[0]
    return failures == 0.0


def check_same(text: str, what: str, fix: str = "start every rank with the same command line and files"
               ) -> Optional[str]:
    """None when every rank passed the same ``text``; else one sentence naming the ranks that differ from
    rank 0, ending with ``fix`` (a collective)."""
    if world_size() == 1:
        return None
    digest = np.frombuffer(hashlib.sha256(text.encode()).digest()[:8], dtype=np.int32).astype(np.int64)
    tensor = flow.tensor(digest)
    parts = [flow.zeros_like(tensor) for _ in range(world_size())]
    flow.comm.all_gather(parts, tensor)
    values = [p.numpy().tolist() for p in parts]
    differ = [r for r, v in enumerate(values) if v != values[0]]
    if differ:
        return f"the {what} of rank(s) {differ} differs from rank 0's; {fix}"
    return None


def _map_tensors(obj, fn):
    if isinstance(obj, flow.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return type(obj)((k, _map_tensors(v, fn)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return obj


def to_local_state(state):
    """``state`` (a nested dict/list of tensors) with every global (broadcast) tensor made local."""
    return _map_tensors(state, lambda t: t.to_local() if t.is_global else t)


def global_batch(batch_size: int, num_rows: int, world: Optional[int] = None) -> int:
    """The global batch of ``world`` processes with ``batch_size`` rows each (``batch_size`` in one process,
    where a batch larger than the data is cut to it); raises ``ValueError`` when it exceeds the data.

    >>> global_batch(8, 20, world=2)
    16
    """
    world = world_size() if world is None else world
    if world == 1:
        return batch_size
    total = batch_size * world
    if total > num_rows:
        raise ValueError(f"{world} processes x --batch_size_per_device {batch_size} = {total} rows per step exceeds "
                         f"the {num_rows} training rows; lower --batch_size_per_device or the number of processes")
    return total
