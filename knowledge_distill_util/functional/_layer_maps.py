"""Layer maps and the layer-list losses of :mod:`knowledge_distill_util.functional`: :func:`hidden_layer_map`,
:func:`attention_layer_map`, :func:`patience_layer_pairs`, :func:`layer_distill_loss`, :func:`att_distill_loss`
(the original operators) and :func:`pkd_patience_loss` (BERT-PKD's patience term)."""
from typing import List, Optional, Sequence, Tuple

import oneflow as flow

from .. import _kernels
from .._soft_targets import _as_float32_if_half
from .._checks import check_choice, check_pair, check_tensor_list
from ._common import ATTENTION_MASK_THRESHOLD, Pair
from ._hidden import pkd_loss


#: The layer-map strategies of :func:`hidden_layer_map` and :func:`attention_layer_map`.
LAYER_MAP_STRATEGIES = ("uniform", "first", "last", "round")
#: BERT-PKD's patience strategies (:func:`patience_layer_pairs`).
PATIENCE_STRATEGIES = ("skip", "last")


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


def patience_layer_pairs(num_student_reps: int, num_teacher_reps: int, strategy: str = "skip",
                         pairs: Optional[Sequence[Tuple[int, int]]] = None) -> List[Tuple[int, int]]:
    """BERT-PKD's patience pairs ``(student, teacher)`` of hidden-state lists (embedding + layers), one per
    intermediate student layer ``k = 1 .. Ls - 1`` (``Ls``, ``Lt``: the layer counts): ``"skip"`` pairs it with
    teacher layer ``k * (Lt // Ls)``, ``"last"`` with ``Lt - Ls + k`` (the layers below the top; the top layers are
    left to the logits). ``pairs``: explicit pairs instead, checked against the two lengths (``ValueError``).

    >>> patience_layer_pairs(4, 13, "skip"), patience_layer_pairs(4, 13, "last")
    ([(1, 4), (2, 8)], [(1, 10), (2, 11)])
    """
    if pairs is not None:
        if not pairs or not all(isinstance(p, (tuple, list)) and len(p) == 2 and 0 <= p[0] < num_student_reps
                                and 0 <= p[1] < num_teacher_reps for p in pairs):
            raise ValueError(f"pairs must be (student, teacher) index pairs into the {num_student_reps} student and "
                             f"{num_teacher_reps} teacher entries, at least one, got {pairs!r}")
        return [tuple(p) for p in pairs]
    check_choice("strategy", strategy, PATIENCE_STRATEGIES)
    student, teacher = _minus_one(num_student_reps, "student_reps"), _minus_one(num_teacher_reps, "teacher_reps")
    if strategy == "skip":
        return [(k, k * (teacher // student)) for k in range(1, student)]
    return [(k, teacher - student + k) for k in range(1, student)]


def pkd_patience_loss(student_reps: Sequence[flow.Tensor], teacher_reps: Sequence[flow.Tensor], *,
                      strategy: str = "skip", pairs: Optional[Sequence[Tuple[int, int]]] = None) -> flow.Tensor:
    """BERT-PKD's patience loss (Sun et al. 2019): the sum over the pairs of
    :func:`~knowledge_distill_util.functional.pkd_loss` of the two [CLS] vectors (position 0 of ``[B, L, H]``).

    Args:
        student_reps, teacher_reps: hidden-state lists (embedding output first) of ``[B, L, H]`` tensors, the
            paired ones of equal shapes.
        strategy: ``"skip"`` or ``"last"`` (:func:`patience_layer_pairs`), when ``pairs`` is None.
        pairs: explicit ``(student index, teacher index)`` pairs instead, at least one.
    """
    pairs = patience_layer_pairs(len(student_reps), len(teacher_reps), strategy, pairs)
    if not pairs:
        raise ValueError(f"pkd_patience_loss needs a student with at least 2 layers (an intermediate layer to "
                         f"pair), got {len(student_reps) - 1}")
    total = None
    for s, t in pairs:
        term = pkd_loss(student_reps[s][:, 0], teacher_reps[t][:, 0].detach())
        total = term if total is None else total + term
    return total
