"""Input validation shared by the package: the loss functions' tensor checks, and the one set of
number validators (positive integers, probabilities, positive reals) used by the models and the data.

Every check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape, count,
device or value) with a message that names the argument (and, with ``source``, the file it was read
from), what was seen and how to fix it.
"""
import math
from numbers import Integral, Real
from typing import Optional, Sequence

import oneflow as flow

__all__ = [
    "check_float_tensor",
    "check_same_shape",
    "check_not_empty",
    "MIN_TEMPERATURE",
    "check_int",
    "check_probability",
    "check_positive_real",
    "check_bool",
    "check_same_device",
    "check_pair",
    "check_tensor_list",
    "check_temperature",
]

#: The smallest temperature accepted. Logits are divided by it: for logits of magnitude up to 1e4 (the
#: extreme inputs the losses are tested with) ``logits / T`` stays below 1e8 and the closed-form
#: gradient's factor ``1 / T`` below 1e4, far inside float32's range (3.4e38), so the loss and its
#: gradient stay finite in float32 with a margin for logits of up to about 1e30. Lower temperatures
#: bring no other effect: at ``T = 1e-4`` the softmax is already one-hot for logit gaps above 0.01.
#: (A temperature of 1e-300 made ``1 / T`` infinite in float32 and the loss NaN.)
MIN_TEMPERATURE = 1e-4


def own_storage(tensor: flow.Tensor) -> flow.Tensor:
    """``tensor``, copied when it is a view that starts inside its storage (``storage_offset() > 0``).

    OneFlow 0.9 drops a view's storage offset when it is detached (and inside an autograd Function), so a
    view taken afterwards (``narrow``, ``unsqueeze``, ``reshape``) reads from the start of the storage: the
    losses, which detach the teacher and chunk their inputs, would read the wrong rows. The copy keeps the
    autograd graph; tensors that start their storage (almost all) are returned as they are.

    >>> v = flow.arange(6, dtype=flow.float32)
    >>> own_storage(v[3:]).detach().unsqueeze(-1).flatten().tolist()
    [3.0, 4.0, 5.0]
    """
    if tensor.is_lazy or tensor.is_global:  # no storage of its own to read from (graph or global tensors)
        return tensor
    return tensor.clone() if tensor.storage_offset() else tensor

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


def check_not_empty(name: str, value: flow.Tensor) -> None:
    """Require at least one element (a zero-size tensor makes every mean 0/0 = NaN)."""
    if any(size == 0 for size in value.shape):
        raise ValueError(
            f"{name} is empty (shape {tuple(value.shape)}): a loss over zero elements is undefined; "
            f"skip empty batches before calling the loss"
        )


def check_pair(name_a: str, a, name_b: str, b) -> None:
    """Both floating tensors, same shape, same device, same dtype, not empty."""
    check_float_tensor(name_a, a)
    check_float_tensor(name_b, b)
    check_same_device(name_a, a, name_b, b)
    check_same_shape(name_a, a, name_b, b)
    if a.dtype != b.dtype:
        raise TypeError(
            f"{name_a} has dtype {a.dtype} but {name_b} has dtype {b.dtype}; cast one to the other's dtype"
        )
    check_not_empty(name_a, a)


