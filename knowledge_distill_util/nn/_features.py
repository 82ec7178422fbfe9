"""The representation-loss Modules of :mod:`knowledge_distill_util.nn`: hidden states, attention,
relations, FSP and MMD."""
import math
from numbers import Real
from typing import Optional, Sequence

import oneflow as flow

from .. import functional
from .._checks import check_int


class HiddenMSELoss(flow.nn.Module):
    """:func:`~knowledge_distill_util.functional.hidden_mse`: ``[B, L, H]`` pairs, mask ``[B, L]``.

    >>> import oneflow as flow
    >>> HiddenMSELoss()(flow.ones(1, 2, 2), flow.zeros(1, 2, 2), mask=flow.tensor([[1, 0]])).item()
    1.0
    """

    def forward(self, student: flow.Tensor, teacher: flow.Tensor, mask: Optional[flow.Tensor] = None) -> flow.Tensor:
        return functional.hidden_mse(student, teacher, mask=mask)


class HiddenCosineLoss(flow.nn.Module):
    """:func:`~knowledge_distill_util.functional.hidden_cosine`: ``[B, L, H]`` pairs, mask ``[B, L]``.

    >>> import oneflow as flow
    >>> HiddenCosineLoss()(flow.ones(1, 2, 2), flow.ones(1, 2, 2)).item()
    0.0
    """

    def forward(self, student: flow.Tensor, teacher: flow.Tensor, mask: Optional[flow.Tensor] = None) -> flow.Tensor:
        return functional.hidden_cosine(student, teacher, mask=mask)


class PKDLoss(flow.nn.Module):
    """:func:`~knowledge_distill_util.functional.pkd_loss` on [CLS] vectors (``[B, H]`` or ``[B, L, H]``).
    The [CLS] position is always valid, so a ``mask`` is refused rather than ignored.

    >>> import oneflow as flow
    >>> PKDLoss()(flow.tensor([[3.0, 0.0]]), flow.tensor([[0.0, 5.0]])).item()
    2.0
    """

    def forward(self, student: flow.Tensor, teacher: flow.Tensor, mask: Optional[flow.Tensor] = None) -> flow.Tensor:
        if mask is not None:
            raise ValueError("PKDLoss compares [CLS] vectors, which are never padding: it takes no mask; pass mask=None")
        return functional.pkd_loss(student, teacher)


class AttentionMSELoss(flow.nn.Module):
    """:func:`~knowledge_distill_util.functional.attention_mse` with its ``mask_threshold``.

    >>> import oneflow as flow
    >>> AttentionMSELoss()(flow.ones(1, 1, 2, 2), flow.zeros(1, 1, 2, 2)).item()
    1.0
    """

    def __init__(self, mask_threshold: float = functional.ATTENTION_MASK_THRESHOLD):
        super().__init__()
        if isinstance(mask_threshold, bool) or not isinstance(mask_threshold, Real) or math.isnan(mask_threshold):
            raise TypeError(f"mask_threshold must be a number (default -100.0), got {mask_threshold!r}")
        self.mask_threshold = float(mask_threshold)

    def forward(self, student: flow.Tensor, teacher: flow.Tensor, mask: Optional[flow.Tensor] = None) -> flow.Tensor:
        return functional.attention_mse(student, teacher, mask=mask, mask_threshold=self.mask_threshold)

    def extra_repr(self) -> str:
        return f"mask_threshold={self.mask_threshold}"


class AttentionKLLoss(flow.nn.Module):
    """:func:`~knowledge_distill_util.functional.attention_kl` on attention scores ``[B, heads, L, L]``.

    >>> import oneflow as flow
    >>> AttentionKLLoss()(flow.zeros(1, 1, 2, 2), flow.zeros(1, 1, 2, 2)).item()
    0.0
    """

    def forward(self, student: flow.Tensor, teacher: flow.Tensor, mask: Optional[flow.Tensor] = None) -> flow.Tensor:
        return functional.attention_kl(student, teacher, mask=mask)


class RelationKLLoss(flow.nn.Module):
    """:func:`~knowledge_distill_util.functional.relation_kl` with ``num_relation_heads``.

    >>> import oneflow as flow
    >>> RelationKLLoss(num_relation_heads=2)(flow.ones(1, 3, 4), flow.ones(1, 3, 8)).item()
    0.0
    """

    def __init__(self, num_relation_heads: int):
        super().__init__()
        self.num_relation_heads = check_int("num_relation_heads", num_relation_heads)

    def forward(self, student: flow.Tensor, teacher: flow.Tensor, mask: Optional[flow.Tensor] = None) -> flow.Tensor:
        return functional.relation_kl(student, teacher, num_relation_heads=self.num_relation_heads, mask=mask)

    def extra_repr(self) -> str:
        return f"num_relation_heads={self.num_relation_heads}"


class FSPLoss(flow.nn.Module):
    """:func:`~knowledge_distill_util.functional.fsp_loss`: ``forward((s0, s1), (t0, t1), mask=None)``.

    >>> import oneflow as flow
    >>> x = flow.ones(1, 2, 2)
    >>> FSPLoss()((x, x), (x, 2 * x)).item()
    1.0
    """

    def forward(self, student: Sequence[flow.Tensor], teacher: Sequence[flow.Tensor],
                mask: Optional[flow.Tensor] = None) -> flow.Tensor:
        return functional.fsp_loss(student, teacher, mask=mask)


class MMDLoss(flow.nn.Module):
    """:func:`~knowledge_distill_util.functional.mmd_loss`: ``forward((s0, s1), (t0, t1), mask=None)``.

    >>> import oneflow as flow
    >>> MMDLoss()((flow.ones(1, 2, 3),) * 2, (flow.ones(1, 2, 5),) * 2).item()
    0.0
    """

    def forward(self, student: Sequence[flow.Tensor], teacher: Sequence[flow.Tensor],
                mask: Optional[flow.Tensor] = None) -> flow.Tensor:
        return functional.mmd_loss(student, teacher, mask=mask)
