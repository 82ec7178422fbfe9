r"""Divergences against a sparse teacher: its top-k logits (values and ids) instead of all V logits.

The teacher is known on k ids per row (``topk_values``/``topk_ids``, e.g. read from a
:func:`knowledge_distill_util.cache_teacher_logits` cache); the student's logits are dense ``[..., V]``.
With :math:`T` the temperature, :math:`a_i = v_i / T` the teacher's top-k values and
:math:`\log q = \operatorname{log\_softmax}(s / T)` the student's log-probabilities over all V ids, both
sides become distributions over **k + 1 bins**: the k ids and one bin for the V - k other ids (the "tail"):

- ``missing="zero"`` (DistillKit's ``ZERO``): the teacher's top-k probabilities are renormalised,
  :math:`p_i = \operatorname{softmax}(a)_i`, and its tail is 0.
- ``missing="uniform"`` (DistillKit's ``SYMMETRIC_UNIFORM``): :math:`p_i = \exp(a_i - L)` with
  :math:`L = \operatorname{logsumexp}` of the teacher's **full** logits divided by T (``teacher_logsumexp``,
  stored by the cache), and the remaining mass :math:`p_\text{tail} = 1 - \sum_i p_i` is spread uniformly
  over the V - k other ids, in the teacher **and** in the student (whose tail mass is
  :math:`q_\text{tail} = 1 - \sum_i q_i`, computed as a log-sum-exp over the other ids, never by
  subtraction). Spread uniformly on both sides, the V - k tail ids contribute exactly
  :math:`p_\text{tail} \log(p_\text{tail} / q_\text{tail})`, the (k + 1)-th bin's term.

The student's tail bin is :math:`q_\text{tail}` in both modes. Then, per row, with :math:`0 \log 0 = 0`:

.. math::
    \mathrm{KL}(P \| Q) = \sum_{b \in \text{bins}} p_b (\log p_b - \log q_b)

and the generalized Jensen-Shannon divergence of TRL's GKD, :math:`M = \beta P + (1 - \beta) Q`,
:math:`\mathrm{JSD}_\beta = \beta\,\mathrm{KL}(P \| M) + (1 - \beta)\,\mathrm{KL}(Q \| M)` for
:math:`0 < \beta < 1`, :math:`\mathrm{KL}(P \| Q)` at :math:`\beta = 0` and :math:`\mathrm{KL}(Q \| P)` at
:math:`\beta = 1`. With ``"zero"`` the (k + 1)-bin values equal the full-vocabulary ones of the
renormalised sparse teacher exactly (the tail bin carries the student's tail mass in KL(Q || M)); with
k = V and ``"zero"`` both equal the dense :func:`knowledge_distill_util.functional.kl_div` (and the dense
JSD). Everything is computed in log space (log-softmax, log-sum-exp, ``log1p(-exp)``), so logits of
+-1e4 stay finite; float16/bfloat16 inputs are computed in float32, float64 stays float64.

Reductions as :func:`~knowledge_distill_util.functional.kl_div`: ``"batchmean"`` (default)
:math:`\sum m r / \sum m`, ``"mean"`` :math:`\sum m r / (V \sum m)`, ``"sum"``, ``"none"``;
``temperature_scaling=True`` multiplies each row by :math:`T^2`.

These functions are not in the loss registry: the registry's losses take ``(student, teacher)``, two
tensors of one shape that the ``Distiller`` draws from the two models' outputs, while the sparse teacher
is a pair ``(topk_values, topk_ids)`` (and, for ``"uniform"``, its log-sum-exp) read from a cache.
"""
import math
from numbers import Real
from typing import Optional, Tuple

import oneflow as flow
import oneflow.nn.functional as F

from ._checks import check_choice, check_float_tensor, check_mask, check_same_device, check_temperature
from ._soft_targets import REDUCTIONS, _as_float32_if_half, _reduce_rows

__all__ = ["sparse_kl_div", "sparse_js_divergence", "MISSING_PROBABILITY", "SPARSE_REDUCTIONS"]

#: How the teacher's probability outside its top-k ids is handled (DistillKit's names in the module doc).
MISSING_PROBABILITY = ("zero", "uniform")

#: The reductions, as those of :func:`knowledge_distill_util.functional.kl_div`.
SPARSE_REDUCTIONS = REDUCTIONS

#: Log-probabilities are clamped here before they meet a zero probability (0 * log 0 = 0, as in
#: ``functional``): the float32 lowest value, so a difference of two clamped values cannot overflow.
_LOWEST_LOG = -3.4e38


