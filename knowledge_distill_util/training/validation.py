"""Every number, name and output directory of a :class:`~knowledge_distill_util.config.schema.TrainConfig`, checked before any work.

:func:`validate_config` raises :class:`~knowledge_distill_util.config.schema.ConfigError` with one sentence naming the key, the value and
the fix. Each value is checked against its field's type (:mod:`knowledge_distill_util.config.fields`: the type carries the rule, the same
one the parser applies to flags and ``--config`` files); this module adds the rules between keys. The device is
checked by :func:`~knowledge_distill_util._device.resolve_device`; data, teacher and student files by the plan
that reads them.

:func:`check_paths` is the one place where the run's directories are compared with each other (symbolic
links resolved), before anything is created: a training run's ``--model_save_dir`` may not be, lie inside
or contain an input (``--teacher_model``, ``--student_model``, the data directories); ``--result_dir`` and
``--log_dir`` may not be or lie inside an input, nor inside an entry of ``--model_save_dir`` that the run
replaces as a whole (:data:`REPLACED_ENTRIES`: ``weights/``, ``checkpoints/``, the original's snapshots,
``stage_*/``); ``--teacher_logits`` (a cache the run may write) may not lie inside an input or such an entry.
The checkpoints live in ``<model_save_dir>/checkpoints/``, which nothing else replaces.
"""
import dataclasses
import fnmatch
import math
import os
import tempfile
from typing import List, Optional, Tuple

from ..config.schema import ConfigError, TrainConfig
from ..config.fields import MAX_EPOCHS, MAX_SEED, check_field, check_resume_overwrite

__all__ = ["validate_config", "check_writable_directory", "check_paths", "REPLACED_ENTRIES", "MAX_SEED", "MAX_EPOCHS"]

#: Entries of ``--model_save_dir`` a training run replaces or deletes as a whole: ``weights/`` at every save,
#: ``checkpoints/<stage>/`` when a run starts anew, the original's snapshots, ``stage_<name>/`` (a
#: finished stage, saved like a model) and ``teacher_outputs.<stage>.npy`` (``--cache_teacher_outputs disk``).
REPLACED_ENTRIES = ("weights", "checkpoints", "snapshot_best", "snapshot_last_snapshot", "stage_*",
                    "teacher_outputs.*")
#: Input directories of a run (a ``--teacher_model`` keyword of the teacher recipe is no directory).
_INPUT_DIRS = ("teacher_model", "student_model", "data_dir", "train_data_dir", "eval_data_dir",
               "train_data_dir_lstm", "eval_data_dir_lstm", "corpus_dir")
_DATA_DIRS = ("data_dir", "train_data_dir", "eval_data_dir", "train_data_dir_lstm", "eval_data_dir_lstm")
_TEACHER_KEYWORDS = ("auto", "minilm", "scratch")

#: The recipes whose objective reads the teacher's hidden states or attentions (``--cache_teacher_outputs``).
LAYER_READING_RECIPES = ("tinybert", "bert_pkd", "minilm", "minilm_v2", "distilbert", "pkd_patience", "custom")
#: Keys only some recipes read: set to anything but the default under another recipe, they are refused (a
#: configuration file written for one recipe, run as another).
RECIPE_KEYS = {"logit_terms": ("custom",), "intermediate_matches": ("custom",),
               "teacher_models": ("multi_teacher_kd",), "teacher_weights": ("multi_teacher_kd",),
               "pkd_strategy": ("pkd_patience",), "logit_weight": ("distilbert", "distilbert_mlm"),
               "hidden_weight": ("distilbert", "distilbert_mlm"),
               "hard_label_weight": ("distilbert", "distilbert_mlm", "custom"),
               "teacher_logits_cache": ("distilbert_mlm",), "top_k": ("distilbert_mlm",),
               "cache_teacher_outputs": LAYER_READING_RECIPES, "cache_teacher_dtype": LAYER_READING_RECIPES}


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


def _inside(path: str, parent: str) -> bool:
    """``path`` is ``parent`` or lies below it (both resolved)."""
    return os.path.commonpath([path, parent]) == parent


def _relation(path: str, other: str) -> Optional[str]:
    """How resolved ``path`` relates to resolved ``other``: ``"is"``, ``"lies inside"``, ``"contains"`` or None."""
    if path == other:
        return "is"
    if _inside(path, other):
        return "lies inside"
    if _inside(other, path):
        return "contains"
    return None


def _inputs(cfg: TrainConfig) -> List[Tuple[str, str, str]]:
    """``(key, given path, resolved path)`` of every input directory of ``cfg`` (a training run's models and
    data; an evaluation-only run's data: the model it evaluates is its ``--model_save_dir`` in the original)."""
    found = []
    for key in (_INPUT_DIRS if cfg.do_train else _DATA_DIRS):
        value = getattr(cfg, key)
        if not value or (key == "teacher_model" and value in _TEACHER_KEYWORDS and not os.path.isdir(value)):
            continue
        found.append((key, value, os.path.realpath(value)))
    if cfg.do_train:
        found += [("teacher_models", value, os.path.realpath(value)) for value in cfg.teacher_models or []]
    return found


def _replaced_entry(path: str, save_dir: str) -> Optional[str]:
    """The entry of resolved ``save_dir`` (:data:`REPLACED_ENTRIES`) holding resolved ``path``, else None."""
    if path == save_dir or not _inside(path, save_dir):
        return None
    first = os.path.relpath(path, save_dir).split(os.sep)[0]
    replaced = any(fnmatch.fnmatchcase(first, pattern) for pattern in REPLACED_ENTRIES)
    return os.path.join(save_dir, first) if replaced else None


