"""A run's plan: data, teacher, student and stages, all built and checked before any training step."""
import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import oneflow.nn as nn

from ..data import TaskData, load_task_data
from ..models.artifacts import read_meta
from .._device import resolve_device
from .builders import freeze_word_embeddings, load_teacher
from ..config.schema import ConfigError, TrainConfig, check_recipe_name
from .objectives import Objective
from .recipes import RECIPES, BuildContext, Recipe

__all__ = ["Stage", "Plan", "prepare", "load_data", "evaluation_source", "check_masks_fit"]

logger = logging.getLogger(__name__)


@dataclass
class Stage:
    """One stage to run: ``model`` is trained with ``objective``; ``export`` is saved after it."""

    name: str
    objective: Objective
    model: nn.Module
    export: nn.Module
    num_epochs: float
    learning_rate: float


@dataclass
class Plan:
    """Everything a run needs, built and checked before any training step."""

    cfg: TrainConfig
    recipe: Recipe
    data: TaskData
    teacher: Optional[nn.Module]
    teacher_meta: Optional[Dict]
    stages: List[Stage]
    final_model: nn.Module
    description: str
    #: several teachers (``--teacher_models``): ``(directory, model, meta)`` each, the first is :attr:`teacher`
    teachers: Optional[List[Tuple[str, nn.Module, Dict]]] = None

    @property
    def whole_model(self) -> nn.Module:
        """The largest trained model holding :attr:`final_model`: BERT-of-Theseus's whole model (predecessor
        and successor; its successor is the final model), else :attr:`final_model` itself."""
        for stage in self.stages:
            if stage.model is not self.final_model and any(m is self.final_model for m in stage.model.modules()):
                return stage.model
        return self.final_model


def load_data(cfg: TrainConfig, seq_length: Optional[int] = None, vocab_file: Optional[str] = None,
              teacher_view: bool = False) -> TaskData:
    """The run's train/dev data (``cfg``'s data keys) at ``seq_length`` (default ``cfg.seq_length``).

    With ``--train_data_dir``/``--eval_data_dir`` (the original's OFRecord parts) the parts are read
    instead of ``--data_dir``: ``teacher_view`` (the teacher of Distilled-BiLSTM) reads the BERT parts, else
    the ``*_lstm`` parts when given, whatever the two sequence lengths. ``aug_train`` reads TinyBERT's augmented
    training set instead (``train_aug.tsv``; for the parts see :mod:`knowledge_distill_util.compat.data`)."""
    if cfg.train_data_dir or cfg.eval_data_dir:
        from ..compat.data import load_ofrecord_data

        return load_ofrecord_data(cfg, seq_length, teacher_view=teacher_view)
    if cfg.aug_train and cfg.do_train and cfg.data_dir:
        augmented = os.path.join(cfg.data_dir, "train_aug.tsv")
        if not os.path.isfile(augmented):
            raise ConfigError(f"--aug_train: {augmented} does not exist; make it with python scripts/data_augmentation.py "
                              f"--glue_dir {cfg.data_dir} --task_name {cfg.task_name} --model_load_dir <pretrained BERT>")
        logger.info("--aug_train: training on %s (TinyBERT's augmented set)", augmented)
    try:
        return load_task_data(cfg.data_dir, cfg.task_name, seq_length or cfg.seq_length,
                              vocab_file=vocab_file or cfg.vocab_file, max_train_examples=cfg.max_train_examples,
                              max_eval_examples=cfg.max_eval_examples,
                              train_split="train_aug" if cfg.aug_train and cfg.do_train else "train")
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(str(error)) from error


def _teacher_vocab(cfg: TrainConfig) -> Optional[str]:
    """The vocabulary file the (first) teacher was trained with (None when unknown)."""
    try:
        return read_meta(first_teacher(cfg), "teacher").get("vocab_file")
    except ConfigError:
        return None  # load_teacher reports the problem with the teacher itself


def first_teacher(cfg: TrainConfig) -> Optional[str]:
    """``--teacher_model``, or the first of ``--teacher_models`` (``multi_teacher_kd``)."""
    return cfg.teacher_models[0] if cfg.teacher_models else cfg.teacher_model