def _checkable(tensor: flow.Tensor) -> bool:
    return not tensor.is_lazy and not tensor.is_global


def _check_student(student_logits) -> None:
    check_float_tensor("student_logits", student_logits)
    if student_logits.ndim == 0 or any(size == 0 for size in student_logits.shape):
        raise ValueError(f"student_logits must have shape [..., V] with at least one row and one class, got "
                         f"shape {tuple(student_logits.shape)}")


def _check_topk(student_logits: flow.Tensor, topk_values, topk_ids) -> int:
    """Validate the sparse teacher; returns k."""
    check_float_tensor("topk_values", topk_values)
    if not isinstance(topk_ids, flow.Tensor) or topk_ids.dtype not in (flow.int32, flow.int64):
        got = type(topk_ids).__name__ if not isinstance(topk_ids, flow.Tensor) else f"dtype {topk_ids.dtype}"
        raise TypeError(f"topk_ids must be an int32 or int64 oneflow.Tensor of vocabulary ids, got {got}")
    check_same_device("topk_values", topk_values, "student_logits", student_logits)
    check_same_device("topk_ids", topk_ids, "student_logits", student_logits)
    leading, vocab = tuple(student_logits.shape[:-1]), int(student_logits.shape[-1])
    if topk_values.ndim != student_logits.ndim or tuple(topk_values.shape[:-1]) != leading:
        raise ValueError(f"topk_values has shape {tuple(topk_values.shape)} but must be [..., k] with the leading "
                         f"shape {leading} of student_logits {tuple(student_logits.shape)}")
    if tuple(topk_ids.shape) != tuple(topk_values.shape):
        raise ValueError(f"topk_ids has shape {tuple(topk_ids.shape)} but must have the shape of topk_values, "
                         f"{tuple(topk_values.shape)}")
    top_k = int(topk_values.shape[-1])
    if not 1 <= top_k <= vocab:
        raise ValueError(f"top_k (the last dim of topk_values) is {top_k} but must be between 1 and the student's "
                         f"vocabulary size V = {vocab}")
    if _checkable(topk_ids):
        low, high = int(topk_ids.min().item()), int(topk_ids.max().item())
        if low < 0 or high >= vocab:
            raise ValueError(f"topk_ids must hold ids in [0, {vocab}) (the student's vocabulary), got ids from "
                             f"{low} to {high}; were they written for a model with another vocabulary?")
        if top_k > 1:
            ordered = flow.sort(topk_ids, dim=-1)[0]
            if bool((ordered[..., 1:] == ordered[..., :-1]).any().item()):
                raise ValueError("topk_ids holds an id twice in one row; each row must list k distinct ids "
                                 "(as oneflow.topk gives)")
    return top_k


def _check_logsumexp(missing: str, teacher_logsumexp, student_logits: flow.Tensor):
    if missing != "uniform":
        return None
    if teacher_logsumexp is None:
        raise ValueError("missing='uniform' needs teacher_logsumexp, the log-sum-exp of the teacher's full logits "
                         "divided by the temperature (TopKLogits.logsumexp gives it); pass it or use missing='zero'")
    check_float_tensor("teacher_logsumexp", teacher_logsumexp)
    check_same_device("teacher_logsumexp", teacher_logsumexp, "student_logits", student_logits)
    leading = tuple(student_logits.shape[:-1])
    if tuple(teacher_logsumexp.shape) != leading:
        raise ValueError(f"teacher_logsumexp has shape {tuple(teacher_logsumexp.shape)} but must have the leading "
                         f"shape {leading} of student_logits (one value per row)")
    return teacher_logsumexp


