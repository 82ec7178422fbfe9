"""Compute kernels behind :mod:`knowledge_distill_util.functional`.

Inputs arrive validated (same shape, device and floating dtype; teacher already detached). Each function
returns a scalar with the original reduction. Only OneFlow ops are used (no host round trips).
"""
from typing import List, Tuple

import oneflow as flow
import oneflow.nn.functional as F

Pair = Tuple[flow.Tensor, flow.Tensor]


def soft_cross_entropy_mean(
    student_logits: flow.Tensor, teacher_logits: flow.Tensor, student_temperature: float, teacher_temperature: float
) -> flow.Tensor:
    """``-mean(softmax(t / T_t) * log_softmax(s / T_s))`` over all elements."""
    log_q = F.log_softmax(student_logits / student_temperature, dim=-1)
    p = F.softmax(teacher_logits / teacher_temperature, dim=-1)
    return -(p * log_q).mean()


def mse_mean(a: flow.Tensor, b: flow.Tensor) -> flow.Tensor:
    """``mean((a - b) ** 2)`` over all elements."""
    return ((a - b) ** 2).mean()


def sum_of_mse(pairs: List[Pair]) -> flow.Tensor:
    """Sum over pairs of :func:`mse_mean`."""
    total = mse_mean(*pairs[0])
    for a, b in pairs[1:]:
        total = total + mse_mean(a, b)
    return total


def sum_of_masked_mse(pairs: List[Pair], threshold: float) -> flow.Tensor:
    """Sum over pairs of the MSE after replacing entries ``<= threshold`` by 0 in both tensors."""
    total = None
    for a, b in pairs:
        a = flow.where(a <= threshold, flow.zeros_like(a), a)
        b = flow.where(b <= threshold, flow.zeros_like(b), b)
        loss = mse_mean(a, b)
        total = loss if total is None else total + loss
    return total
