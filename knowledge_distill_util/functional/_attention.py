"""Attention and relation losses of :mod:`knowledge_distill_util.functional`: masked attention MSE,
MiniLM's attention KL and (MiniLMv2's) relation KL."""
from numbers import Real
from typing import Optional

import oneflow as flow

from .. import _kernels
from .._soft_targets import _as_float32_if_half, _mean_scale
from .._checks import check_ndim, check_int, check_same_leading_dims
from ._common import ATTENTION_MASK_THRESHOLD, _pair_excluded, _pair_mask, _prepare_pair, _sum_all


def attention_mse(
    student: flow.Tensor,
    teacher: flow.Tensor,
    *,
    mask: Optional[flow.Tensor] = None,
    mask_threshold: float = ATTENTION_MASK_THRESHOLD,
) -> flow.Tensor:
    r"""Padding-aware MSE between attention matrices (TinyBERT's attention loss).

    In each tensor on its own every entry ``<= mask_threshold`` (the ``-10000`` additive mask,
    ``-inf``) is replaced by 0 (as :func:`att_distill_loss`). Without a mask: the element mean (the
    per-pair value of ``att_distill``). With ``mask`` :math:`m` ``[B, L]``, :math:`n_b = \sum_l m_{bl}`:

    .. math::
        \ell = \frac{\sum_{b,h,i,j} (s_{bhij} - t_{bhij})^2 \, m_{bi} m_{bj}}{\text{heads} \sum_b n_b^2}

    Args:
        student: ``[B, heads, L, L]`` attention scores or probabilities.
        teacher: same shape, device and dtype (no gradient).
        mask: optional 0/1 ``[B, L]``.
        mask_threshold: entries at or below it are zeroed (default -100).

    Example::

        >>> import oneflow as flow
        >>> from knowledge_distill_util.functional import attention_mse
        >>> s = flow.tensor([[[[1.0, -10000.0], [3.0, -10000.0]]]])
        >>> attention_mse(s, flow.zeros(1, 1, 2, 2)).item()  # (1 + 9) / 4
        2.5
        >>> attention_mse(s, flow.zeros(1, 1, 2, 2), mask=flow.tensor([[1, 0]])).item()  # only (0, 0)
        1.0
    """
    s, t = _prepare_pair("student", student, "teacher", teacher, (4,), "[B, heads, L, L]")
    if isinstance(mask_threshold, bool) or not isinstance(mask_threshold, Real):
        raise TypeError(f"mask_threshold must be a number, got {mask_threshold!r}")
    mask = _pair_mask(mask, s.shape[0], s.shape[-1], s, "student")
    s, t = _kernels.masked(s, mask_threshold), _kernels.masked(t, mask_threshold)
    if mask is None:
        return _kernels.mse_mean(s, t)
    squares = flow.masked_fill(flow.square(s - t), _pair_excluded(mask).unsqueeze(1), 0.0)
    counts = flow.square(mask.sum(dim=-1)).sum() * s.shape[1]
    return _sum_all(squares) / flow.clamp(counts, min=1.0)


def _masked_row_kl(student_scores: flow.Tensor, teacher_scores: flow.Tensor,
                   key_mask: Optional[flow.Tensor]) -> flow.Tensor:
    """Per-row ``KL(softmax(t) || softmax(s))`` over the last (key) dim: ``[..., L_q, L_k] -> [..., L_q]``.

    ``key_mask``: None or a 0/1 tensor of the scores' dtype of exactly the shape ``[B, 1, 1, L_k]``; keys
    with 0 are excluded from both softmaxes (replaced, so inf/NaN on excluded keys does not matter); a row
    without any valid key gives 0 (and no NaN gradient). Terms with ``p_t = 0`` are 0 (``0 log 0 = 0``), so
    keys at ``-inf`` in both inputs stay finite; a valid key at ``-inf`` in the student alone gives a huge
    finite value rather than inf. The teacher must be detached.

    The single seam of :func:`attention_kl` and :func:`relation_kl`: the memory-lean
    ``_kernels.masked_row_kl`` (it saves only the inputs and recomputes both softmaxes in backward).
    """
    return _kernels.masked_row_kl(student_scores, teacher_scores, key_mask)


