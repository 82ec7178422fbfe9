"""The types of :class:`~.schema.TrainConfig`'s fields: each type carries its rule and the sentence a user sees.

A field's annotation is its rule. The number types are jsonargparse types (made by
:func:`jsonargparse.typing.extend_base_type`), so the parser refuses a bad value on the command line or in a
``--config`` file; the choices are ``Literal[...]``. :func:`check_field` applies the same type to a value set
in Python (``TrainConfig(...)``, ``dataclasses.replace``, kdu-compress's plan), so each rule is written once,
here, whichever way the value arrived. Every refusal reads ``--KEY must be WHAT, got VALUE[; FIX]``. kdu-compress's
flags (:mod:`knowledge_distill_util.cli.compress`) take the same types (``--seed``, ``--log_level``,
``--progress_every``) and the same rule of two flags (:func:`check_resume_overwrite`).

jsonargparse's own ``PositiveInt``, ``NonNegativeInt``, ``ClosedUnitInterval`` ... (names this module cannot
take again) hold the same rules but word their errors as ``0 does not conform to restriction v>0`` and let
``inf`` through ``PositiveFloat``; these types say what the value must be, refuse ``nan`` and ``inf``, and keep
the package's sentences.

>>> PositiveInteger(3), Temperature("2")
(3, 2.0)
>>> check_field("seq_length", 0, PositiveInteger)
Traceback (most recent call last):
...
ValueError: --seq_length must be a positive integer, got 0
>>> check_field("log_level", "LOUD", LogLevel)
Traceback (most recent call last):
...
ValueError: --log_level must be one of DEBUG, INFO, WARNING, ERROR, got 'LOUD'
"""
import math
from numbers import Integral, Real
from typing import Any, Callable, List, Literal, Optional, Sequence, Tuple, Union, get_args, get_origin

from jsonargparse.typing import extend_base_type

from .._checks import MIN_TEMPERATURE
from .._errors import ConfigError
from ..models.bert_config import ATTENTION_OUTPUTS

__all__ = ["PositiveInteger", "NonNegativeInteger", "Seed", "Epochs", "LearningRate", "NonNegativeNumber", "Seconds",
           "Timeout", "WarmupProportion", "DropoutProbability", "MixingWeight", "Probability", "Temperature", "StudentInit",
           "AttentionOutput", "LogLevel", "ResultsFormat", "PkdStrategy", "TemperatureSchedule", "WeightSchedule",
           "MAX_SEED", "MAX_EPOCHS", "check_field", "wanted", "choices", "optional_inner", "check_resume_overwrite"]

#: numpy's legacy seeding (``np.random.seed``) takes ``0 .. 2**32 - 1``.
MAX_SEED = 2 ** 32 - 1
#: Epochs per stage: far beyond any real run, small enough that ``rows / batch * epochs`` steps stay exact integers.
MAX_EPOCHS = 1_000_000

#: ``(test, what the value must be, the fix appended after the value)``; the first failing rule is reported.
Rule = Tuple[Callable[[Any], bool], str, str]