def check_paths(cfg: TrainConfig) -> None:
    """Refuse directories that coincide or nest destructively (see the module docstring), before anything is
    created or written: :class:`ConfigError` with one sentence naming both flags, both paths and the fix."""
    inputs = _inputs(cfg)
    save = os.path.realpath(cfg.model_save_dir)
    if cfg.do_train:
        for key, value, real in inputs:
            relation = _relation(save, real)
            if relation:
                raise ConfigError(
                    f"--model_save_dir {cfg.model_save_dir} {relation} --{key} {value}; a training run writes and "
                    f"replaces files in --model_save_dir, and an input must never be written: pass a "
                    f"--model_save_dir that neither is, lies inside nor contains {value}")
    outputs = [(key, getattr(cfg, key)) for key in ("result_dir", "log_dir") if getattr(cfg, key)]
    for key, value in outputs:
        real = os.path.realpath(value)
        for input_key, input_value, input_real in inputs:
            relation = _relation(real, input_real)
            if relation in ("is", "lies inside"):
                raise ConfigError(f"--{key} {value} {relation} --{input_key} {input_value}, an input the run must "
                                  f"never write; pass a --{key} outside {input_value}")
        entry = _replaced_entry(real, save) if cfg.do_train else None
        if entry:
            raise ConfigError(f"--{key} {value} lies inside {entry}, which the run replaces in --model_save_dir "
                              f"{cfg.model_save_dir} (its files would be lost); pass a --{key} outside it "
                              f"(--model_save_dir itself or a directory beside it)")
    if cfg.teacher_logits:
        real = os.path.realpath(cfg.teacher_logits)
        for input_key, input_value, input_real in inputs:
            if _inside(real, input_real):
                raise ConfigError(
                    f"--teacher_logits {cfg.teacher_logits} lies inside --{input_key} {input_value}, an input the "
                    f"run must never write (it rewrites a cache that does not match); pass a --teacher_logits "
                    f"outside it, or drop the flag: the teacher's own train_logits.npz is still read when valid")
        entry = _replaced_entry(real, save) if cfg.do_train else None
        if entry:
            raise ConfigError(f"--teacher_logits {cfg.teacher_logits} lies inside {entry}, which the run replaces "
                              f"in --model_save_dir {cfg.model_save_dir}; pass a --teacher_logits outside it")
    if cfg.vocab_file and cfg.do_train:
        entry = _replaced_entry(os.path.realpath(cfg.vocab_file), save)
        if entry:
            raise ConfigError(f"--vocab_file {cfg.vocab_file} lies inside {entry}, which the run replaces in "
                              f"--model_save_dir {cfg.model_save_dir}; keep the vocabulary outside it")


def validate_config(cfg: TrainConfig, check_directories: bool = True) -> TrainConfig:
    """Check every value of ``cfg`` (and, with ``check_directories``, that its output directories are
    writable); returns ``cfg``."""
    for spec in dataclasses.fields(TrainConfig):
        try:
            check_field(spec.name, getattr(cfg, spec.name), spec.type)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    check_recipe_keys(cfg)
    check_teachers(cfg)
    if cfg.cache_teacher_dtype != "float16" and cfg.cache_teacher_outputs == "off":
        raise ConfigError(f"--cache_teacher_dtype {cfg.cache_teacher_dtype} has no effect with --cache_teacher_outputs "
                          f"off; pass --cache_teacher_outputs memory, disk or auto, or drop --cache_teacher_dtype")
    check_resume_overwrite(cfg.resume, cfg.overwrite)
    if not cfg.do_train and not cfg.do_eval:
        raise ConfigError("--do_train false and --do_eval false leave nothing to do; enable one of them")
    check_paths(cfg)
    if check_directories:
        for key in ("model_save_dir", "result_dir"):
            check_writable_directory(key, getattr(cfg, key))
    return cfg


def check_recipe_keys(cfg: TrainConfig) -> None:
    """A key of :data:`RECIPE_KEYS` set (to anything but what ``cfg.recipe`` resolves it to) under a recipe that
    does not read it: :class:`ConfigError` naming the key and the recipe it belongs to."""
    from .recipes import RECIPES

    if cfg.recipe not in RECIPES:
        return  # prepare names the unknown recipe
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    defaults.update(RECIPES.get(cfg.recipe).defaults)
    for key, owners in RECIPE_KEYS.items():
        if cfg.recipe not in owners and getattr(cfg, key) != defaults[key]:
            raise ConfigError(f"key {key!r} ({getattr(cfg, key)!r}) belongs to recipe {' or '.join(owners)}, not "
                              f"{cfg.recipe!r}, which would ignore it; run --recipe {owners[0]} or drop the key "
                              f"from the command line or --config file")


def check_teachers(cfg: TrainConfig) -> None:
    """``multi_teacher_kd``: ``teacher_models`` is a list of directories (instead of ``teacher_model``) and
    ``teacher_weights``, when given, one number >= 0 per teacher with a positive sum."""
    if cfg.recipe != "multi_teacher_kd" or not cfg.do_train or not cfg.teacher_models:
        return  # none given: the plan says so when it loads the teachers
    if cfg.teacher_model:
        raise ConfigError(f"recipe 'multi_teacher_kd' reads its teachers from --teacher_models; drop --teacher_model "
                          f"{cfg.teacher_model} (or add it to --teacher_models)")
    weights = cfg.teacher_weights
    if weights is None:
        return
    if len(weights) != len(cfg.teacher_models):
        raise ConfigError(f"--teacher_weights has {len(weights)} entries but --teacher_models names "
                          f"{len(cfg.teacher_models)} teachers; give one weight per teacher")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"--teacher_weights {weights} must be finite numbers >= 0 with a positive sum; fix them")
