"""Logit losses of :mod:`knowledge_distill_util.functional`: soft cross entropy and KL (with the
memory-lean kernels or the per-row formula), the element-mean MSE, and several teachers' average logits."""
import math
from numbers import Real
from typing import Optional, Sequence, Tuple

import oneflow as flow
import oneflow.nn.functional as F

from .. import _kernels
from .._vocab import uld_rows
from .._soft_targets import (
    Temperature,
    _as_float32_if_half,
    _divide,
    _prepare_soft_targets,
    _product,
    _reduce_rows,
    _rows_loss,
)
from .._checks import check_pair, check_tensor_list


def soft_cross_entropy(
    predicts: flow.Tensor,
    targets: flow.Tensor,
    *,
    student_temperature: Temperature = 1.0,
    teacher_temperature: Temperature = 1.0,
    reduction: str = "mean",
    temperature_scaling: bool = False,
    mask: Optional[flow.Tensor] = None,
    vocab_alignment: Optional[str] = None,
) -> flow.Tensor:
    r"""Soft-label cross entropy; by default the mean over **all elements** (the original reduction).

    Row loss for every row ``n`` of the leading dims ``[...]``, with :math:`p = \operatorname{softmax}`
    over the last dim and :math:`0 \cdot \log 0 = 0`:

    .. math::
        r_n = -\sum_c \operatorname{softmax}(t_n / T_t)_c \, \log\operatorname{softmax}(p_n / T_s)_c

    ``temperature_scaling=True`` multiplies each :math:`r_n` by :math:`T_s T_t` (Hinton's :math:`T^2`).
    With a 0/1 ``mask`` :math:`m` over the leading dims (without one, :math:`m = 1`):

    - ``"mean"`` (default): :math:`\sum m r / (C \sum m)`; without a mask :math:`\sum r / (N C)`,
      exactly the original value (no :math:`T^2`).
    - ``"batchmean"``: :math:`\sum m r / \sum m`;  ``"sum"``: :math:`\sum m r`;
      ``"none"``: :math:`m r` with the leading shape.

    A mask without any valid row gives 0. ``log_softmax`` keeps logits of +-1e4 finite, where the
    original ``log(softmax(.))`` gave inf/NaN; with a mask, a per-row temperature or ``reduction="none"``,
    classes at ``-inf`` in both inputs contribute 0. ``targets`` (the teacher) gets no gradient.

    Args:
        predicts: student logits, shape ``[..., C]`` (``[B, C]``, token-level ``[B, L, V]``, ...).
        targets: teacher logits, same shape, device and dtype as ``predicts``.
        student_temperature, teacher_temperature: finite numbers >= 1e-4 dividing each side's logits, or
            tensors of the leading shape ``[...]`` (one temperature per row, e.g. from
            :mod:`knowledge_distill_util.schedules`; used as constants, no gradient).
        reduction: ``"mean"``, ``"batchmean"``, ``"sum"`` or ``"none"``.
        temperature_scaling: multiply each row loss by ``T_s * T_t``.
        mask: optional 0/1 tensor of the leading shape ``[...]`` (e.g. valid tokens ``[B, L]``).
        vocab_alignment: ``None`` (the last dims must be equal), ``"truncate"`` or ``"uld"`` for a student
            and teacher of different vocabularies: the shared first ``min(V_s, V_t)`` ids, or the loss becomes
            :func:`uld_loss` (see :mod:`knowledge_distill_util.divergences`).

    Returns:
        a scalar tensor, or ``[...]`` for ``reduction="none"``.

    Example::

        >>> import oneflow as flow
        >>> from knowledge_distill_util import soft_cross_entropy
        >>> s = flow.tensor([[1.0, 2.0, 3.0]])
        >>> round(soft_cross_entropy(s, s).item(), 4)  # entropy of softmax(s), divided by C = 3
        0.2775
        >>> round(soft_cross_entropy(s, s, reduction="batchmean").item(), 4)  # the row's entropy
        0.8324
    """
    return _soft_target_loss(predicts, targets, student_temperature, teacher_temperature, ("predicts", "targets"),
                             reduction=reduction, temperature_scaling=temperature_scaling, mask=mask, kl=False,
                             vocab_alignment=vocab_alignment)