def check_tensor_list(name: str, value) -> None:
    """Require a non-empty list or tuple of tensors (a string is a sequence too, but refused)."""
    if isinstance(value, (flow.Tensor, str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(
            f"{name} must be a list or tuple of tensors (one per layer), got {type(value).__name__}"
        )
    if len(value) == 0:
        raise ValueError(f"{name} is empty; pass one tensor per layer")


def _named(name: str, source: Optional[str]) -> str:
    return f"{name} in {source}" if source else name


def check_int(name: str, value, *, minimum: int = 1, allow_none: bool = False, source: Optional[str] = None,
              qualifier: str = "", hint: str = "") -> Optional[int]:
    """Return ``value`` as an ``int`` if it is an integer (``bool`` excluded) ``>= minimum``.

    ``allow_none`` lets ``None`` through; ``source`` (a file) goes into the message, ``qualifier`` after
    the requirement (why), ``hint`` at the end (the fix). Wrong type: ``TypeError``; too small: ``ValueError``.

    >>> check_int("hidden_size", 0)
    Traceback (most recent call last):
    ...
    ValueError: hidden_size must be a positive integer, got 0
    """
    if value is None and allow_none:
        return None
    wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    wanted += (" or None" if allow_none else "") + qualifier
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{_named(name, source)} must be {wanted}, got {value!r} ({type(value).__name__}){hint}")
    if value < minimum:
        raise ValueError(f"{_named(name, source)} must be {wanted}, got {value!r}{hint}")
    return int(value)


def check_probability(name: str, value, *, source: Optional[str] = None) -> float:
    """Return ``value`` as a float if it is a number in ``[0, 1)`` (a dropout probability).

    >>> check_probability("hidden_dropout_prob", 0.1)
    0.1
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{_named(name, source)} must be a number in [0, 1), got {value!r} ({type(value).__name__})")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{_named(name, source)} must be a number in [0, 1), got {value!r}")
    return float(value)


def check_positive_real(name: str, value, *, allow_zero: bool = False, source: Optional[str] = None) -> float:
    """Return ``value`` as a float if it is a finite number ``> 0`` (``>= 0`` with ``allow_zero``).

    >>> check_positive_real("layer_norm_eps", "1e-12")
    Traceback (most recent call last):
    ...
    TypeError: layer_norm_eps must be a finite number > 0, got '1e-12' (str)
    """
    wanted = f"a finite number {'>=' if allow_zero else '>'} 0"
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{_named(name, source)} must be {wanted}, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{_named(name, source)} must be {wanted}, got {value!r}")
    return value


def check_bool(name: str, value, *, allow_none: bool = False, source: Optional[str] = None) -> Optional[bool]:
    """Require ``True`` or ``False`` (or ``None`` with ``allow_none``): ``0``/``"false"`` are refused."""
    if value is None and allow_none:
        return None
    if not isinstance(value, bool):
        wanted = "True, False or None" if allow_none else "True or False"
        raise TypeError(f"{_named(name, source)} must be {wanted}, got {value!r} ({type(value).__name__})")
    return value


def check_temperature(name: str, value) -> float:
    """Return ``value`` as a float if it is a finite number >= :data:`MIN_TEMPERATURE`, else raise."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number >= {MIN_TEMPERATURE}, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number >= {MIN_TEMPERATURE}, got {value!r}; the usual value is 1.0")
    if value < MIN_TEMPERATURE:
        raise ValueError(
            f"{name} is {value!r}, below the smallest supported temperature {MIN_TEMPERATURE} (smaller ones "
            f"overflow float32 when the logits are divided by them); use a temperature >= {MIN_TEMPERATURE}, "
            f"the usual values are 1 to 20"
        )
    return value


# --------------------------------------------------------------------------------------------------
# checks of the issue-11 losses (masks, names, per-row temperatures, widths)
# --------------------------------------------------------------------------------------------------

__all__ += [
    "check_choice",
    "check_mask",
    "check_row_temperature",
    "check_same_leading_dims",
    "check_ndim",
]


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    """Require ``value`` to be one of the names ``choices``; the error lists them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}"
        )
    return value


def check_ndim(name: str, value: flow.Tensor, allowed: Sequence[int], layout: str) -> None:
    """Require ``value.ndim`` in ``allowed``; ``layout`` names the expected shape, e.g. ``"[B, L, H]"``."""
    if value.ndim not in allowed:
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(value.shape)} ({value.ndim} dims)")


def check_same_leading_dims(name_a: str, a: flow.Tensor, name_b: str, b: flow.Tensor, count: int) -> None:
    """Both floating, same device and dtype, equal in their first ``count`` dims (the last may differ)."""
    check_float_tensor(name_a, a)
    check_float_tensor(name_b, b)
    check_same_device(name_a, a, name_b, b)
    if a.ndim != b.ndim or tuple(a.shape[:count]) != tuple(b.shape[:count]):
        raise ValueError(
            f"{name_a} has shape {tuple(a.shape)} and {name_b} has shape {tuple(b.shape)}; they must have "
            f"the same number of dims and agree in the first {count} (only the width may differ)"
        )
    if a.dtype != b.dtype:
        raise TypeError(
            f"{name_a} has dtype {a.dtype} but {name_b} has dtype {b.dtype}; cast one to the other's dtype"
        )


def _checkable(tensor: flow.Tensor) -> bool:
    """Values can be inspected on the host: eager and local (never inside ``nn.Graph``)."""
    return not tensor.is_lazy and not tensor.is_global


def check_mask(name: str, mask, shape: Sequence[int], like: flow.Tensor, like_name: str) -> flow.Tensor:
    """A 0/1 mask of exactly ``shape`` (any numeric or bool dtype), returned detached in ``like``'s dtype.

    The 0/1 values are checked in eager mode on local tensors (inside ``nn.Graph`` values are unknown).
    """
    if not isinstance(mask, flow.Tensor):
        raise TypeError(
            f"{name} must be a oneflow.Tensor of 0/1 values (bool, integer or float) or None, "
            f"got {type(mask).__name__}; convert it with oneflow.tensor(...)"
        )
    check_same_device(name, mask, like_name, like)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(
            f"{name} has shape {tuple(mask.shape)} but must have shape {tuple(shape)} (one 0/1 entry per "
            f"position of {like_name}, no broadcasting)"
        )
    converted = own_storage(mask if mask.dtype == like.dtype else mask.to(dtype=like.dtype)).detach()
    if _checkable(converted) and converted.numel() and bool(((converted != 0) & (converted != 1)).any().item()):
        raise ValueError(
            f"{name} must hold only 0 and 1 (1 = valid position), got other values; "
            f"pass e.g. attention_mask (1 for tokens, 0 for padding) or (mask > 0)"
        )
    return converted


def check_row_temperature(name: str, value, shape: Sequence[int], like: flow.Tensor, like_name: str):
    """A temperature: a finite number > 0 (returned as float) or a tensor of exactly ``shape`` (one
    temperature per row), returned detached in ``like``'s dtype; its values are checked to be finite and
    > 0 in eager mode on local tensors."""
    if not isinstance(value, flow.Tensor):
        return check_temperature(name, value)
    check_float_tensor(name, value)
    check_same_device(name, value, like_name, like)
    if tuple(value.shape) != tuple(shape):
        raise ValueError(
            f"{name} is a tensor of shape {tuple(value.shape)} but a per-row temperature must have the leading "
            f"shape of {like_name}, {tuple(shape)}; pass a number for one temperature for all rows"
        )
    converted = own_storage(value if value.dtype == like.dtype else value.to(dtype=like.dtype)).detach()
    if _checkable(converted) and converted.numel():
        ok = flow.isfinite(converted) & (converted > 0)
        if not bool(ok.all().item()):
            raise ValueError(
                f"{name} must hold finite temperatures > 0, got min {converted.min().item()!r}; "
                f"a schedule with a large beta can make them negative: lower beta or clamp"
            )
    return converted
