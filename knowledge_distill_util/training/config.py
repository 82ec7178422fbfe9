"""One flat, typed training configuration: defaults, then a JSON ``--config FILE``, then command-line flags.

Every key is a field of :class:`TrainConfig`; its command-line flag has the same name (``--kd_alpha``),
which keeps the original scripts' flag names. A key in a config file that is not a field is an error
that lists the known keys. The resolved configuration is printed at start and saved as
``config.json`` beside the results (:func:`save_config`).

>>> cfg = resolve_config(["--kd_alpha", "0.5", "--seq_length", "16"], defaults={"recipe": "kd"})
>>> cfg.recipe, cfg.kd_alpha, cfg.seq_length, cfg.temperature
('kd', 0.5, 16, 1.0)
"""
import argparse
import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..distill import add_distill_args

#: The distillation flags' defaults, read from the one place that defines them (``add_distill_args``).
_DISTILL_DEFAULTS: Dict[str, Any] = vars(add_distill_args(argparse.ArgumentParser()).parse_args([]))

__all__ = [
    "TrainConfig",
    "known_keys",
    "read_config_file",
    "merge_config",
    "build_parser",
    "resolve_config",
    "save_config",
    "format_config",
    "QUICK_OVERRIDES",
]


@dataclass
class TrainConfig:
    """Every setting of a training script (see ``docs``: each key is also a ``--flag``)."""

    # what to run
    recipe: str = "kd"
    task_name: Optional[str] = None
    data_dir: Optional[str] = None
    vocab_file: Optional[str] = None
    teacher_model: Optional[str] = None
    student_model: Optional[str] = None
    teacher_logits: Optional[str] = None
    model_save_dir: str = "output/model"
    result_dir: str = "output/result"
    do_train: bool = True
    do_eval: bool = True
    seed: int = 0
    device: Optional[str] = None
    resume: bool = False
    use_graph: bool = False
    quick: bool = False
    # optimisation
    num_epochs: float = 3.0
    batch_size_per_device: int = 32
    eval_batch_size: int = 64
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_proportion: float = 0.1
    max_steps: int = 0
    seq_length: int = 128
    max_train_examples: int = 0
    max_eval_examples: int = 0
    checkpoint_every: int = 100
    # distillation (flags registered by knowledge_distill_util.add_distill_args)
    temperature: float = _DISTILL_DEFAULTS["temperature"]
    teacher_temperature: Optional[float] = _DISTILL_DEFAULTS["teacher_temperature"]
    student_temperature: Optional[float] = _DISTILL_DEFAULTS["student_temperature"]
    kd_alpha: float = _DISTILL_DEFAULTS["kd_alpha"]
    kd_beta: float = _DISTILL_DEFAULTS["kd_beta"]
    intermediate_distill: bool = _DISTILL_DEFAULTS["intermediate_distill"]
    pred_distill: bool = _DISTILL_DEFAULTS["pred_distill"]
    # two-stage recipes (TinyBERT prediction stage, Theseus successor fine-tuning)
    stage2_num_epochs: float = 3.0
    stage2_learning_rate: float = 5e-5
    replace_prob: float = 0.5
    # BERT student
    student_num_hidden_layers: int = 4
    student_hidden_size: int = 312
    student_intermediate_size: int = 1200
    student_num_attention_heads: int = 12
    student_hidden_dropout_prob: float = 0.1
    student_attention_probs_dropout_prob: float = 0.1
    student_init: str = "scratch"
    student_init_layers: Optional[List[int]] = None
    attention_output: str = "probs"
    freeze_word_embeddings: bool = False
    # teacher (fine-tuning, and the from-scratch teacher when no checkpoint exists)
    teacher_num_hidden_layers: int = 6
    teacher_hidden_size: int = 256
    teacher_intermediate_size: int = 1024
    teacher_num_attention_heads: int = 4
    teacher_hidden_dropout_prob: float = 0.1
    teacher_attention_probs_dropout_prob: float = 0.1
    # (Bi)LSTM student
    lstm_embedding_size: int = 300
    lstm_hidden_size: int = 300
    lstm_intermediate_size: int = 400
    lstm_num_layers: int = 1
    bidirectional: bool = False
    lstm_dropout_prob: float = 0.1


#: Settings that ``--quick`` forces (tiny data, a few steps); model sizes stay as configured.
QUICK_OVERRIDES: Dict[str, Any] = dict(
    max_train_examples=48, max_eval_examples=32, max_steps=3, num_epochs=1.0, stage2_num_epochs=1.0,
    checkpoint_every=2, batch_size_per_device=8, eval_batch_size=16,
)

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_DISTILL_KEYS = tuple(_DISTILL_DEFAULTS)


def known_keys() -> List[str]:
    """Sorted names of every configuration key."""
    return sorted(_FIELDS)