def checked_soft_cross_entropy(
    predicts: flow.Tensor,
    targets: flow.Tensor,
    student_temperature: Temperature,
    teacher_temperature: Temperature,
    names: Tuple[str, str],
    *,
    reduction: str = "mean",
    temperature_scaling: bool = False,
    mask: Optional[flow.Tensor] = None,
) -> flow.Tensor:
    """:func:`soft_cross_entropy` whose error messages call the two inputs ``names`` (the original
    operator's: logits of different shapes, vocabularies included, are refused by :func:`check_pair`)."""
    check_pair(names[0], predicts, names[1], targets)
    return _soft_target_loss(predicts, targets, student_temperature, teacher_temperature, names,
                             reduction=reduction, temperature_scaling=temperature_scaling, mask=mask, kl=False)


def kl_div(
    predicts: flow.Tensor,
    targets: flow.Tensor,
    *,
    student_temperature: Temperature = 1.0,
    teacher_temperature: Temperature = 1.0,
    reduction: str = "batchmean",
    temperature_scaling: bool = False,
    mask: Optional[flow.Tensor] = None,
    vocab_alignment: Optional[str] = None,
) -> flow.Tensor:
    r"""KL divergence :math:`\mathrm{KL}(p_t \,\|\, p_s)` of softened distributions (DistilBERT, TextBrewer).

    Row loss for every row ``n`` of the leading dims, :math:`0 \cdot \log 0 = 0`:

    .. math::
        r_n = \sum_c p_{t,c} (\log p_{t,c} - \log p_{s,c}), \quad
        p_s = \operatorname{softmax}(s_n / T_s), \; p_t = \operatorname{softmax}(t_n / T_t)

    Same temperatures, ``temperature_scaling``, ``mask`` and reductions as :func:`soft_cross_entropy`,
    but the default reduction is ``"batchmean"`` (:math:`\sum m r / \sum m`, PyTorch's recommended KL);
    ``temperature_scaling=True`` with ``T_s = T_t = T`` gives Hinton's :math:`T^2`-scaled loss.
    The gradient equals :func:`soft_cross_entropy`'s (they differ by the teacher's entropy).

    Args:
        predicts: student logits ``[..., C]``.
        targets: teacher logits, same shape, device and dtype (no gradient).
        student_temperature, teacher_temperature: numbers >= 1e-4 or per-row tensors of shape ``[...]``.
        reduction: ``"batchmean"`` (default), ``"mean"``, ``"sum"`` or ``"none"``.
        temperature_scaling: multiply each row loss by ``T_s * T_t``.
        mask: optional 0/1 tensor of the leading shape ``[...]``.
        vocab_alignment: ``None`` (equal last dims), ``"truncate"`` or ``"uld"``, as :func:`soft_cross_entropy`.

    Returns:
        a scalar tensor, or ``[...]`` for ``reduction="none"``.

    Example::

        >>> import oneflow as flow
        >>> from knowledge_distill_util.functional import kl_div
        >>> t = flow.tensor([[0.0, 0.0]])
        >>> kl_div(t, t).item()  # identical distributions
        0.0
        >>> round(kl_div(flow.tensor([[0.0, 1.0]]), t).item(), 4)  # log(1 + e) / 2 + log(1 + 1/e) / 2 - log 2
        0.1201
    """
    return _soft_target_loss(predicts, targets, student_temperature, teacher_temperature,
                             ("predicts", "targets"), reduction=reduction,
                             temperature_scaling=temperature_scaling, mask=mask, kl=True,
                             vocab_alignment=vocab_alignment)


def _soft_target_loss(predicts, targets, student_temperature, teacher_temperature, names, *,
                      reduction: str, temperature_scaling: bool, mask, kl: bool,
                      vocab_alignment: Optional[str] = None) -> flow.Tensor:
    """Validate, then take the memory-lean kernel (number temperatures, no mask, a scalar reduction:
    for cross entropy today's values and speed) or the plain per-row formula (every other case)."""
    s, t, t_s, t_t, mask = _prepare_soft_targets(
        predicts, targets, student_temperature, teacher_temperature, names, reduction=reduction,
        temperature_scaling=temperature_scaling, mask=mask, vocab_alignment=vocab_alignment)
    if vocab_alignment == "uld":
        return _rows_loss(uld_rows, s, t, t_s, t_t, reduction=reduction,
                          temperature_scaling=temperature_scaling, mask=mask)
    scale = _product(t_s, t_t) if temperature_scaling else 1.0
    if mask is None and reduction != "none" and isinstance(t_s, float) and isinstance(t_t, float):
        return _kernel_soft_target_loss(s, t, t_s, t_t, reduction, kl) * scale
    rows = _row_soft_target_loss(s, t, t_s, t_t, kl)
    if temperature_scaling:
        rows = rows * scale
    return _reduce_rows(rows, mask, reduction, s.shape[-1])


