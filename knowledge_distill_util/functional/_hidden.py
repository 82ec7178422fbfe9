"""Hidden-state losses of :mod:`knowledge_distill_util.functional`: masked MSE, cosine, BERT-PKD."""
from typing import Optional

import oneflow as flow

from .. import _kernels
from .._soft_targets import _mean_scale
from .._checks import check_mask
from ._common import _prepare_pair, _sum_all


def _masked_mean_rows(rows: flow.Tensor, mask: Optional[flow.Tensor], per_row: int = 1) -> flow.Tensor:
    """``sum(m * rows) / (sum(m) * per_row)`` (masked rows give exactly 0; no valid row gives 0); without
    a mask the plain mean ``sum(rows) / (numel * per_row)``."""
    if mask is None:
        return _sum_all(rows) * _mean_scale(rows.numel() * per_row)
    total = _sum_all(flow.masked_fill(rows, mask == 0, 0.0))
    return total / (flow.clamp(mask.sum(), min=1.0) * per_row)


def hidden_mse(student: flow.Tensor, teacher: flow.Tensor, *, mask: Optional[flow.Tensor] = None) -> flow.Tensor:
    r"""Padding-aware MSE between hidden states.

    .. math::
        \ell = \frac{\sum_{b,l} m_{bl} \sum_h (s_{blh} - t_{blh})^2}{H \sum_{b,l} m_{bl}}

    Without a mask: the plain element mean (the value of :func:`mseloss`).

    Args:
        student: ``[B, L, H]`` (any ``[..., H]``).
        teacher: same shape, device and dtype (no gradient).
        mask: optional 0/1 ``[B, L]`` (the leading dims): 1 for tokens, 0 for padding.

    Example::

        >>> import oneflow as flow
        >>> from knowledge_distill_util.functional import hidden_mse
        >>> s, t = flow.ones(1, 2, 2), flow.zeros(1, 2, 2)
        >>> hidden_mse(s, t).item()
        1.0
        >>> hidden_mse(s * flow.tensor([[[1.0], [3.0]]]), t, mask=flow.tensor([[1, 0]])).item()  # row 2 is padding
        1.0
    """
    s, t = _prepare_pair("student", student, "teacher", teacher, range(1, 64), "[..., H]")
    if mask is None:
        return _kernels.mse_mean(s, t)
    mask = check_mask("mask", mask, tuple(s.shape[:-1]), s, "student")
    return _masked_mean_rows(flow.square(s - t).sum(dim=-1), mask, s.shape[-1])


def hidden_cosine(student: flow.Tensor, teacher: flow.Tensor, *, mask: Optional[flow.Tensor] = None) -> flow.Tensor:
    r"""Cosine hidden-state loss: the mean over valid positions ``(b, l)`` of one minus the cosine.

    .. math::
        \ell = \frac{\sum_{b,l} m_{bl} \left(1 - \frac{s_{bl} \cdot t_{bl}}
               {\max(\lVert s_{bl}\rVert \, \lVert t_{bl}\rVert, 10^{-8})}\right)}{\sum_{b,l} m_{bl}}

    Args:
        student: ``[B, L, H]`` (any ``[..., H]``).
        teacher: same shape, device and dtype (no gradient).
        mask: optional 0/1 ``[B, L]``.

    Example::

        >>> import oneflow as flow
        >>> from knowledge_distill_util.functional import hidden_cosine
        >>> s = flow.tensor([[[1.0, 0.0], [1.0, 1.0]]])
        >>> t = flow.tensor([[[0.0, 1.0], [2.0, 2.0]]])
        >>> hidden_cosine(s, t).item()  # (1 - 0 + 1 - 1) / 2
        0.5
    """
    s, t = _prepare_pair("student", student, "teacher", teacher, range(1, 64), "[..., H]")
    if mask is not None:
        mask = check_mask("mask", mask, tuple(s.shape[:-1]), s, "student")
    dot = (s * t).sum(dim=-1)
    # max(|s| |t|, 1e-8) == sqrt(max(|s|^2 |t|^2, 1e-16)); clamping before the root keeps zero vectors'
    # gradients finite
    norms = flow.sqrt(flow.clamp(flow.square(s).sum(dim=-1) * flow.square(t).sum(dim=-1), min=1e-16))
    return _masked_mean_rows(1.0 - dot / norms, mask)


def _unit_rows(x: flow.Tensor, eps: float = 1e-12) -> flow.Tensor:
    """``x / max(|x|_2, eps)`` over the last dim (as the clamped root, finite gradients at 0)."""
    return x / flow.sqrt(flow.clamp(flow.square(x).sum(dim=-1, keepdim=True), min=eps * eps))


def pkd_loss(student: flow.Tensor, teacher: flow.Tensor) -> flow.Tensor:
    r"""BERT-PKD's patience loss between normalised [CLS] vectors.

    .. math::
        \ell = \frac{1}{B} \sum_b \sum_h \left(\frac{s_{bh}}{\max(\lVert s_b\rVert_2, 10^{-12})}
               - \frac{t_{bh}}{\max(\lVert t_b\rVert_2, 10^{-12})}\right)^2

    Args:
        student: ``[B, H]`` [CLS] vectors, or ``[B, L, H]`` hidden states (position 0 is used).
        teacher: same shape, device and dtype (no gradient).

    Example::

        >>> import oneflow as flow
        >>> from knowledge_distill_util.functional import pkd_loss
        >>> pkd_loss(flow.tensor([[3.0, 0.0]]), flow.tensor([[0.0, 5.0]])).item()  # |(1, 0) - (0, 1)|^2
        2.0
    """
    s, t = _prepare_pair("student", student, "teacher", teacher, (2, 3), "[B, H] or [B, L, H]")
    if s.ndim == 3:
        s, t = s[:, 0], t[:, 0]
    return _sum_all(flow.square(_unit_rows(s) - _unit_rows(t))) * _mean_scale(s.shape[0])