def _str2bool(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _field_kind(name: str):
    """``(base_type, is_optional, is_list)`` of a field, from its annotation."""
    annotation = str(_FIELDS[name].type)
    is_list = "List" in annotation
    optional = "Optional" in annotation
    for base in (bool, int, float, str):
        if base.__name__ in annotation:
            return base, optional, is_list
    raise TypeError(f"unsupported annotation {annotation} for {name}")  # pragma: no cover


def _coerce(name: str, value, source: str):
    """Check/convert one config-file value to its field's type, or raise ValueError naming it."""
    base, optional, is_list = _field_kind(name)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{source}: key {name!r} may not be null; give a {base.__name__}")
    if is_list:
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ValueError(f"{source}: key {name!r} must be a list of integers, got {value!r}")
        return list(value)
    if base is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{source}: key {name!r} must be true or false, got {value!r}")
        return value
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base is str and isinstance(value, str):
        return value
    raise ValueError(f"{source}: key {name!r} must be a {base.__name__}, got {value!r}")


def merge_config(base: Mapping[str, Any], overrides: Mapping[str, Any], source: str) -> Dict[str, Any]:
    """Return ``base`` updated with ``overrides``; unknown keys raise ``ValueError`` listing the known keys.

    >>> merge_config({"kd_alpha": 0.2}, {"kd_alpha": 0.8}, "kd.json")
    {'kd_alpha': 0.8}
    >>> merge_config({}, {"kd_alpa": 0.8}, "kd.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: kd.json: unknown configuration key 'kd_alpa'; known keys: attention_output, ...
    """
    merged = dict(base)
    unknown = sorted(set(overrides) - set(_FIELDS))
    if unknown:
        listed = ", ".join(repr(k) for k in unknown)
        raise ValueError(
            f"{source}: unknown configuration key{'s' if len(unknown) > 1 else ''} {listed}; "
            f"known keys: {', '.join(known_keys())}"
        )
    for name, value in overrides.items():
        merged[name] = _coerce(name, value, source)
    return merged


def read_config_file(path: str) -> Dict[str, Any]:
    """Read a flat JSON object of configuration keys (validated by :func:`merge_config`)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist; pass an existing JSON file to --config")
    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"config file {path!r} is not valid JSON ({error}); fix the file") from error
    if not isinstance(data, dict):
        raise ValueError(f"config file {path!r} must hold one JSON object of keys, got {type(data).__name__}")
    data.pop("_comment", None)
    return merge_config({}, data, path)


def build_parser(description: str = "") -> argparse.ArgumentParser:
    """A parser with one flag per key (``--config`` too); flags not given are absent from the result."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=argparse.SUPPRESS,
                        help="JSON file of configuration keys; flags given on the command line win")
    add_distill_args(parser)
    for name, spec in _FIELDS.items():
        if name in _DISTILL_KEYS:
            continue
        base, optional, is_list = _field_kind(name)
        flag = f"--{name}"
        if is_list:
            parser.add_argument(flag, type=int, nargs="+", default=argparse.SUPPRESS)
        elif base is bool:
            parser.add_argument(flag, type=_str2bool, nargs="?", const=True, default=argparse.SUPPRESS,
                                help=f"true/false (default {spec.default})")
        else:
            parser.add_argument(flag, type=base, default=argparse.SUPPRESS,
                                help=f"default {spec.default!r}")
    # the distillation flags keep their original definitions; only given flags count as overrides
    for action in parser._actions:
        if action.dest in _DISTILL_KEYS:
            action.default = argparse.SUPPRESS
    return parser


def resolve_config(
    argv: Optional[Sequence[str]] = None,
    defaults: Optional[Mapping[str, Any]] = None,
    description: str = "",
) -> TrainConfig:
    """Defaults < ``defaults`` (a script's own) < ``--config FILE`` < ``--quick`` settings < flags in ``argv``.

    ``--quick`` (from a flag or the file) forces :data:`QUICK_OVERRIDES` over the file's values; flags
    given explicitly still win over it.
    """
    parser = build_parser(description)
    given = vars(parser.parse_args(sys.argv[1:] if argv is None else list(argv)))
    values = merge_config({}, dict(defaults or {}), "script defaults")
    config_file = given.pop("config", None)
    if config_file is not None:
        values.update(read_config_file(config_file))
    if given.get("quick", values.get("quick", False)):
        values.update(QUICK_OVERRIDES)
        values["seq_length"] = min(values.get("seq_length", _FIELDS["seq_length"].default), 32)
    values.update(given)
    return TrainConfig(**values)


def format_config(cfg: TrainConfig) -> str:
    """The configuration as sorted ``key = value`` lines (what the scripts print at start)."""
    return "\n".join(f"  {k} = {v!r}" for k, v in sorted(dataclasses.asdict(cfg).items()))


def save_config(cfg: TrainConfig, directory: str, name: str = "config.json") -> str:
    """Write the resolved configuration as JSON into ``directory``; returns the file path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(dataclasses.asdict(cfg), handle, indent=2, sort_keys=True)
    return path
