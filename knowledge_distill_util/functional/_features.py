"""FSP and MMD losses of :mod:`knowledge_distill_util.functional` (Gram matrices of two features per
side)."""
from typing import Optional, Sequence, Tuple

import oneflow as flow

from .._soft_targets import _as_float32_if_half, _mean_scale
from .._checks import check_ndim, check_same_leading_dims
from ._common import Pair, _pair_excluded, _pair_mask, _sum_all


def _feature_pairs(student, teacher) -> Tuple[Pair, Pair]:
    """Validate ``(s0, s1)``, ``(t0, t1)``: four ``[B, L, H]`` tensors with equal ``B`` and ``L``."""
    for name, value in (("student", student), ("teacher", teacher)):
        if isinstance(value, flow.Tensor) or not isinstance(value, Sequence) or len(value) != 2:
            raise TypeError(
                f"{name} must be a pair (x0, x1) of [B, L, H] tensors (two layers' features), "
                f"got {type(value).__name__}" + (f" of length {len(value)}" if isinstance(value, Sequence) else "")
            )
    names = ("student[0]", "student[1]", "teacher[0]", "teacher[1]")
    tensors = (*student, *teacher)
    for name, x in zip(names[1:], tensors[1:]):
        check_same_leading_dims(names[0], tensors[0], name, x, 2)
    check_ndim(names[0], tensors[0], (3,), "[B, L, H]")
    s0, s1, t0, t1 = (_as_float32_if_half(x) for x in tensors)
    return (s0, s1), (t0.detach(), t1.detach())


def _fsp_gram(x0: flow.Tensor, x1: flow.Tensor, mask: Optional[flow.Tensor]) -> flow.Tensor:
    """``x0^T x1 / L`` ``[B, H0, H1]``; with a mask, padding rows zeroed and divided by ``n_b``."""
    if mask is None:
        return flow.matmul(x0.transpose(1, 2), x1) / x0.shape[1]
    counts = flow.clamp(mask.sum(dim=1), min=1.0).reshape(-1, 1, 1)
    padding = (mask == 0).unsqueeze(-1)
    x0, x1 = flow.masked_fill(x0, padding, 0.0), flow.masked_fill(x1, padding, 0.0)
    return flow.matmul(x0.transpose(1, 2), x1) / counts


def fsp_loss(student: Sequence[flow.Tensor], teacher: Sequence[flow.Tensor], *,
             mask: Optional[flow.Tensor] = None) -> flow.Tensor:
    r"""FSP (flow of solution procedure) loss between two features per side.

    Per side the Gram :math:`G = x_0^\top x_1 / L` ``[B, H_0, H_1]``; the loss is the mean of
    :math:`(G_s - G_t)^2`. With ``mask`` ``[B, L]`` padding rows are zeroed and :math:`L` becomes
    :math:`n_b = \sum_l m_{bl}`; sequences without a valid position are left out of the mean.

    Args:
        student: pair ``(s0, s1)`` of ``[B, L, H_0]``, ``[B, L, H_1]`` features.
        teacher: pair ``(t0, t1)``; its Gram shape must equal the student's (no gradient).
        mask: optional 0/1 ``[B, L]``.

    Example::

        >>> import oneflow as flow
        >>> from knowledge_distill_util.functional import fsp_loss
        >>> x = flow.ones(1, 2, 2)
        >>> fsp_loss((x, x), (x, 2 * x)).item()  # G_s = 1, G_t = 2 everywhere
        1.0
    """
    (s0, s1), (t0, t1) = _feature_pairs(student, teacher)
    gram_s, gram_t = (s0.shape[-1], s1.shape[-1]), (t0.shape[-1], t1.shape[-1])
    if gram_s != gram_t:
        raise ValueError(
            f"the FSP Gram shapes differ: student {gram_s} (widths of student[0], student[1]) but teacher "
            f"{gram_t}; project the student's features to the teacher's widths first (nn.Projection)"
        )
    mask = _pair_mask(mask, s0.shape[0], s0.shape[1], s0, "student[0]")
    squares = _sum_all(flow.square(_fsp_gram(s0, s1, mask) - _fsp_gram(t0, t1, mask)))
    if mask is None:
        return squares * _mean_scale(s0.shape[0] * gram_s[0] * gram_s[1])
    sequences = flow.clamp((mask.sum(dim=1) > 0).to(dtype=s0.dtype).sum(), min=1.0)
    return squares / (sequences * (gram_s[0] * gram_s[1]))


def mmd_loss(student: Sequence[flow.Tensor], teacher: Sequence[flow.Tensor], *,
             mask: Optional[flow.Tensor] = None) -> flow.Tensor:
    r"""MMD-style loss between position-by-position Grams of two features per side (TextBrewer's ``mmd``).

    Per side :math:`G = x_0 x_1^\top / H` ``[B, L, L]`` (the widths may differ between the sides); the
    loss is the mean of :math:`(G_s - G_t)^2`; with ``mask`` ``[B, L]`` it is
    :math:`\sum (G_s - G_t)^2 m_{bi} m_{bj} / \sum_b n_b^2`.

    Args:
        student: pair ``(s0, s1)`` of ``[B, L, H_s]`` features.
        teacher: pair ``(t0, t1)`` of ``[B, L, H_t]`` features (no gradient).
        mask: optional 0/1 ``[B, L]``.

    Example::

        >>> import oneflow as flow
        >>> from knowledge_distill_util.functional import mmd_loss
        >>> x = flow.ones(1, 2, 3)
        >>> mmd_loss((x, x), (flow.ones(1, 2, 5), flow.ones(1, 2, 5))).item()  # both Grams are 1
        0.0
    """
    (s0, s1), (t0, t1) = _feature_pairs(student, teacher)
    for side, (x0, x1) in (("student", (s0, s1)), ("teacher", (t0, t1))):
        if x0.shape[-1] != x1.shape[-1]:
            raise ValueError(
                f"{side}[0] has width {x0.shape[-1]} but {side}[1] has width {x1.shape[-1]}; the MMD Gram "
                f"x0 x1^T needs the two features of one side to have the same width"
            )
    mask = _pair_mask(mask, s0.shape[0], s0.shape[1], s0, "student[0]")
    g_s = flow.matmul(s0, s1.transpose(1, 2)) / s0.shape[-1]
    g_t = flow.matmul(t0, t1.transpose(1, 2)) / t0.shape[-1]
    squares = flow.square(g_s - g_t)
    if mask is None:
        return _sum_all(squares) * _mean_scale(squares.numel())
    squares = flow.masked_fill(squares, _pair_excluded(mask), 0.0)
    return _sum_all(squares) / flow.clamp(flow.square(mask.sum(dim=-1)).sum(), min=1.0)
