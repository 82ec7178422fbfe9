"""Pure tensor math of the distillation losses: explicit keyword arguments, no ``args``, no I/O.

Every loss returns a scalar tensor on the inputs' device. Reductions follow the original Tianshu/Dubhe
operators exactly: soft cross entropy and MSE are **means over all elements**, layer losses are **sums
over the mapped layer pairs**. The teacher side never receives a gradient. float16 inputs are computed
in float32 (the loss is returned as float32), so extreme logits stay finite.

Layer maps (the original "uniform" strategy)::

    hidden states (embedding + Ls layers)  student i -> teacher i * k            for i = 0..Ls
    attentions    (Ls layers)              student i -> teacher i * k + k - 1    for i = 0..Ls-1
    where k = Lt // Ls and Lt % Ls == 0
"""
from typing import List, Optional, Sequence, Tuple

import oneflow as flow

from . import _kernels
from ._checks import check_pair, check_temperature, check_tensor_list

__all__ = [
    "soft_cross_entropy",
    "mseloss",
    "hidden_layer_map",
    "attention_layer_map",
    "layer_distill_loss",
    "att_distill_loss",
    "ATTENTION_MASK_THRESHOLD",
]

#: Attention entries ``<= ATTENTION_MASK_THRESHOLD`` (the additive ``-10000`` padding mask, ``-inf``)
#: are replaced by 0 in both tensors before the MSE, as in the original ``att_distill``.
ATTENTION_MASK_THRESHOLD = -100.0

Pair = Tuple[flow.Tensor, flow.Tensor]


def _as_float32_if_half(tensor: flow.Tensor) -> flow.Tensor:
    return tensor.float() if tensor.dtype in (flow.float16, flow.bfloat16) else tensor


def soft_cross_entropy(
    predicts: flow.Tensor,
    targets: flow.Tensor,
    *,
    student_temperature: float = 1.0,
    teacher_temperature: float = 1.0,
) -> flow.Tensor:
    r"""Soft-label cross entropy, mean over **all elements** (the original reduction).

    .. math::
        \ell = -\frac{1}{N \cdot C} \sum_{n,c} \operatorname{softmax}(t_n / T_t)_c
               \, \log\operatorname{softmax}(p_n / T_s)_c

    No :math:`T^2` factor (as the original). ``log_softmax`` keeps logits of +-1e4 finite, where the
    original ``log(softmax(.))`` gave inf/NaN. ``targets`` (the teacher) gets no gradient.

    Args:
        predicts: student logits, shape ``[..., C]`` (``[B, C]``, token-level ``[B, L, V]``, ...).
        targets: teacher logits, same shape, device and dtype as ``predicts``.
        student_temperature, teacher_temperature: finite numbers > 0 dividing each side's logits.

    Returns:
        scalar tensor.

    Example::

        >>> import oneflow as flow
        >>> from knowledge_distill_util import soft_cross_entropy
        >>> s = flow.tensor([[1.0, 2.0, 3.0]])
        >>> round(soft_cross_entropy(s, s).item(), 4)  # entropy of softmax(s), divided by C = 3
        0.2775
    """
    return checked_soft_cross_entropy(
        predicts, targets, student_temperature, teacher_temperature, names=("predicts", "targets")
    )


def checked_soft_cross_entropy(
    predicts: flow.Tensor,
    targets: flow.Tensor,
    student_temperature: float,
    teacher_temperature: float,
    names: Tuple[str, str],
) -> flow.Tensor:
    """:func:`soft_cross_entropy` whose error messages call the two inputs ``names``."""
    check_pair(names[0], predicts, names[1], targets)
    if predicts.ndim == 0:
        raise ValueError(f"{names[0]} must have at least one dimension [..., C], got a scalar tensor")
    t_s = check_temperature("student_temperature", student_temperature)
    t_t = check_temperature("teacher_temperature", teacher_temperature)
    return _kernels.soft_cross_entropy_mean(
        _as_float32_if_half(predicts), _as_float32_if_half(targets).detach(), t_s, t_t
    )


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
            f"a divisor of {num_teacher} {what} or pass an explicit layer_map"
        )
    return num_teacher // num_student


def hidden_layer_map(num_student_reps: int, num_teacher_reps: int) -> List[Tuple[int, int]]:
    """Uniform pairs ``(student_index, teacher_index)`` for hidden-state lists (embedding + layers).

    >>> hidden_layer_map(5, 13)
    [(0, 0), (1, 3), (2, 6), (3, 9), (4, 12)]
    """
    k = _uniform_stride(num_student_reps - 1, num_teacher_reps - 1, "student_reps", "teacher_reps", "layers")
    return [(i, i * k) for i in range(num_student_reps)]


def attention_layer_map(num_student_atts: int, num_teacher_atts: int) -> List[Tuple[int, int]]:
    """Uniform pairs ``(student_index, teacher_index)`` for per-layer attention lists.

    >>> attention_layer_map(4, 12)
    [(0, 2), (1, 5), (2, 8), (3, 11)]
    """
    k = _uniform_stride(num_student_atts, num_teacher_atts, "student_atts", "teacher_atts", "layers")
    return [(i, i * k + k - 1) for i in range(num_student_atts)]


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


def _mapped_pairs(student, teacher, layer_map, uniform_map, kind: str) -> List[Pair]:
    """Validate both ``{kind}`` lists, map them, check every pair; teacher sides detached."""
    s_name, t_name = f"student_{kind}", f"teacher_{kind}"
    check_tensor_list(s_name, student)
    check_tensor_list(t_name, teacher)
    if layer_map is None:
        pairs = uniform_map(len(student), len(teacher))
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
) -> flow.Tensor:
    """Sum over mapped pairs of the element-mean MSE between hidden states.

    Args:
        student_reps: ``Ls + 1`` tensors ``[B, L, H]`` (embedding output, then each layer).
        teacher_reps: ``Lt + 1`` tensors of the same shapes (project the student with ``fit_dense``
            first when hidden sizes differ).
        layer_map: optional teacher index for each student entry; default :func:`hidden_layer_map`.
    """
    return _kernels.sum_of_mse(_mapped_pairs(student_reps, teacher_reps, layer_map, hidden_layer_map, "reps"))


def att_distill_loss(
    student_atts: Sequence[flow.Tensor],
    teacher_atts: Sequence[flow.Tensor],
    *,
    layer_map: Optional[Sequence[int]] = None,
    mask_threshold: float = ATTENTION_MASK_THRESHOLD,
) -> flow.Tensor:
    """Sum over mapped pairs of the element-mean MSE between attention matrices.

    In both tensors every entry ``<= mask_threshold`` (default -100: the ``-10000`` padding mask,
    ``-inf``) is replaced by 0 before the difference. NaN is not hidden.

    Args:
        student_atts: ``Ls`` tensors ``[B, heads, L, L]`` (probabilities or raw masked scores).
        teacher_atts: ``Lt`` tensors of the same shapes.
        layer_map: optional teacher index for each student layer; default :func:`attention_layer_map`.
    """
    pairs = _mapped_pairs(student_atts, teacher_atts, layer_map, attention_layer_map, "atts")
    return _kernels.sum_of_masked_mse(pairs, float(mask_threshold))