def check_teacher_labels(directories: Sequence[str]) -> None:
    """The teachers of ``--teacher_models`` share one label set (their ``model_config.json``); otherwise
    :class:`ConfigError` naming the two that differ. A teacher without one is left to :func:`load_teacher`."""
    seen = None
    for directory in directories:
        try:
            labels = read_meta(directory, "teacher").get("labels")
        except ConfigError:
            continue
        if seen is None:
            seen = (directory, labels)
        elif labels != seen[1]:
            count = (lambda x: len(x) if isinstance(x, list) else "?")
            raise ConfigError(f"--teacher_models: teacher {directory} has {count(labels)} labels {labels} but "
                              f"teacher {seen[0]} has {count(seen[1])} {seen[1]}; give teachers fine-tuned on the "
                              f"same task and labels")


def _load_teachers(cfg: TrainConfig, data, attention_output) -> List[Tuple[str, nn.Module, Dict]]:
    """Every teacher of ``cfg`` as ``(directory, model, meta)``, each checked like ``--teacher_model``."""
    directories = list(cfg.teacher_models or [cfg.teacher_model])
    if len(directories) > 1:
        check_teacher_labels(directories)
    teachers = []
    for directory in directories:
        teacher, meta = load_teacher(directory, data.spec, attention_output,
                                     num_attention_heads=cfg.teacher_num_attention_heads,
                                     seq_length=cfg.teacher_seq_length or cfg.seq_length)
        if cfg.seq_length > teacher.config["max_position_embeddings"]:
            raise ConfigError(f"seq_length {cfg.seq_length} exceeds teacher checkpoint {directory}'s "
                              f"max_position_embeddings {teacher.config['max_position_embeddings']}; lower --seq_length")
        teachers.append((directory, teacher, meta))
    return teachers


def _stages(recipe: Recipe, cfg: TrainConfig, model: nn.Module) -> List[Stage]:
    stages = []
    for position, spec in enumerate(recipe.planned_stages(cfg)):
        first = position == 0
        stages.append(Stage(spec.name, spec.objective, spec.trains(model), spec.exports(model),
                            cfg.num_epochs if first else cfg.stage2_num_epochs,
                            cfg.learning_rate if first else cfg.stage2_learning_rate))
    if not stages:
        raise ConfigError(f"recipe {recipe.name!r} selects no stage for this configuration")
    return stages


def _check_ids_fit(data: TaskData, config: Dict, what: str) -> None:
    """Every token id of ``data`` in ``[0, vocab_size)`` and segment id in ``[0, type_vocab_size)`` of
    ``config``, checked once before training: inside ``nn.Graph`` an out-of-range id is not checked and
    aborts the process (the models check them in eager mode only). :class:`ConfigError` otherwise."""
    for part, features in (("train", data.train), ("dev", data.dev)):
        for name, ids, key in (("token", features.input_ids, "vocab_size"),
                               ("segment", features.segment_ids, "type_vocab_size")):
            rows = config.get(key)
            if rows is None or ids.size == 0:
                continue
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= rows:
                bad = low if low < 0 else high
                raise ConfigError(f"the {part} data holds {name} id {bad} but {what} has {key} {rows} (ids 0 to "
                                  f"{rows - 1}); the data was made with another vocabulary: convert it with "
                                  f"the model's vocabulary or pass the matching model")


def check_masks_fit(data, model: nn.Module, what: str) -> None:
    """Every ``input_mask`` of the train/dev data holds only 0 and 1, and, for a model reading the valid
    tokens first (the BiLSTM's ``ignore_padding``), each row is ``1 ... 1 0 ... 0``: checked once per data
    set with numpy before training (the model would refuse it at its first step). :class:`ConfigError`."""
    contiguous = bool(getattr(model, "ignore_padding", False))
    for part, features in (("training", data.train), ("dev", data.dev)):
        mask = np.asarray(features.input_mask)
        if mask.size == 0:
            continue
        bad = np.argwhere((mask != 0) & (mask != 1))
        if len(bad):
            row, position = (int(i) for i in bad[0])
            raise ConfigError(f"the {part} data's input_mask holds {mask[row, position]} at row {row}, position "
                              f"{position}; a mask holds 1 (token) or 0 (padding): convert the data again")
        if contiguous and mask.shape[1] > 1:
            on = mask != 0
            gaps = np.flatnonzero((on[:, 1:] & ~on[:, :-1]).any(axis=1))
            if len(gaps):
                shown = mask[gaps[0]].astype(np.int64).tolist()
                text = str(shown) if len(shown) <= 24 else f"{str(shown[:24])[:-1]}, ...]"
                raise ConfigError(f"the {part} data's input_mask row {int(gaps[0])} is {text} (padding before or "
                                  f"between tokens, {len(gaps)} such row(s)); {what} reads the valid tokens first "
                                  f"(1 ... 1 0 ... 0): pad the data on the right")


