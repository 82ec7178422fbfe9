"""Helpers shared by the loss families of :mod:`knowledge_distill_util.functional`: the attention
mask threshold, the pair type, the 1-D sum, pair validation and the ``[B, L]`` pair masks."""
from typing import Optional, Sequence, Tuple

import oneflow as flow

from .._soft_targets import _as_float32_if_half
from .._checks import check_mask, check_ndim, check_pair


#: Attention entries ``<= ATTENTION_MASK_THRESHOLD`` (the additive ``-10000`` padding mask, ``-inf``)
#: are replaced by 0 in both tensors before the MSE, as in the original ``att_distill``.
ATTENTION_MASK_THRESHOLD = -100.0


Pair = Tuple[flow.Tensor, flow.Tensor]


def _sum_all(x: flow.Tensor) -> flow.Tensor:
    """Sum of every element (local tensors as one 1-D reduction)."""
    return x.sum() if x.is_global else x.reshape(-1).sum()


def _prepare_pair(s_name: str, student: flow.Tensor, t_name: str, teacher: flow.Tensor,
                  ndims: Sequence[int], layout: str) -> Pair:
    """Validate an equal-shape pair of ``layout``; float16 to float32; teacher detached."""
    check_pair(s_name, student, t_name, teacher)
    check_ndim(s_name, student, ndims, layout)
    return _as_float32_if_half(student), _as_float32_if_half(teacher).detach()


def _pair_mask(mask: Optional[flow.Tensor], batch: int, length: int, like: flow.Tensor, like_name: str):
    """Validated ``[B, L]`` mask or None."""
    return None if mask is None else check_mask("mask", mask, (batch, length), like, like_name)


def _pair_excluded(mask: flow.Tensor) -> flow.Tensor:
    """Boolean ``[B, L, L]``: True where ``m_bi * m_bj == 0`` (such entries are filled with 0, never
    multiplied by 0, so padding that holds inf or NaN contributes nothing). Built from booleans: a float
    comparison over ``[B, L, L]`` costs about 20x the boolean ops on CPU in OneFlow 0.9."""
    valid = mask > 0
    return flow.logical_not(flow.logical_and(valid.unsqueeze(-1), valid.unsqueeze(-2)))