def _as_number(value, base: type) -> Optional[Any]:
    """``value`` as a ``base`` (int or float) number, or None when it is none: ``bool`` is refused, an int
    field refuses a float, and a string (as typed on the command line) is converted."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            return base(value.strip())
        except ValueError:
            return None
    if base is int:
        return int(value) if isinstance(value, Integral) else None
    return float(value) if isinstance(value, Real) else None


def _number_type(name: str, base: type, rules: Sequence[Rule], doc: str) -> type:
    """A jsonargparse number type ``name`` of ``base`` whose values pass every rule, in order; the first
    failing rule raises ``ValueError("must be WHAT, got VALUE[; FIX]")``."""
    def validate(cls, value) -> None:
        number = _as_number(value, base)
        for test, what, fix in rules:
            if number is None:
                raise ValueError(f"must be {what}, got {value!r}")
            if not test(number):
                raise ValueError(f"must be {what}, got {number!r}{fix}")

    return extend_base_type(name, base, validate, docstring=doc, extra_attrs={"wanted": rules[0][1]},
                            register_key=("knowledge_distill_util", name))


def _finite(test: Callable[[float], bool]) -> Callable[[float], bool]:
    return lambda v: math.isfinite(v) and test(v)


PositiveInteger = _number_type("PositiveInteger", int, [(lambda v: v >= 1, "a positive integer", "")],
                           "An integer >= 1 (sizes, counts, steps).")
NonNegativeInteger = _number_type("NonNegativeInteger", int, [(lambda v: v >= 0, "an integer >= 0", "")],
                              "An integer >= 0 (0: no cap, all rows).")
Seed = _number_type("Seed", int, [(lambda v: v >= 0, "an integer >= 0", ""),
                                  (lambda v: v <= MAX_SEED, f"an integer in [0, 2**32 - 1] ({MAX_SEED})",
                                   "; pass a smaller seed")],
                    "A seed numpy's legacy seeding takes: 0 .. 2**32 - 1.")
Epochs = _number_type("Epochs", float, [(_finite(lambda v: v > 0), "a finite number > 0 (epochs to train)", ""),
                                        (lambda v: v <= MAX_EPOCHS, f"at most {MAX_EPOCHS:,} epochs",
                                         "; pass a smaller number (or --max_steps to bound the run by steps)")],
                      f"Epochs of a stage: > 0 and at most {MAX_EPOCHS:,} (a larger value overflows the step count).")
LearningRate = _number_type("LearningRate", float, [(_finite(lambda v: v > 0), "a finite number > 0 (e.g. 5e-5)", "")],
                            "A peak learning rate: a finite number > 0.")
NonNegativeNumber = _number_type("NonNegativeNumber", float, [(_finite(lambda v: v >= 0), "a finite number >= 0", "")],
                                "A finite number >= 0 (loss weights, weight decay).")
Seconds = _number_type("Seconds", float, [(_finite(lambda v: v >= 0),
                                           "a finite number of seconds >= 0 (0: no progress lines)", "")],
                       "Seconds between progress lines: a finite number >= 0.")
Timeout = _number_type("Timeout", float, [(_finite(lambda v: v > 0), "a finite number of seconds > 0", "")],
                       "A time limit in seconds: a finite number > 0.")
WarmupProportion = _number_type("WarmupProportion", float, [
    (lambda v: 0 <= v < 1, "a number in [0, 1) (at 1 every step would have learning rate 0)", "")],
    "The share of the steps with a linear warm-up: [0, 1).")
DropoutProbability = _number_type("DropoutProbability", float, [(lambda v: 0 <= v < 1, "a number in [0, 1)", "")],
                                  "A dropout probability: [0, 1).")
MixingWeight = _number_type("MixingWeight", float, [(lambda v: 0 <= v <= 1,
                                                     "a number in [0, 1] (a weight of two loss terms)", "")],
                            "The weight w of w * a + (1 - w) * b: [0, 1].")
Probability = _number_type("Probability", float, [(lambda v: 0 <= v <= 1, "a probability in [0, 1]", "")],
                           "A probability: [0, 1].")
Temperature = _number_type("Temperature", float, [(_finite(lambda v: v >= MIN_TEMPERATURE),
                                                   f"a finite number >= {MIN_TEMPERATURE}", "")],
                           f"A softmax temperature: a finite number >= {MIN_TEMPERATURE} (_checks.MIN_TEMPERATURE).")

StudentInit = Literal["scratch", "teacher"]
AttentionOutput = Literal[ATTENTION_OUTPUTS]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
ResultsFormat = Literal["kdu", "original"]
PkdStrategy = Literal["skip", "last"]
TemperatureSchedule = Literal["constant", "flsw", "cwsm"]
WeightSchedule = Literal["constant", "linear_growth", "linear_decay"]
TeacherCacheMode = Literal["off", "memory", "disk", "auto"]
TeacherCacheDtype = Literal["float16", "float32"]


def optional_inner(annotation) -> Tuple[Any, bool]:
    """``(T, True)`` for ``Optional[T]``, ``(annotation, False)`` for anything else."""
    if get_origin(annotation) is Union:
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def choices(annotation) -> Optional[Tuple[Any, ...]]:
    """The values of a ``Literal[...]`` annotation (inside ``Optional`` too), else None."""
    inner, _ = optional_inner(annotation)
    return get_args(inner) if get_origin(inner) is Literal else None


def wanted(annotation) -> Optional[str]:
    """What a value of ``annotation`` must be (the first rule of a number type, the choices of a
    ``Literal``), or None for another type."""
    inner, _ = optional_inner(annotation)
    names = choices(inner)
    if names is not None:
        return f"one of {', '.join(map(str, names))}"
    return getattr(inner, "wanted", None)


_PLAIN = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _plain_ok(kind: type, value) -> bool:
    if kind is float:
        return isinstance(value, Real) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, Integral) and not isinstance(value, bool)
    return isinstance(value, kind)


def _list_error(key: str, kind, value) -> Optional[str]:
    """The sentence for a list field's wrong value, or None when it fits ``List[T]``."""
    (item,) = get_args(kind) or (Any,)
    item_kind = get_origin(item) or item
    if isinstance(value, (list, tuple)) and all(item_kind is Any or _plain_ok(item_kind, v) for v in value):
        return None
    what = _PLAIN.get(item_kind, "a mapping" if item_kind is dict else "a value")
    return f"--{key} must be a list, each entry {what}, got {value!r}"


def check_field(key: str, value, annotation) -> None:
    """Raise ``ValueError`` with one sentence (``--KEY must be WHAT, got VALUE``) when ``value``, set in
    Python, does not fit the field type ``annotation``; the parser applies the same types to flags and files."""
    kind, optional = optional_inner(annotation)
    if value is None and optional:
        return
    null = " or null" if optional else ""
    names = choices(kind)
    if names is not None:
        if not isinstance(value, str) or value not in names:
            raise ValueError(f"--{key} must be one of {', '.join(map(str, names))}{null}, got {value!r}")
        return
    if hasattr(kind, "wanted"):  # a number type of this module
        if not _plain_ok(kind._type, value):
            raise ValueError(f"--{key} must be {kind.wanted}{null}, got {value!r} ({type(value).__name__})")
        try:
            kind(value)
        except ValueError as error:
            raise ValueError(f"--{key} {error}") from None
        return
    if get_origin(kind) in (list, List):
        error = _list_error(key, kind, value)
        if error:
            raise ValueError(error)
        return
    if kind in _PLAIN and not _plain_ok(kind, value):
        raise ValueError(f"--{key} must be {_PLAIN[kind]}{null}, got {value!r} ({type(value).__name__})")


def check_resume_overwrite(resume: bool, overwrite: bool) -> None:
    """``--resume`` and ``--overwrite`` together: :class:`ConfigError` (kdu-train and kdu-compress alike)."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; pass one of them")
