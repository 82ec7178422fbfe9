"""Every number, name and output directory of a :class:`~.config.TrainConfig`, checked before any work.

:func:`validate_config` raises :class:`~.config.ConfigError` with one sentence naming the key, the value and
the fix. The device is checked by :func:`~knowledge_distill_util._device.resolve_device`; data, teacher and
student files by the plan that reads them.
"""
import math
import os
import tempfile
from typing import Callable

from .._checks import MIN_TEMPERATURE, check_int, check_probability
from .config import ConfigError, TrainConfig

__all__ = ["validate_config", "check_writable_directory"]

_POSITIVE_INTS = ("batch_size_per_device", "eval_batch_size", "seq_length", "checkpoint_every",
                  "loss_print_every_n_iter",
                  "student_num_hidden_layers", "student_hidden_size", "student_intermediate_size",
                  "student_num_attention_heads", "teacher_num_hidden_layers", "teacher_hidden_size",
                  "teacher_intermediate_size", "teacher_num_attention_heads", "lstm_embedding_size",
                  "lstm_hidden_size", "lstm_intermediate_size", "lstm_num_layers", "train_data_part_num",
                  "eval_data_part_num")
_NON_NEGATIVE_INTS = ("seed", "max_steps", "max_train_examples", "max_eval_examples", "train_example_num",
                      "eval_example_num")
_OPTIONAL_POSITIVE_INTS = ("teacher_seq_length", "student_vocab_size")
_PROBABILITIES = ("student_hidden_dropout_prob", "student_attention_probs_dropout_prob",
                  "teacher_hidden_dropout_prob", "teacher_attention_probs_dropout_prob", "lstm_dropout_prob")
#: key -> (test, what the value must be)
_REALS = {
    "num_epochs": (lambda v: v > 0, "a finite number > 0 (epochs to train)"),
    "stage2_num_epochs": (lambda v: v > 0, "a finite number > 0"),
    "learning_rate": (lambda v: v > 0, "a finite number > 0 (e.g. 5e-5)"),
    "stage2_learning_rate": (lambda v: v > 0, "a finite number > 0 (e.g. 5e-5)"),
    "weight_decay": (lambda v: v >= 0, "a finite number >= 0"),
    "warmup_proportion": (lambda v: 0 <= v < 1, "a number in [0, 1) (at 1 every step would have learning rate 0)"),
    "kd_alpha": (lambda v: 0 <= v <= 1, "a number in [0, 1] (a weight of two loss terms)"),
    "kd_beta": (lambda v: v >= 0, "a finite number >= 0"),
    "replace_prob": (lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    "temperature": (lambda v: v >= MIN_TEMPERATURE, f"a finite number >= {MIN_TEMPERATURE}"),
    "progress_every": (lambda v: v >= 0, "a finite number of seconds >= 0 (0: no progress lines)"),
}
_CHOICES = {"student_init": ("scratch", "teacher"), "attention_output": ("probs", "scores"),
            "log_level": ("DEBUG", "INFO", "WARNING", "ERROR"), "results_format": ("kdu", "original")}


def _real(cfg: TrainConfig, key: str, test: Callable[[float], bool], wanted: str) -> None:
    value = getattr(cfg, key)
    if value is None and key.endswith("temperature"):
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or not test(value):
        raise ConfigError(f"--{key} must be {wanted}, got {value!r}")


def check_writable_directory(key: str, path: str) -> None:
    """Create ``path`` if needed and write a probe file into it; :class:`ConfigError` naming ``--key`` if not."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"--{key} {path!r} is a file, not a directory; pass a directory path")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path) as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise ConfigError(f"--{key} {path!r} is not writable ({error.strerror or error}); pass a writable "
                          f"directory or free some space") from None


def validate_config(cfg: TrainConfig, check_directories: bool = True) -> TrainConfig:
    """Check every value of ``cfg`` (and, with ``check_directories``, that its output directories are
    writable); returns ``cfg``."""
    try:
        for key in _POSITIVE_INTS:
            check_int(f"--{key}", getattr(cfg, key))
        for key in _NON_NEGATIVE_INTS:
            check_int(f"--{key}", getattr(cfg, key), minimum=0)
        for key in _OPTIONAL_POSITIVE_INTS:
            check_int(f"--{key}", getattr(cfg, key), allow_none=True)
        for key in _PROBABILITIES:
            check_probability(f"--{key}", getattr(cfg, key))
    except (TypeError, ValueError) as error:
        raise ConfigError(str(error)) from None
    for key, (test, wanted) in _REALS.items():
        _real(cfg, key, test, wanted)
    for key in ("teacher_temperature", "student_temperature"):
        _real(cfg, key, _REALS["temperature"][0], _REALS["temperature"][1])
    for key, choices in _CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise ConfigError(f"--{key} must be one of {', '.join(choices)}, got {getattr(cfg, key)!r}")
    if cfg.resume and cfg.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; pass one of them")
    if not cfg.do_train and not cfg.do_eval:
        raise ConfigError("--do_train false and --do_eval false leave nothing to do; enable one of them")
    if check_directories:
        for key in ("model_save_dir", "result_dir"):
            check_writable_directory(key, getattr(cfg, key))
    return cfg
