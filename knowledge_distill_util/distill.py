"""The original ``(args, student, teacher)`` operators: a thin adapter from an argparse namespace to
:mod:`knowledge_distill_util.functional`. Only this adapter and the training objectives
(:mod:`knowledge_distill_util.training.objectives`) read ``args``.

Temperatures: ``args.student_temperature`` / ``args.teacher_temperature`` (when present and not None)
win over ``args.temperature``; without any of them (or with ``args=None``) the temperature is 1.0, the
original argparse default.

What ``args`` may be (checked by every operator before any work):

- ``None``, or an object with attributes (``argparse.Namespace``, a config object); attributes other
  than the three temperatures are ignored, so any namespace of a training script works.
- A mapping (``dict``) is **accepted and read**: ``pred_distill({"temperature": 4.0}, s, t)`` uses
  ``T = 4``. It used to be silently ignored (T = 1), which is the one reading that is surely wrong;
  reading it is what the caller meant.
- Refused with ``TypeError``: a number, string, bytes or tensor (``pred_distill(4.0, s, t)``, or the
  arguments shifted by one).
- Refused with ``ValueError``: an attribute (or key) whose name looks like a misspelling of
  ``temperature``, ``student_temperature`` or ``teacher_temperature`` (a close match by
  :func:`difflib.get_close_matches`, cutoff 0.8, e.g. ``temprature``) while the correctly spelt name
  is absent; otherwise the misspelt value would silently be replaced by the default.
"""
import argparse
import contextlib
import difflib
import logging
from collections.abc import Mapping
from numbers import Number
from typing import List, Sequence, Tuple

import oneflow as flow

from . import functional
from ._checks import check_temperature

__all__ = [
    "pred_distill",
    "layer_distill",
    "att_distill",
    "resolve_temperatures",
    "check_args",
    "add_distill_args",
    "DEFAULT_TEMPERATURE",
]

logger = logging.getLogger(__name__)

#: The original scripts' argparse default for ``--temperature``.
DEFAULT_TEMPERATURE = 1.0
TEMPERATURE_NAMES = ("temperature", "student_temperature", "teacher_temperature")
_MISSPELLING_CUTOFF = 0.8
_warned_single_class = False


def _attribute(args, name: str):
    if args is None:
        return None
    if isinstance(args, Mapping):
        return args.get(name)
    return getattr(args, name, None)


def _names(args) -> List[str]:
    if isinstance(args, Mapping):
        return [key for key in args if isinstance(key, str)]
    return [name for name in dir(args) if not name.startswith("_")]


def check_args(args, function: str = "pred_distill", *, temperatures: bool = True) -> None:
    """Refuse an ``args`` the operators cannot read (see the module doc); ``None`` passes.

    ``temperatures=False`` (``layer_distill``, ``att_distill``, which read nothing from ``args``) skips
    the misspelling check and keeps only the type check.

    >>> check_args(argparse.Namespace(temprature=4.0))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: args has an attribute 'temprature' but no 'temperature': is it a misspelling? ...
    """
    if args is None:
        return
    if isinstance(args, (Number, str, bytes, flow.Tensor)):
        seen = (f"a tensor of shape {tuple(args.shape)}" if isinstance(args, flow.Tensor)
                else f"{type(args).__name__} {args!r:.60}")
        raise TypeError(
            f"args must be an argparse.Namespace-like object (or a dict, or None) carrying the "
            f"temperatures, got {seen}; call {function}(args, student, teacher) "
            f"with e.g. args=argparse.Namespace(temperature=2.0)"
        )
    if not temperatures:
        return
    names = _names(args)
    kind = "key" if isinstance(args, Mapping) else "attribute"
    for wanted in TEMPERATURE_NAMES:
        if wanted in names:
            continue
        close = [n for n in difflib.get_close_matches(wanted, names, n=3, cutoff=_MISSPELLING_CUTOFF)
                 if n not in TEMPERATURE_NAMES]
        if close:
            fix = (f"rename the key to {wanted!r}" if kind == "key"
                   else f"rename it to {wanted} (args.{wanted} = ..., or the --{wanted} flag)")
            raise ValueError(
                f"args has {'a' if kind == 'key' else 'an'} {kind} {close[0]!r} but no {wanted!r}: is it a "
                f"misspelling? {function} reads {wanted!r} only, so the value would be ignored; {fix}"
            )


def resolve_temperatures(args) -> Tuple[float, float]:
    """Return ``(student_temperature, teacher_temperature)`` read from ``args`` (see the module doc).

    >>> from argparse import Namespace
    >>> resolve_temperatures(Namespace(temperature=2.0, teacher_temperature=4.0))
    (2.0, 4.0)
    >>> resolve_temperatures({"temperature": 4.0})
    (4.0, 4.0)
    >>> resolve_temperatures(None)
    (1.0, 1.0)
    """
    return _resolve(args, "resolve_temperatures")


