"""The soft-target helpers shared by :mod:`knowledge_distill_util.functional` and
:mod:`knowledge_distill_util.divergences`: argument checks of every logit loss, temperature division and
the row reductions. Private; it imports neither of the two modules, so they need not import each other."""

from typing import Optional, Union

import oneflow as flow

from ._checks import check_choice, check_mask, check_row_temperature, own_storage
from ._vocab import align_vocabularies

#: The reductions of :func:`soft_cross_entropy` and :func:`kl_div`.
REDUCTIONS = ("mean", "batchmean", "sum", "none")

Temperature = Union[float, flow.Tensor]


def _as_float32_if_half(tensor: flow.Tensor) -> flow.Tensor:
    """The tensor a loss computes on: float16/bfloat16 as float32, a view inside its storage copied
    (:func:`~knowledge_distill_util._checks.own_storage`)."""
    return own_storage(tensor.float() if tensor.dtype in (flow.float16, flow.bfloat16) else tensor)


def _mean_scale(count: int) -> float:
    """``1 / count``; NaN for nothing to average (the mean of an empty tensor, as numpy gives)."""
    return 1.0 / count if count else float("nan")


def _prepare_soft_targets(predicts, targets, student_temperature, teacher_temperature, names, *,
                          reduction: str, temperature_scaling: bool, mask, vocab_alignment):
    """Validate the arguments shared by every logit loss; return ``(s, t, t_s, t_t, mask)``: the logits
    (float16/bfloat16 as float32, the teacher detached, aligned by ``vocab_alignment``), the temperatures
    (floats or per-row tensors) and the mask (None or 0/1 in the logits' dtype)."""
    predicts, targets = align_vocabularies(predicts, targets, vocab_alignment, names)
    if predicts.ndim == 0:
        raise ValueError(f"{names[0]} must have at least one dimension [..., C], got a scalar tensor")
    check_choice("reduction", reduction, REDUCTIONS)
    if not isinstance(temperature_scaling, bool):
        raise TypeError(f"temperature_scaling must be True or False, got {temperature_scaling!r}")
    s = _as_float32_if_half(predicts)
    t = _as_float32_if_half(targets).detach()
    leading = tuple(s.shape[:-1])
    t_s = check_row_temperature("student_temperature", student_temperature, leading, s, names[0])
    t_t = check_row_temperature("teacher_temperature", teacher_temperature, leading, s, names[0])
    if mask is not None:
        mask = check_mask("mask", mask, leading, s, names[0])
    return s, t, t_s, t_t, mask


def _rows_loss(rows_of, s, t, t_s: Temperature, t_t: Temperature, *, reduction: str,
               temperature_scaling: bool, mask) -> flow.Tensor:
    """``rows_of(s / T_s, t / T_t)`` (row losses ``[...]``), times ``T_s T_t`` with ``temperature_scaling``,
    reduced as :func:`kl_div` reduces (``"mean"`` divides by the larger vocabulary)."""
    rows = rows_of(_divide(s, t_s), _divide(t, t_t))
    if temperature_scaling:
        rows = rows * _product(t_s, t_t)
    return _reduce_rows(rows, mask, reduction, max(s.shape[-1], t.shape[-1]))


def _product(a: Temperature, b: Temperature) -> Temperature:
    return a * b


def _divide(x: flow.Tensor, temperature: Temperature) -> flow.Tensor:
    """``x / T``: a number for all rows (1.0 skipped) or a per-row tensor ``[...]``."""
    if isinstance(temperature, flow.Tensor):
        return x / temperature.unsqueeze(-1)
    return x if temperature == 1.0 else x / temperature


def _reduce_rows(rows: flow.Tensor, mask: Optional[flow.Tensor], reduction: str, classes: int) -> flow.Tensor:
    """Reduce per-row losses ``[...]`` with an optional 0/1 mask of the same shape (masked rows give 0)."""
    if mask is not None:
        rows = flow.masked_fill(rows, mask == 0, 0.0)
    if reduction == "none":
        return rows
    total = rows.sum()
    if reduction == "sum":
        return total
    if mask is None:
        return total * _mean_scale(rows.numel() * (classes if reduction == "mean" else 1))
    count = flow.clamp(mask.sum(), min=1.0)
    return total / (count * classes) if reduction == "mean" else total / count
