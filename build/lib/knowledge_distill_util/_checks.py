"""Input validation shared by the loss functions.

Every check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape, count,
device or value) with a message that names the argument, what was seen and how to fix it.
"""
import math
from numbers import Real
from typing import Sequence

import oneflow as flow

__all__ = [
    "check_float_tensor",
    "check_same_shape",
    "check_same_device",
    "check_pair",
    "check_tensor_list",
    "check_temperature",
]


def check_float_tensor(name: str, value) -> None:
    """Require a floating-point OneFlow tensor."""
    if not isinstance(value, flow.Tensor):
        raise TypeError(
            f"{name} must be a oneflow.Tensor, got {type(value).__name__}; "
            f"convert it with oneflow.tensor(...) first"
        )
    if not value.dtype.is_floating_point:
        raise TypeError(
            f"{name} must be a floating-point tensor (float16/float32/float64), got dtype {value.dtype}; "
            f"cast it with {name}.float() first"
        )


def _where(tensor: flow.Tensor) -> str:
    if tensor.is_global:
        return f"placement={tensor.placement}, sbp={tensor.sbp}"
    return f"device={tensor.device}"


def check_same_device(name_a: str, a: flow.Tensor, name_b: str, b: flow.Tensor) -> None:
    """Require both tensors on the same device (local) or placement (global)."""
    if a.is_global != b.is_global:
        raise ValueError(
            f"{name_a} is {'global' if a.is_global else 'local'} but {name_b} is "
            f"{'global' if b.is_global else 'local'}; make both local or both global (to_global)"
        )
    same = a.placement == b.placement if a.is_global else a.device == b.device
    if not same:
        raise ValueError(
            f"{name_a} ({_where(a)}) and {name_b} ({_where(b)}) are on different devices; "
            f"move one with .to({name_a}.device)"
        )


def check_same_shape(name_a: str, a: flow.Tensor, name_b: str, b: flow.Tensor) -> None:
    """Require identical shapes: the losses never broadcast."""
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}; "
            f"they must be equal (no broadcasting), e.g. project the student to the teacher's size first"
        )


def check_pair(name_a: str, a, name_b: str, b) -> None:
    """Both floating tensors, same shape, same device, same dtype."""
    check_float_tensor(name_a, a)
    check_float_tensor(name_b, b)
    check_same_device(name_a, a, name_b, b)
    check_same_shape(name_a, a, name_b, b)
    if a.dtype != b.dtype:
        raise TypeError(
            f"{name_a} has dtype {a.dtype} but {name_b} has dtype {b.dtype}; cast one to the other's dtype"
        )


def check_tensor_list(name: str, value) -> None:
    """Require a non-empty list or tuple of tensors."""
    if isinstance(value, flow.Tensor) or not isinstance(value, Sequence):
        raise TypeError(
            f"{name} must be a list or tuple of tensors (one per layer), got {type(value).__name__}"
        )
    if len(value) == 0:
        raise ValueError(f"{name} is empty; pass one tensor per layer")


def check_temperature(name: str, value) -> float:
    """Return ``value`` as a float if it is a finite number > 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number > 0, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}; the usual value is 1.0")
    return value
