"""Turn a device name from the command line or a configuration into a ``oneflow.device``, checked.

OneFlow 0.9 accepts ``oneflow.device("cuda")`` on a machine without a GPU and aborts the whole process
at the first CUDA operation, and raises C++-flavoured errors for names it does not know. This module
checks the name first and says what is wrong in one sentence.

It also says how several OneFlow processes share the CPU (:func:`share_cpu_cores`): OneFlow 0.9's eager
runtime runs CPU kernels on a worker thread while its scheduler thread polls for work with
``sched_yield``, so one training process keeps two cores busy for the work of one. With
``ONEFLOW_VM_COMPUTE_ON_WORKER_THREAD=0`` the scheduler thread runs the kernels itself: the same values,
half the CPU time, and two processes on two cores no longer take turns (``docs/performance.md``).
"""
import os
import re
from typing import Dict, MutableMapping, Optional

import oneflow as flow

__all__ = ["resolve_device", "VALID_DEVICES", "device_type", "is_cpu", "share_cpu_cores", "CPU_SHARING_ENV"]

#: The accepted spellings (``N`` is a CUDA device index).
VALID_DEVICES = ("cpu", "cuda", "cuda:N")
_NAME = re.compile(r"(cpu|cuda)(?::(\d+))?")


def _local_rank() -> int:
    """This process's index on its node under OneFlow's launcher (``WORLD_SIZE`` > 1), else 0."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return 0
    return int(flow.env.get_local_rank())


def resolve_device(name: Optional[str] = None) -> flow.device:
    """Return the device named ``name``: ``"cpu"``, ``"cuda"`` (the first GPU; in a multi-process job started
    by OneFlow's launcher, the GPU numbered by this process's ``LOCAL_RANK``: one process per GPU) or
    ``"cuda:N"`` (that GPU, in every process).

    ``None`` (or an empty string) picks the first CUDA device when one is visible, else the CPU.
    Names are case-insensitive and may carry surrounding spaces.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: an unknown name (``"tpu"``), a CUDA device when no CUDA device is visible, or an index
            ``N`` not below the number of visible CUDA devices.

    >>> resolve_device("cpu")
    device(type='cpu', index=0)
    >>> resolve_device("tpu")
    Traceback (most recent call last):
    ...
    ValueError: unknown device 'tpu'; valid devices: cpu, cuda, cuda:N (N = a CUDA device index)
    """
    if name is None or (isinstance(name, str) and not name.strip()):
        name = "cuda" if flow.cuda.is_available() else "cpu"
    if not isinstance(name, str):
        raise TypeError(f"device must be a string such as 'cpu' or 'cuda:0', got {type(name).__name__} {name!r}")
    match = _NAME.fullmatch(name.strip().lower())
    if match is None:
        raise ValueError(
            f"unknown device {name!r}; valid devices: {', '.join(VALID_DEVICES)} (N = a CUDA device index)"
        )
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        if index not in (None, "0"):
            raise ValueError(f"device {name!r}: the CPU has only index 0; use 'cpu'")
        return flow.device("cpu")
    count = flow.cuda.device_count() if flow.cuda.is_available() else 0
    if count == 0:
        raise ValueError(
            f"device {name!r} requested but no CUDA device is visible on this machine (a CPU-only OneFlow "
            f"build, no GPU, or CUDA_VISIBLE_DEVICES empty); use --device cpu"
        )
    if index is None and _local_rank() > 0:  # one process per GPU under the launcher
        number = _local_rank()
        if number >= count:
            raise ValueError(
                f"device {name!r}: this process has LOCAL_RANK {number} (one GPU per process on a node) but only "
                f"{count} CUDA device(s) are visible; start at most {count} processes per node (--nproc_per_node)"
            )
        return flow.device("cuda", number)
    number = 0 if index is None else int(index)
    if number >= count:
        raise ValueError(
            f"device {name!r}: only {count} CUDA device(s) are visible (cuda:0 to cuda:{count - 1}); "
            f"choose one of those"
        )
    return flow.device("cuda", number)


#: The OneFlow settings of a process that shares the CPU with other OneFlow processes (see the module doc).
CPU_SHARING_ENV = {"ONEFLOW_VM_COMPUTE_ON_WORKER_THREAD": "0"}


def device_type(name: Optional[str]) -> str:
    """``"cpu"`` or ``"cuda"``: the kind of device ``name`` (as :func:`resolve_device` takes it; ``None``:
    the default) resolves to on this machine; ``"invalid"`` for a name it refuses (the run's validation
    reports it)."""
    try:
        return resolve_device(name).type
    except (TypeError, ValueError):
        return "invalid"


def is_cpu(name: Optional[str]) -> bool:
    """Whether the device ``name`` resolves to the CPU (:func:`device_type`)."""
    return device_type(name) == "cpu"


def share_cpu_cores(env: Optional[MutableMapping[str, str]] = None) -> Dict[str, str]:
    """Put :data:`CPU_SHARING_ENV` into ``env`` (default: this process's ``os.environ``, which OneFlow reads
    at its first operation) where the user did not set those variables; returns what was set.

    >>> env = {"ONEFLOW_VM_COMPUTE_ON_WORKER_THREAD": "1"}
    >>> share_cpu_cores(env), env
    ({}, {'ONEFLOW_VM_COMPUTE_ON_WORKER_THREAD': '1'})
    >>> share_cpu_cores({})
    {'ONEFLOW_VM_COMPUTE_ON_WORKER_THREAD': '0'}
    """
    env = os.environ if env is None else env
    added = {key: value for key, value in CPU_SHARING_ENV.items() if key not in env}
    env.update(added)
    return added