def _kernel_soft_target_loss(s, t, t_s: float, t_t: float, reduction: str, kl: bool) -> flow.Tensor:
    """The kernels' element mean (memory-lean backward), rescaled to ``reduction``."""
    loss = (_kernels.kl_div_mean if kl else _kernels.soft_cross_entropy_mean)(s, t, t_s, t_t)
    if reduction == "batchmean":
        return loss * s.shape[-1]
    if reduction == "sum":
        return loss * s.numel()
    return loss


#: Log-probabilities are clamped here before they meet a zero probability, so that ``0 * log 0 = 0``:
#: a class at ``-inf`` in both inputs contributes 0 (value and gradient) instead of NaN. It is the float32
#: lowest value, so the difference of two clamped log-probabilities (both <= 0) cannot overflow. A class
#: at ``-inf`` for the student alone where the teacher has mass gives a loss near 3.4e38 instead of inf.
#: (Selecting with ``p == 0`` instead costs about 30x an element-wise pass on CPU: float comparisons and
#: ``flow.exp`` are slow CPU kernels in OneFlow 0.9, so ``p_t`` comes from ``softmax``.)
_LOWEST_LOG = -3.4e38


def _finite_log(log_p: flow.Tensor) -> flow.Tensor:
    return flow.clamp(log_p, min=_LOWEST_LOG)


def _row_soft_target_loss(s, t, t_s: Temperature, t_t: Temperature, kl: bool) -> flow.Tensor:
    """Per-row ``-sum p_t log p_s`` (or ``sum p_t (log p_t - log p_s)``) ``[...]``; terms where
    ``p_t = 0`` are 0, so classes at ``-inf`` in both inputs stay finite."""
    log_p_s = _finite_log(F.log_softmax(_divide(s, t_s), dim=-1))
    t = _divide(t, t_t)
    p_t = F.softmax(t, dim=-1)
    inner = _finite_log(F.log_softmax(t, dim=-1)) - log_p_s if kl else -log_p_s
    return (p_t * inner).sum(dim=-1)


def mseloss(rep1: flow.Tensor, rep2: flow.Tensor) -> flow.Tensor:
    r"""Mean squared error, mean over all elements: :math:`\frac{1}{n}\sum (rep1 - rep2)^2`.

    Symmetric like ``F.mse_loss``: both sides get gradients unless detached (the ``*_distill``
    operators detach the teacher). Shapes must be equal (no broadcasting).

    Example::

        >>> import oneflow as flow
        >>> from knowledge_distill_util import mseloss
        >>> mseloss(flow.tensor([1.0, 2.0]), flow.tensor([0.0, 0.0])).item()
        2.5
    """
    check_pair("rep1", rep1, "rep2", rep2)
    return _kernels.mse_mean(_as_float32_if_half(rep1), _as_float32_if_half(rep2))


def average_logits(teacher_logits: Sequence[flow.Tensor],
                   weights: Optional[Sequence[float]] = None) -> flow.Tensor:
    r"""Weighted average of several teachers' logits, :math:`\sum_i w_i t_i / \sum_i w_i`.

    TextBrewer's multi-teacher soft target: pass the result as the teacher of any loss above.

    Args:
        teacher_logits: non-empty list of tensors of equal shape, device and dtype.
        weights: one finite number >= 0 per teacher with a positive sum; equal weights when None.

    Example::

        >>> import oneflow as flow
        >>> from knowledge_distill_util.functional import average_logits
        >>> average_logits([flow.tensor([0.0, 4.0]), flow.tensor([2.0, 0.0])], weights=[1, 3]).tolist()
        [1.5, 1.0]
    """
    check_tensor_list("teacher_logits", teacher_logits)
    for i, x in enumerate(teacher_logits):
        check_pair("teacher_logits[0]", teacher_logits[0], f"teacher_logits[{i}]", x)
    if weights is None:
        weights = [1.0] * len(teacher_logits)
    if isinstance(weights, (flow.Tensor, str)) or not isinstance(weights, Sequence):
        raise TypeError(f"weights must be a list of numbers (one per teacher) or None, got {type(weights).__name__}")
    if len(weights) != len(teacher_logits):
        raise ValueError(
            f"weights has {len(weights)} entries but there are {len(teacher_logits)} teachers; give one weight "
            f"per teacher"
        )
    for i, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, Real) or not math.isfinite(w) or w < 0:
            raise ValueError(f"weights[{i}] must be a finite number >= 0, got {w!r}")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"weights sum to {total}; at least one teacher needs a positive weight")
    result = None
    for w, x in zip(weights, teacher_logits):
        term = x * (float(w) / total)
        result = term if result is None else result + term
    return result