def _resolve(args, function: str) -> Tuple[float, float]:
    check_args(args, function)
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
        args: argparse namespace, dict or None carrying the temperatures (each at least
            :data:`~knowledge_distill_util._checks.MIN_TEMPERATURE`), see :func:`resolve_temperatures`.
        student_logits, teacher_logits: ``[..., C]`` non-empty logits of equal shape; the teacher gets
            no gradient. ``C = 1`` is accepted as the original did, but the loss is then constant
            (0, up to rounding) with zero gradient (a softmax over one class is 1): one warning per process is logged;
            distil a regression head with an MSE (:func:`~knowledge_distill_util.mseloss`) instead.

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
    t_s, t_t = _resolve(args, "pred_distill")
    _warn_single_class(student_logits)
    return functional.checked_soft_cross_entropy(
        student_logits, teacher_logits, t_s, t_t, names=("student_logits", "teacher_logits")
    )


def _warn_single_class(logits) -> None:
    global _warned_single_class
    if _warned_single_class or not isinstance(logits, flow.Tensor) or logits.dim() == 0:
        return
    if logits.shape[-1] == 1:
        _warned_single_class = True
        logger.warning(
            "pred_distill got logits with one class (shape %s): a softmax over one class is always 1, "
            "so the loss is constant (0) with zero gradient. For a regression head distil the "
            "predictions with an MSE, e.g. mseloss(student_logits, teacher_logits). (Logged once.)",
            tuple(logits.shape),
        )


def layer_distill(args, student_reps: Sequence[flow.Tensor], teacher_reps: Sequence[flow.Tensor]) -> flow.Tensor:
    """Hidden-state loss: sum over uniformly mapped pairs of the element-mean MSE.

    Args:
        args: unused (kept for the original signature); None or a namespace (a number is refused).
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
    check_args(args, "layer_distill", temperatures=False)
    with _args_level_advice("layer_distill_loss(student_reps, teacher_reps"):
        return functional.layer_distill_loss(student_reps, teacher_reps)


def att_distill(args, student_atts: Sequence[flow.Tensor], teacher_atts: Sequence[flow.Tensor]) -> flow.Tensor:
    """Attention loss: sum over uniformly mapped layers of the element-mean MSE, entries ``<= -100``
    (padding masks) replaced by 0 in both tensors first.

    Args:
        args: unused (kept for the original signature); None or a namespace (a number is refused).
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
    check_args(args, "att_distill", temperatures=False)
    with _args_level_advice("att_distill_loss(student_atts, teacher_atts"):
        return functional.att_distill_loss(student_atts, teacher_atts)


_KEYWORD_ADVICE = 'pass strategy="round" or an explicit layer_map'


@contextlib.contextmanager
def _args_level_advice(call: str):
    """The ``(args, ...)`` operators take no ``strategy`` or ``layer_map``: a layer-count error of the
    uniform map names the keyword call of :mod:`.functional` that takes them instead."""
    try:
        yield
    except ValueError as error:
        text = str(error)
        if _KEYWORD_ADVICE not in text:
            raise
        raise ValueError(text.replace(_KEYWORD_ADVICE, f'or call knowledge_distill_util.functional.{call}, '
                                                       f'strategy="round") (or layer_map=[...]) instead')) from None


def _str2bool(text) -> bool:
    """The original's ``str2bool``: ``True``/``'True'``/yes/1 or ``False``/no/0 (quotes ignored)."""
    if isinstance(text, bool):
        return text
    value = str(text).strip().strip("'\"").lower()
    if value in ("yes", "true", "t", "y", "1"):
        return True
    if value in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def add_distill_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register the original distillation flags with the original defaults and return ``parser``.

    Flags the parser already defines are left as they are (only the missing ones are added), so it can be
    called on an original script's parser. The booleans take the bare form (``--pred_distill``) and the
    original's ``--pred_distill='True'`` / ``'False'``.

    >>> import argparse
    >>> args = add_distill_args(argparse.ArgumentParser()).parse_args(["--temperature", "4"])
    >>> args.temperature, args.kd_alpha, args.intermediate_distill
    (4.0, 0.2, False)
    >>> own = argparse.ArgumentParser()
    >>> _ = own.add_argument("--kd_alpha", type=float, default=0.9)
    >>> args = add_distill_args(own).parse_args(["--pred_distill='True'"])
    >>> args.kd_alpha, args.pred_distill
    (0.9, True)
    """
    known = set(parser._option_string_actions)
    group = parser.add_argument_group("knowledge distillation")

    def add(flag, **kwargs):
        if flag not in known:
            group.add_argument(flag, **kwargs)

    add("--temperature", type=float, default=DEFAULT_TEMPERATURE,
        help="softmax temperature for both logits (default: 1.0)")
    add("--teacher_temperature", type=float, default=None,
        help="teacher-side temperature; overrides --temperature when given")
    add("--student_temperature", type=float, default=None,
        help="student-side temperature; overrides --temperature when given")
    # kd_alpha/kd_beta defaults: the original BERT-PKD run script's (its task script's kd_alpha default is 0.5);
    # each registered recipe (knowledge_distill_util.training.recipes) carries its own run script's values.
    add("--kd_alpha", type=float, default=0.2, help="weight of the soft-label loss term")
    add("--kd_beta", type=float, default=10.0, help="weight of the intermediate-layer loss term")
    add("--intermediate_distill", type=_str2bool, nargs="?", const=True, default=False,
        help="TinyBERT: distil hidden states and attentions")
    add("--pred_distill", type=_str2bool, nargs="?", const=True, default=False,
        help="TinyBERT: distil the prediction layer")
    return parser