def _mean_row_kl(s: flow.Tensor, t: flow.Tensor, mask: Optional[flow.Tensor]) -> flow.Tensor:
    """Mean of :func:`_masked_row_kl` over batch, heads and valid query rows (``[B, heads, L, L]``)."""
    if mask is None:
        return _sum_all(_masked_row_kl(s, t, None)) * _mean_scale(s.numel() // max(1, s.shape[-1]))
    rows = _masked_row_kl(s, t, mask.reshape(mask.shape[0], 1, 1, mask.shape[1]))
    rows = flow.masked_fill(rows, mask.unsqueeze(1) == 0, 0.0)
    return _sum_all(rows) / flow.clamp(mask.sum() * s.shape[1], min=1.0)


def attention_kl(student: flow.Tensor, teacher: flow.Tensor, *, mask: Optional[flow.Tensor] = None) -> flow.Tensor:
    r"""MiniLM's attention transfer: the row KL of attention distributions from raw **scores**.

    With :math:`p = \operatorname{softmax}` over the keys :math:`j` whose :math:`m_{bj} = 1`:

    .. math::
        \ell = \frac{\sum_{b,h,i} m_{bi} \, \mathrm{KL}(p_t(t_{bhi}) \,\|\, p_s(s_{bhi}))}
               {\text{heads} \sum_b n_b}, \qquad n_b = \sum_l m_{bl}

    Without a mask: the mean over all ``B * heads * L`` rows. Keys at ``-inf`` in both inputs
    contribute 0.

    Args:
        student: ``[B, heads, L, L]`` attention scores before the softmax.
        teacher: same shape, device and dtype (no gradient).
        mask: optional 0/1 ``[B, L]``: keys and query rows of padding (0) are excluded.

    Example::

        >>> import oneflow as flow
        >>> from knowledge_distill_util.functional import attention_kl
        >>> s = flow.zeros(1, 1, 2, 2)
        >>> attention_kl(s, s).item()
        0.0
        >>> t = flow.tensor([[[[0.0, 9.0], [0.0, 9.0]]]])
        >>> attention_kl(s, t, mask=flow.tensor([[1, 0]])).item()  # one valid key: both softmaxes are 1
        0.0
    """
    s, t = _prepare_pair("student", student, "teacher", teacher, (4,), "[B, heads, L, L]")
    if s.shape[-1] != s.shape[-2]:
        raise ValueError(f"student must have shape [B, heads, L, L] (square scores), got {tuple(s.shape)}")
    mask = _pair_mask(mask, s.shape[0], s.shape[-1], s, "student")
    return _mean_row_kl(s, t, mask)


def _relation_scores(x: flow.Tensor, heads: int) -> flow.Tensor:
    """``[B, L, H] -> [B, R, L, L]`` scores ``x_r x_r^T / sqrt(d)`` of ``R`` heads of size ``d = H / R``
    (head ``r`` is the column block ``r*d:(r+1)*d``; ``heads`` divides ``H``, validated by the caller).
    Computed by ``_kernels.relation_scores`` (contiguous pre-scaled heads, ``transpose_b`` matmul)."""
    return _kernels.relation_scores(x, heads)


def relation_kl(
    student: flow.Tensor,
    teacher: flow.Tensor,
    *,
    num_relation_heads: int,
    mask: Optional[flow.Tensor] = None,
) -> flow.Tensor:
    r"""MiniLM's value relation / MiniLMv2's self-attention relation KL.

    Each side ``x`` ``[B, L, H]`` is split into ``R = num_relation_heads`` heads of size ``d = H / R``;
    the relation scores :math:`x_r x_r^\top / \sqrt{d}` ``[B, R, L, L]`` then go through
    :func:`attention_kl` (keys and query rows of padding excluded). The widths ``H_s`` and ``H_t`` may
    differ; each must be divisible by ``R``.

    Args:
        student: ``[B, L, H_s]`` values, queries or keys of one layer (concatenated heads).
        teacher: ``[B, L, H_t]`` the teacher's (no gradient).
        num_relation_heads: ``R``, an integer >= 1 dividing both widths.
        mask: optional 0/1 ``[B, L]``.

    Example::

        >>> import oneflow as flow
        >>> from knowledge_distill_util.functional import relation_kl
        >>> v = flow.tensor([[[1.0, 0.0], [0.0, 1.0]]])
        >>> relation_kl(v, flow.cat([v, v], dim=-1), num_relation_heads=1).item() > 0  # sharper teacher
        True
        >>> relation_kl(v, v, num_relation_heads=2).item()
        0.0
    """
    check_same_leading_dims("student", student, "teacher", teacher, 2)
    check_ndim("student", student, (3,), "[B, L, H_s]")
    heads = check_int("num_relation_heads", num_relation_heads)
    for name, x in (("student", student), ("teacher", teacher)):
        if x.shape[-1] % heads:
            raise ValueError(
                f"{name}'s width {x.shape[-1]} is not divisible by num_relation_heads={heads}; choose a "
                f"number of relation heads that divides both widths ({student.shape[-1]} and {teacher.shape[-1]})"
            )
    s, t = _as_float32_if_half(student), _as_float32_if_half(teacher).detach()
    mask = _pair_mask(mask, s.shape[0], s.shape[1], s, "student")
    return _mean_row_kl(_relation_scores(s, heads), _relation_scores(t, heads), mask)