def _log1mexp(x: flow.Tensor) -> flow.Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, accurate near 0 and for very negative ``x`` (-inf at ``x = 0``)."""
    x = flow.clamp(x, max=0.0)
    near = flow.log(-flow.expm1(flow.clamp(x, min=-math.log(2))))
    far = flow.log1p(-flow.exp(flow.clamp(x, max=-math.log(2))))
    return flow.where(x > -math.log(2), near, far)


def _log_tail(s: flow.Tensor, ids: flow.Tensor, log_softmax_s: flow.Tensor) -> flow.Tensor:
    """``log sum_{j not in ids} softmax(s)_j`` ``[..., 1]``, without subtraction: with ``r`` the logits outside
    ``ids`` and ``j`` the largest of them, it is ``log_softmax(s)_j - log_softmax(r)_j`` (= lse(r) - lse(s))."""
    rest = flow.scatter(s, -1, ids, float("-inf"))
    j = flow.argmax(rest.detach(), dim=-1, keepdim=True)
    return flow.gather(log_softmax_s, -1, j) - flow.gather(F.log_softmax(rest, dim=-1), -1, j)


def _bins(student_logits, topk_values, topk_ids, temperature: float, missing: str,
          teacher_logsumexp, tail: bool = True) -> Tuple[flow.Tensor, flow.Tensor]:
    """Log-probabilities of teacher and student over the k + 1 bins (k when k = V or ``tail`` is False,
    for KL with ``"zero"``, whose tail term is 0): ``[..., k(+1)]``."""
    s = _as_float32_if_half(student_logits)
    s = s if temperature == 1.0 else s / temperature
    a = _as_float32_if_half(topk_values).detach().to(dtype=s.dtype)
    a = a if temperature == 1.0 else a / temperature
    ids = topk_ids.to(flow.int64)
    log_softmax_s = F.log_softmax(s, dim=-1)  # (flow.logsumexp over V is ~20x slower on CPU in OneFlow 0.9)
    log_q = flow.gather(log_softmax_s, -1, ids)
    if missing == "zero":
        log_p = F.log_softmax(a, dim=-1)
    else:
        a_lse = flow.logsumexp(a, dim=-1, keepdim=True)  # over the k ids only: small  # the normaliser is at least the top-k's own sum (float16-rounded values may exceed the stored L)
        norm = flow.maximum(_as_float32_if_half(teacher_logsumexp).detach().to(dtype=s.dtype).unsqueeze(-1), a_lse)
        log_p = a - norm
    if not tail or int(topk_ids.shape[-1]) == int(s.shape[-1]):
        return log_p, log_q
    tail_q = _log_tail(s, ids, log_softmax_s)
    if missing == "zero":
        tail_p = flow.full_like(tail_q, float("-inf")).detach()
    else:
        tail_p = _log1mexp(flow.logsumexp(log_p, dim=-1, keepdim=True))
    return flow.cat([log_p, tail_p], dim=-1), flow.cat([log_q, tail_q], dim=-1)


def _kl_bins(log_a: flow.Tensor, log_b: flow.Tensor) -> flow.Tensor:
    """Per-row ``sum exp(log_a) (log_a - log_b)``, ``0 log 0 = 0``: ``[...]``."""
    return (flow.exp(log_a) * (flow.clamp(log_a, min=_LOWEST_LOG) - flow.clamp(log_b, min=_LOWEST_LOG))).sum(dim=-1)


def _sparse_loss(student_logits, topk_values, topk_ids, temperature, missing, teacher_logsumexp, mask,
                 reduction, temperature_scaling, rows_of) -> flow.Tensor:
    _check_student(student_logits)
    _check_topk(student_logits, topk_values, topk_ids)
    temperature = check_temperature("temperature", temperature)
    check_choice("missing", missing, MISSING_PROBABILITY)
    check_choice("reduction", reduction, SPARSE_REDUCTIONS)
    if not isinstance(temperature_scaling, bool):
        raise TypeError(f"temperature_scaling must be True or False, got {temperature_scaling!r}")
    teacher_logsumexp = _check_logsumexp(missing, teacher_logsumexp, student_logits)
    leading = tuple(student_logits.shape[:-1])
    if mask is not None:
        mask = check_mask("mask", mask, leading, _as_float32_if_half(student_logits), "student_logits")
    tail = not (missing == "zero" and rows_of is _kl_bins)  # KL(P || Q) with a zero teacher tail: no term
    log_p, log_q = _bins(student_logits, topk_values, topk_ids, temperature, missing, teacher_logsumexp, tail)
    rows = rows_of(log_p, log_q)
    if temperature_scaling:
        rows = rows * (temperature * temperature)
    return _reduce_rows(rows, mask, reduction, int(student_logits.shape[-1]))


def sparse_kl_div(
    student_logits: flow.Tensor,
    topk_values: flow.Tensor,
    topk_ids: flow.Tensor,
    *,
    temperature: float = 1.0,
    missing: str = "zero",
    teacher_logsumexp: Optional[flow.Tensor] = None,
    mask: Optional[flow.Tensor] = None,
    reduction: str = "batchmean",
    temperature_scaling: bool = False,
) -> flow.Tensor:
    r"""KL(teacher || student) with the teacher known on its top-k ids (formulas in the module doc).

    Args:
        student_logits: dense student logits ``[..., V]`` (the gradient flows here).
        topk_values: the teacher's top-k logits ``[..., k]`` (any float dtype; float16 from the cache), no
            gradient.
        topk_ids: their vocabulary ids ``[..., k]`` (int32/int64, distinct per row, in ``[0, V)``).
        temperature: a number >= 1e-4 dividing both sides' logits.
        missing: ``"zero"`` (renormalise the top-k) or ``"uniform"`` (the remaining mass spread uniformly
            over the other V - k ids, in teacher and student).
        teacher_logsumexp: ``[...]``, the log-sum-exp of the teacher's full logits divided by ``temperature``;
            required by ``"uniform"`` (:meth:`TopKLogits.logsumexp` gives it), ignored by ``"zero"``.
        mask: optional 0/1 tensor ``[...]`` of valid rows (e.g. tokens).
        reduction: ``"batchmean"`` (default), ``"mean"``, ``"sum"`` or ``"none"``.
        temperature_scaling: multiply each row loss by ``T^2``.

    Returns:
        a scalar tensor (``[...]`` for ``reduction="none"``); float32 for float16 inputs.

    Example::

        >>> import oneflow as flow
        >>> s = flow.tensor([[0.0, 1.0, 2.0]])
        >>> values, ids = flow.topk(s, 3, dim=-1)
        >>> sparse_kl_div(s, values, ids).item()  # k = V, same logits
        0.0
        >>> round(sparse_kl_div(flow.zeros(1, 3), values[:, :1], ids[:, :1]).item(), 4)  # log 3: all mass on id 2
        1.0986
    """
    return _sparse_loss(student_logits, topk_values, topk_ids, temperature, missing, teacher_logsumexp, mask,
                        reduction, temperature_scaling, _kl_bins)


def _check_beta(beta) -> float:
    if isinstance(beta, bool) or not isinstance(beta, Real):
        raise TypeError(f"beta must be a number in [0, 1], got {beta!r} ({type(beta).__name__})")
    if not 0.0 <= float(beta) <= 1.0:
        raise ValueError(f"beta must be a number in [0, 1] (0: KL(teacher || student), 1: KL(student || teacher)), "
                         f"got {beta!r}")
    return float(beta)


def _jsd_rows(beta: float):
    def rows(log_p: flow.Tensor, log_q: flow.Tensor) -> flow.Tensor:
        if beta == 0.0:
            return _kl_bins(log_p, log_q)
        if beta == 1.0:
            return _kl_bins(log_q, log_p)
        log_m = flow.logsumexp(flow.stack([log_p + math.log(beta), log_q + math.log(1.0 - beta)], dim=0), dim=0)
        return beta * _kl_bins(log_p, log_m) + (1.0 - beta) * _kl_bins(log_q, log_m)
    return rows


def sparse_js_divergence(
    student_logits: flow.Tensor,
    topk_values: flow.Tensor,
    topk_ids: flow.Tensor,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    missing: str = "zero",
    teacher_logsumexp: Optional[flow.Tensor] = None,
    mask: Optional[flow.Tensor] = None,
    reduction: str = "batchmean",
    temperature_scaling: bool = False,
) -> flow.Tensor:
    r"""The generalized Jensen-Shannon divergence (TRL's GKD) with a top-k teacher (module doc).

    :math:`M = \beta P + (1 - \beta) Q`, :math:`\beta\,\mathrm{KL}(P \| M) + (1 - \beta)\,\mathrm{KL}(Q \| M)`;
    ``beta=0`` is KL(P || Q) (:func:`sparse_kl_div`), ``beta=1`` KL(Q || P). Arguments as
    :func:`sparse_kl_div`, plus ``beta`` in [0, 1]. ``beta=1`` with ``missing="zero"`` and k < V is refused:
    the teacher then gives the other ids probability 0, so KL(Q || P) is infinite.

    Example::

        >>> import oneflow as flow
        >>> s = flow.tensor([[0.0, 1.0, 2.0]])
        >>> values, ids = flow.topk(s, 2, dim=-1)
        >>> sparse_js_divergence(s, values, ids, beta=0.0).item() == sparse_kl_div(s, values, ids).item()
        True
    """
    beta = _check_beta(beta)
    if beta == 1.0 and missing == "zero" and isinstance(topk_values, flow.Tensor) \
            and isinstance(student_logits, flow.Tensor) and topk_values.ndim \
            and student_logits.ndim and int(topk_values.shape[-1]) < int(student_logits.shape[-1]):
        raise ValueError("beta=1 (KL(student || teacher)) with missing='zero' is infinite: the teacher gives the ids "
                         "outside its top-k probability 0; use missing='uniform' or beta < 1")
    return _sparse_loss(student_logits, topk_values, topk_ids, temperature, missing, teacher_logsumexp, mask,
                        reduction, temperature_scaling, _jsd_rows(beta))
