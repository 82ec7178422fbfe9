"""Who this process is in a job started by OneFlow's launcher: :func:`world_size`, :func:`rank`,
:func:`local_rank` (and :func:`check_local_rank`, which refuses a node layout OneFlow would abort on),
:func:`is_distributed`, :func:`is_writer`. Without the launcher: one process, rank 0, the writer.

Part of :mod:`.distributed` (which re-exports every name here); the module doc there describes the data-parallel
design and, under **Nodes**, the layout :func:`check_local_rank` checks.
"""
import os

import oneflow as flow

__all__ = ["world_size", "rank", "local_rank", "check_local_rank", "is_distributed", "is_writer"]


def world_size() -> int:
    """Number of processes of the job (``WORLD_SIZE`` set by the launcher; 1 without it)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def rank() -> int:
    """This process's rank (``RANK`` set by the launcher; 0 without it)."""
    return int(os.environ.get("RANK", "0") or 0) if world_size() > 1 else 0


def local_rank() -> int:
    """This process's index on its node (the launcher's ``LOCAL_RANK`` as OneFlow reads it; 0 without it):
    the CUDA device ``--device cuda`` takes."""
    return int(flow.env.get_local_rank()) if world_size() > 1 else 0


def check_local_rank() -> None:
    """Raise ``ValueError`` when this rank's ``LOCAL_RANK`` contradicts the node layout OneFlow derived (see
    the module doc, **Nodes**): the first collective would abort the process in C++. Call it before any
    collective. No-op in one process.
    """
    world = world_size()
    if world == 1:
        return
    nodes = max(1, int(flow.env.get_node_size()))
    per_node = world // nodes
    expected, local = rank() % per_node, local_rank()
    if local != expected:
        raise ValueError(
            f"rank {rank()} has LOCAL_RANK {local} but OneFlow sees {nodes} node(s) for {world} processes (one "
            f"node per address the ranks reach the master from) and expects LOCAL_RANK {expected}: several "
            f"--node_rank launchers on one machine reached the master at the same address; on one machine use "
            f"--nnodes 1 --nproc_per_node {world}, or give each node's launcher a different address of the master "
            f"machine as --master_addr (127.0.0.1 for node 0, the machine's own IP for node 1)")


def is_distributed() -> bool:
    """More than one process."""
    return world_size() > 1


def is_writer() -> bool:
    """This process writes files (rank 0)."""
    return rank() == 0
