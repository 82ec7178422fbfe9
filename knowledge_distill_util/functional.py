"""Pure tensor math of the distillation losses: explicit keyword arguments, no ``args``, no I/O.

Every loss returns a scalar tensor on the inputs' device. Reductions follow the original Tianshu/Dubhe
operators exactly: soft cross entropy and MSE are **means over all elements**, layer losses are **sums
over the mapped layer pairs**. The teacher side never receives a gradient. float16 inputs are computed
in float32 (the loss is returned as float32), so extreme logits stay finite.

Layer maps (the original "uniform" strategy)::

    hidden states (embedding + Ls layers)  student i -> teacher i * k            for i = 0..Ls
    attentions    (Ls layers)              student i -> teacher i * k + k - 1    for i = 0..Ls-1
    where k = Lt // Ls and Lt % Ls == 0

Further strategies (``"first"``, ``"last"``, ``"round"``) and the losses of the PyTorch distillation
toolkits (KL with T², masks, reductions, cosine, BERT-PKD, attention and relation KL, FSP, MMD,
multi-teacher averages) are opt-in keyword arguments and functions; the defaults keep every original value.
Masks are 0/1 tensors (any numeric or bool dtype) of exactly the stated shape; a sequence without a valid
position contributes nothing, and a mask without any valid position gives 0.
"""
import math
from numbers import Real
from typing import List, Optional, Sequence, Tuple

import oneflow as flow
import oneflow.nn.functional as F

from . import _kernels
from ._vocab import VOCAB_ALIGNMENTS, uld_rows
from ._soft_targets import (
    REDUCTIONS,
    Temperature,
    _as_float32_if_half,
    _divide,
    _mean_scale,
    _prepare_soft_targets,
    _product,
    _reduce_rows,
    _rows_loss,
)
from ._checks import (
    check_choice,
    check_mask,
    check_ndim,
    check_int,
    check_pair,
    check_same_leading_dims,
    check_tensor_list,
)

__all__ = [
    "soft_cross_entropy",
    "mseloss",
    "hidden_layer_map",
    "attention_layer_map",
    "layer_distill_loss",
    "att_distill_loss",
    "ATTENTION_MASK_THRESHOLD",
    "REDUCTIONS",
    "LAYER_MAP_STRATEGIES",
    "kl_div",
    "hidden_mse",
    "hidden_cosine",
    "pkd_loss",
    "attention_mse",
    "attention_kl",
    "relation_kl",
    "fsp_loss",
    "mmd_loss",
    "average_logits",
    "VOCAB_ALIGNMENTS",
]

#: Attention entries ``<= ATTENTION_MASK_THRESHOLD`` (the additive ``-10000`` padding mask, ``-inf``)
#: are replaced by 0 in both tensors before the MSE, as in the original ``att_distill``.
ATTENTION_MASK_THRESHOLD = -100.0

#: The layer-map strategies of :func:`hidden_layer_map` and :func:`attention_layer_map`.
LAYER_MAP_STRATEGIES = ("uniform", "first", "last", "round")

Pair = Tuple[flow.Tensor, flow.Tensor]


def _sum_all(x: flow.Tensor) -> flow.Tensor:
    """Sum of every element (local tensors as one 1-D reduction)."""
    return x.sum() if x.is_global else x.reshape(-1).sum()


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


