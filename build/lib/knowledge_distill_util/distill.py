"""The original ``(args, student, teacher)`` operators: a thin adapter from an argparse namespace to
:mod:`knowledge_distill_util.functional`. This is the only module that knows ``args`` exists.

Temperatures: ``args.student_temperature`` / ``args.teacher_temperature`` (when present and not None)
win over ``args.temperature``; without any of them (or with ``args=None``) the temperature is 1.0, the
original argparse default.
"""
import argparse
from typing import Optional, Sequence, Tuple

import oneflow as flow

from . import functional
from ._checks import check_temperature

__all__ = [
    "pred_distill",
    "layer_distill",
    "att_distill",
    "resolve_temperatures",
    "add_distill_args",
    "DEFAULT_TEMPERATURE",
]

#: The original scripts' argparse default for ``--temperature``.
DEFAULT_TEMPERATURE = 1.0


def _attribute(args, name: str):
    return None if args is None else getattr(args, name, None)


def resolve_temperatures(args) -> Tuple[float, float]:
    """Return ``(student_temperature, teacher_temperature)`` read from ``args``.

    >>> from argparse import Namespace
    >>> resolve_temperatures(Namespace(temperature=2.0, teacher_temperature=4.0))
    (2.0, 4.0)
    >>> resolve_temperatures(None)
    (1.0, 1.0)
    """
    shared = _attribute(args, "temperature")
    if shared is None:
        shared = DEFAULT_TEMPERATURE
    result = []
    for side in ("student", "teacher"):
        name = f"{side}_temperature"
        value = _attribute(args, name)
        source = f"args.{name}"
        if value is None:
            value, source = shared, "args.temperature"
        result.append(check_temperature(source, value))
    return result[0], result[1]


def pred_distill(args, student_logits: flow.Tensor, teacher_logits: flow.Tensor) -> flow.Tensor:
    """Soft-label loss ``soft_cross_entropy(student_logits / T_s, teacher_logits / T_t)``.

    Args:
        args: argparse namespace (or None) carrying the temperatures, see :func:`resolve_temperatures`.
        student_logits, teacher_logits: ``[..., C]`` logits of equal shape; the teacher gets no gradient.

    Returns:
        scalar: mean over all ``N * C`` elements, no ``T**2`` factor (the original's values).

    Example::

        >>> import argparse, oneflow as flow
        >>> from knowledge_distill_util import pred_distill
        >>> args = argparse.Namespace(temperature=2.0)
        >>> s, t = flow.tensor([[1.0, 2.0]]), flow.tensor([[2.0, 1.0]])
        >>> round(pred_distill(args, s, t).item(), 4)
        0.3927
    """
    t_s, t_t = resolve_temperatures(args)
    return functional.checked_soft_cross_entropy(
        student_logits, teacher_logits, t_s, t_t, names=("student_logits", "teacher_logits")
    )


def layer_distill(args, student_reps: Sequence[flow.Tensor], teacher_reps: Sequence[flow.Tensor]) -> flow.Tensor:
    """Hidden-state loss: sum over uniformly mapped pairs of the element-mean MSE.

    Args:
        args: unused (kept for the original signature); may be None.
        student_reps: ``Ls + 1`` tensors ``[B, L, H]``: embedding output, then one per layer.
        teacher_reps: ``Lt + 1`` tensors of the same shapes, ``Lt % Ls == 0``; student entry ``i`` is
            paired with teacher entry ``i * Lt // Ls``.

    Example::

        >>> import oneflow as flow
        >>> from knowledge_distill_util import layer_distill
        >>> s = [flow.zeros(1, 2, 3) for _ in range(3)]   # embedding + 2 layers
        >>> t = [flow.ones(1, 2, 3) for _ in range(5)]    # embedding + 4 layers
        >>> layer_distill(None, s, t).item()              # 3 pairs, each MSE 1.0
        3.0
    """
    return functional.layer_distill_loss(student_reps, teacher_reps)


def att_distill(args, student_atts: Sequence[flow.Tensor], teacher_atts: Sequence[flow.Tensor]) -> flow.Tensor:
    """Attention loss: sum over uniformly mapped layers of the element-mean MSE, entries ``<= -100``
    (padding masks) replaced by 0 in both tensors first.

    Args:
        args: unused (kept for the original signature); may be None.
        student_atts: ``Ls`` tensors ``[B, heads, L, L]``.
        teacher_atts: ``Lt`` tensors of the same shapes, ``Lt % Ls == 0``; student layer ``i`` is paired
            with teacher layer ``i * k + k - 1`` where ``k = Lt // Ls``.

    Example::

        >>> import oneflow as flow
        >>> from knowledge_distill_util import att_distill
        >>> s = [flow.tensor([[[[0.5, -10000.0]]]])]
        >>> t = [flow.tensor([[[[1.5, 3.0]]]]), flow.tensor([[[[0.5, -10000.0]]]])]
        >>> att_distill(None, s, t).item()                # paired with teacher layer 1: equal after masking
        0.0
    """
    return functional.att_distill_loss(student_atts, teacher_atts)


def add_distill_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register the original distillation flags with the original defaults and return ``parser``.

    >>> import argparse
    >>> args = add_distill_args(argparse.ArgumentParser()).parse_args(["--temperature", "4"])
    >>> args.temperature, args.kd_alpha, args.intermediate_distill
    (4.0, 0.2, False)
    """
    group = parser.add_argument_group("knowledge distillation")
    group.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                       help="softmax temperature for both logits (default: 1.0)")
    group.add_argument("--teacher_temperature", type=float, default=None,
                       help="teacher-side temperature; overrides --temperature when given")
    group.add_argument("--student_temperature", type=float, default=None,
                       help="student-side temperature; overrides --temperature when given")
    # kd_alpha/kd_beta defaults: the original BERT-PKD script, the only one with both flags; each
    # recipe in configs/ sets the values of its own original run script.
    group.add_argument("--kd_alpha", type=float, default=0.2, help="weight of the soft-label loss term")
    group.add_argument("--kd_beta", type=float, default=10.0, help="weight of the intermediate-layer loss term")
    group.add_argument("--intermediate_distill", action="store_true",
                       help="TinyBERT stage 1: distil hidden states and attentions")
    group.add_argument("--pred_distill", action="store_true",
                       help="TinyBERT stage 2: distil the prediction layer")
    return parser