def evaluation_source(cfg: TrainConfig) -> str:
    """The model an evaluation-only run reads: ``--student_model``, else ``--model_save_dir``."""
    return cfg.student_model or cfg.model_save_dir


def _prepare_evaluation(cfg: TrainConfig, recipe: Recipe, device) -> Plan:
    """``--do_train false``: the data and the saved model (this package's or an original snapshot); no teacher."""
    from ..models.artifacts import load_trained
    from ..compat.models import load_snapshot_model, snapshot_directory

    source = evaluation_source(cfg)
    if snapshot_directory(source):
        prefer = {"teacher": "teacher", "theseus": "theseus"}.get(recipe.name, "student")
        heads = cfg.teacher_num_attention_heads if prefer != "student" else cfg.student_num_attention_heads
        model, meta = load_snapshot_model(source, "model", heads, prefer=prefer)
        data = load_data(cfg)
        if model.config.get("label_num") != data.spec.num_labels:
            raise ConfigError(f"snapshot {source} has {model.config.get('label_num')} outputs but task "
                              f"{data.spec.name!r} has {data.spec.num_labels}; pass the model of this task")
    else:
        vocab = cfg.vocab_file or read_meta(source, "model").get("vocab_file")
        data = load_data(cfg, vocab_file=vocab)
        model, meta = load_trained(source, "model")
    check_masks_fit(data, model, f"the model in {source}")
    model.to(device)
    return Plan(cfg, recipe, data, None, None, [], model, meta.get("origin") or f"the model in {source}")


def prepare(cfg: TrainConfig) -> Plan:
    """Build and check data, teacher, student and stages; raises :class:`ConfigError` on bad input.

    Model weights are initialised from OneFlow's default generator: seed it first (``run`` does).
    """
    check_recipe_name(cfg.recipe, RECIPES)
    recipe = RECIPES.get(cfg.recipe)
    try:
        device = resolve_device(cfg.device)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"--device: {error}") from None
    if not cfg.do_train:
        return _prepare_evaluation(cfg, recipe, device)
    teacher, meta, teachers = None, None, None
    if recipe.needs_teacher:
        if cfg.recipe == "multi_teacher_kd" and not cfg.teacher_models:
            raise ConfigError("recipe 'multi_teacher_kd' needs --teacher_models, the fine-tuned teacher directories "
                              "(e.g. --teacher_models t1,t2 or, in YAML, teacher_models: [t1, t2])")
        data = load_data(cfg, vocab_file=cfg.vocab_file or (_teacher_vocab(cfg) if first_teacher(cfg) else None))
        attention_output = cfg.attention_output if "atts" in recipe.teacher_outputs else None
        teachers = _load_teachers(cfg, data, attention_output)
        _, teacher, meta = teachers[0]
    else:
        data = load_data(cfg)
    named = ", ".join(cfg.teacher_models) if cfg.teacher_models else cfg.teacher_model
    context = BuildContext(cfg, data.spec, teacher, recipe.teacher_outputs, description=f"teacher {named}")
    try:
        model = recipe.build(context)
    except (ValueError, TypeError) as error:  # a constructor or a config.json refusing a size or probability
        raise ConfigError(f"recipe {recipe.name!r} cannot build its model: {error}") from error
    stages = _stages(recipe, cfg, model)
    final = stages[-1].export
    if cfg.freeze_word_embeddings:
        freeze_word_embeddings(final)
    _check_ids_fit(data, final.config, f"the {recipe.name} student")
    check_masks_fit(data, final, f"the {recipe.name} student")
    if teacher is not None and hasattr(final, "encoder"):  # a BERT student reads the teacher's view of the data
        for directory, each, _ in teachers:
            _check_ids_fit(data, each.config, f"teacher {directory}")
    for module in [t for _, t, _ in teachers or []] + [model] + [stage.model for stage in stages]:
        if module is not None:
            module.to(device)
    return Plan(cfg, recipe, data, teacher, meta, stages, final, context.description,
                teachers=teachers if cfg.teacher_models else None)