def _check_layer_counts(num_student: int, num_teacher: int, student_name: str, teacher_name: str) -> None:
    for name, value in ((student_name, num_student), (teacher_name, num_teacher)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an integer count, got {value!r} ({type(value).__name__})")
    if num_student < 1:
        raise ValueError(f"{student_name} has no layers; pass at least one")
    if num_student > num_teacher:
        raise ValueError(
            f"the student has more layers ({student_name}: {num_student}) than the teacher "
            f"({teacher_name}: {num_teacher}); distil into a student with at most {num_teacher} layers"
        )


def _uniform_stride(num_student: int, num_teacher: int, student_name: str, teacher_name: str, what: str) -> int:
    if num_student < 1:
        raise ValueError(f"{student_name} has no {what}; pass at least one")
    if num_student > num_teacher:
        raise ValueError(
            f"the student has more {what} ({student_name}: {num_student}) than the teacher "
            f"({teacher_name}: {num_teacher}); distil into a student with at most {num_teacher} {what}"
        )
    if num_teacher % num_student != 0:
        raise ValueError(
            f"the teacher's {what} count ({teacher_name}: {num_teacher}) must be a multiple of the "
            f"student's ({student_name}: {num_student}) for the uniform layer map; choose a student with "
            f"a divisor of {num_teacher} {what}, pass strategy=\"round\" or an explicit layer_map"
        )
    return num_teacher // num_student


def _teacher_layers(num_student: int, num_teacher: int, strategy: str, student_name: str,
                    teacher_name: str) -> List[int]:
    """1-based teacher layer ``f(i)`` for each 1-based student layer ``i`` under ``strategy``."""
    check_choice("strategy", strategy, LAYER_MAP_STRATEGIES)
    _check_layer_counts(num_student, num_teacher, student_name, teacher_name)
    layers = range(1, num_student + 1)
    if strategy == "uniform":
        k = _uniform_stride(num_student, num_teacher, student_name, teacher_name, "layers")
        return [i * k for i in layers]
    if strategy == "first":
        return list(layers)
    if strategy == "last":
        return [num_teacher - num_student + i for i in layers]
    # "round": floor(i * n_t / n_s + 0.5) in exact integer arithmetic
    return [(2 * i * num_teacher + num_student) // (2 * num_student) for i in layers]


def hidden_layer_map(num_student_reps: int, num_teacher_reps: int,
                     strategy: str = "uniform") -> List[Tuple[int, int]]:
    """Pairs ``(student_index, teacher_index)`` for hidden-state lists (embedding + layers).

    The embedding pair ``(0, 0)`` comes first; student layer ``i`` (1-based) pairs with teacher layer
    ``f(i)``: ``"uniform"`` ``i * k`` with ``k = n_t / n_s`` (the original; needs ``n_t % n_s == 0``),
    ``"first"`` ``i``, ``"last"`` ``n_t - n_s + i``, ``"round"`` ``floor(i * n_t / n_s + 0.5)``,
    where ``n_s``, ``n_t`` are the layer counts (list lengths minus the embedding).

    >>> hidden_layer_map(5, 13)
    [(0, 0), (1, 3), (2, 6), (3, 9), (4, 12)]
    >>> hidden_layer_map(6, 13, strategy="round")
    [(0, 0), (1, 2), (2, 5), (3, 7), (4, 10), (5, 12)]
    """
    layers = _teacher_layers(_minus_one(num_student_reps, "student_reps"), _minus_one(num_teacher_reps, "teacher_reps"),
                             strategy, "student_reps", "teacher_reps")
    return [(0, 0)] + [(i, f) for i, f in enumerate(layers, start=1)]


def _minus_one(value, name: str):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer count, got {value!r} ({type(value).__name__})")
    return value - 1


def attention_layer_map(num_student_atts: int, num_teacher_atts: int,
                        strategy: str = "uniform") -> List[Tuple[int, int]]:
    """Pairs ``(student_index, teacher_index)`` (0-based list positions) for per-layer attention lists.

    Student layer ``i`` (1-based) pairs with teacher layer ``f(i)`` of :func:`hidden_layer_map`'s
    strategies, i.e. positions ``(i - 1, f(i) - 1)``; ``"uniform"`` is the original ``i * k + k - 1``.

    >>> attention_layer_map(4, 12)
    [(0, 2), (1, 5), (2, 8), (3, 11)]
    >>> attention_layer_map(5, 12, strategy="round")
    [(0, 1), (1, 4), (2, 6), (3, 9), (4, 11)]
    """
    layers = _teacher_layers(num_student_atts, num_teacher_atts, strategy, "student_atts", "teacher_atts")
    return [(i, f - 1) for i, f in enumerate(layers)]


def _explicit_pairs(layer_map: Sequence[int], num_student: int, num_teacher: int, teacher_name: str) -> List[Tuple[int, int]]:
    if len(layer_map) != num_student:
        raise ValueError(
            f"layer_map has {len(layer_map)} entries but the student list has {num_student}; "
            f"give one teacher index per student entry"
        )
    for i, j in enumerate(layer_map):
        if not isinstance(j, int) or not 0 <= j < num_teacher:
            raise ValueError(
                f"layer_map[{i}] = {j!r} is not a valid index into {teacher_name} (length {num_teacher})"
            )
    return list(enumerate(layer_map))


def _mapped_pairs(student, teacher, layer_map, uniform_map, kind: str, strategy: str = "uniform") -> List[Pair]:
    """Validate both ``{kind}`` lists, map them, check every pair; teacher sides detached."""
    s_name, t_name = f"student_{kind}", f"teacher_{kind}"
    check_choice("strategy", strategy, LAYER_MAP_STRATEGIES)
    check_tensor_list(s_name, student)
    check_tensor_list(t_name, teacher)
    if layer_map is not None and strategy != "uniform":
        raise ValueError(
            f"pass either layer_map or strategy, not both (got layer_map={list(layer_map)!r} and "
            f"strategy={strategy!r}); an explicit layer_map already fixes every pair"
        )
    if layer_map is None:
        pairs = uniform_map(len(student), len(teacher), strategy)
    else:
        pairs = _explicit_pairs(layer_map, len(student), len(teacher), t_name)
    checked = []
    for i, j in pairs:
        check_pair(f"{s_name}[{i}]", student[i], f"{t_name}[{j}] (its paired teacher entry)", teacher[j])
        checked.append((_as_float32_if_half(student[i]), _as_float32_if_half(teacher[j]).detach()))
    return checked


def layer_distill_loss(
    student_reps: Sequence[flow.Tensor],
    teacher_reps: Sequence[flow.Tensor],
    *,
    layer_map: Optional[Sequence[int]] = None,
    strategy: str = "uniform",
) -> flow.Tensor:
    """Sum over mapped pairs of the element-mean MSE between hidden states.

    Args:
        student_reps: ``Ls + 1`` tensors ``[B, L, H]`` (embedding output, then each layer).
        teacher_reps: ``Lt + 1`` tensors of the same shapes (project the student with ``fit_dense``
            first when hidden sizes differ).
        layer_map: optional teacher index for each student entry; default :func:`hidden_layer_map`.
        strategy: the :func:`hidden_layer_map` strategy when ``layer_map`` is None (``"uniform"``,
            ``"first"``, ``"last"``, ``"round"``).
    """
    pairs = _mapped_pairs(student_reps, teacher_reps, layer_map, hidden_layer_map, "reps", strategy)
    return _kernels.sum_of_mse(pairs)


def att_distill_loss(
    student_atts: Sequence[flow.Tensor],
    teacher_atts: Sequence[flow.Tensor],
    *,
    layer_map: Optional[Sequence[int]] = None,
    mask_threshold: float = ATTENTION_MASK_THRESHOLD,
    strategy: str = "uniform",
) -> flow.Tensor:
    """Sum over mapped pairs of the element-mean MSE between attention matrices.

    In both tensors every entry ``<= mask_threshold`` (default -100: the ``-10000`` padding mask,
    ``-inf``) is replaced by 0 before the difference. NaN is not hidden.

    Args:
        student_atts: ``Ls`` tensors ``[B, heads, L, L]`` (probabilities or raw masked scores).
        teacher_atts: ``Lt`` tensors of the same shapes.
        layer_map: optional teacher index for each student layer; default :func:`attention_layer_map`.
        strategy: the :func:`attention_layer_map` strategy when ``layer_map`` is None.
    """
    pairs = _mapped_pairs(student_atts, teacher_atts, layer_map, attention_layer_map, "atts", strategy)
    return _kernels.sum_of_masked_mse(pairs, float(mask_threshold))


# --------------------------------------------------------------------------------------------------
# hidden-state losses
# --------------------------------------------------------------------------------------------------


def _prepare_pair(s_name: str, student: flow.Tensor, t_name: str, teacher: flow.Tensor,
                  ndims: Sequence[int], layout: str) -> Pair:
    """Validate an equal-shape pair of ``layout``; float16 to float32; teacher detached."""
    check_pair(s_name, student, t_name, teacher)
    check_ndim(s_name, student, ndims, layout)
    return _as_float32_if_half(student), _as_float32_if_half(teacher).detach()


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


# --------------------------------------------------------------------------------------------------
# attention and relation losses
# --------------------------------------------------------------------------------------------------


def _pair_mask(mask: Optional[flow.Tensor], batch: int, length: int, like: flow.Tensor, like_name: str):
    """Validated ``[B, L]`` mask or None."""
    return None if mask is None else check_mask("mask", mask, (batch, length), like, like_name)


def _pair_excluded(mask: flow.Tensor) -> flow.Tensor:
    """Boolean ``[B, L, L]``: True where ``m_bi * m_bj == 0`` (such entries are filled with 0, never
    multiplied by 0, so padding that holds inf or NaN contributes nothing). Built from booleans: a float
    comparison over ``[B, L, L]`` costs about 20x the boolean ops on CPU in OneFlow 0.9."""
    valid = mask > 0
    return flow.logical_not(flow.logical_and(valid.unsqueeze(-1), valid.unsqueeze(-2)))


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


# --------------------------------------------------------------------------------------------------
# FSP and MMD (Gram matrices of two features per side)
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# several teachers
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# the divergences of today's LLM distillers (their own module, built on _soft_targets; re-exported here)
# --------------------------------------------------------------------------------------------------

from .divergences import js_divergence, reverse_kl, skew_kl, skew_reverse_kl, tv_distance, uld_loss  # noqa: E402

__all__ += ["reverse_kl", "js_divergence", "skew_kl", "skew_reverse_kl", "tv_distance", "uld_loss"]

# The sparse (top-k teacher) divergences live in their own module; exposed here with the other losses.
from .sparse_losses import sparse_js_divergence, sparse_kl_div  # noqa: E402

__all__ += ["sparse_kl_div", "sparse_js_divergence"]
