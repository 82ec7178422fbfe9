"""Initialise a BERT student from chosen teacher layers; save and load models in OneFlow's format."""
import os
import shutil
import tempfile
import uuid
from typing import Dict, Sequence

import oneflow as flow
import oneflow.nn as nn

__all__ = [
    "init_student_from_teacher",
    "check_student_teacher",
    "save_model",
    "load_model",
    "DISTILBERT_LAYERS",
]

#: DistilBERT's choice of 6 of BERT-base's 12 layers.
DISTILBERT_LAYERS = (0, 2, 4, 7, 9, 11)


def _bert_like(name: str, model) -> None:
    for attribute in ("embeddings", "encoder", "pooler", "classifier"):
        if not hasattr(model, attribute):
            raise TypeError(
                f"{name} must be a BertForSequenceClassification-like model with embeddings, encoder, "
                f"pooler and classifier, got {type(model).__name__} without {attribute!r}"
            )


def check_student_teacher(student: nn.Module, teacher: nn.Module, *, attentions: bool = True) -> None:
    """Check that a BERT student's outputs fit the teacher's for ``layer_distill``/``att_distill``.

    The student's ``reps`` width (``fit_size`` when it is a student with ``fit_dense``, else its
    ``hidden_size``) must equal the teacher's ``hidden_size``; with ``attentions``, the head counts
    must be equal too. Raises ``ValueError`` naming the values.
    """
    _bert_like("student", student)
    _bert_like("teacher", teacher)
    width = student.fit_size if student.fit_dense is not None else student.hidden_size
    if width != teacher.hidden_size:
        raise ValueError(
            f"the student's hidden states have width {width} (hidden_size={student.hidden_size}, "
            f"is_student={student.is_student}, fit_size={student.fit_size}) but the teacher's "
            f"hidden_size is {teacher.hidden_size}; build the student with is_student=True, "
            f"fit_size={teacher.hidden_size}"
        )
    if attentions and student.num_attention_heads != teacher.num_attention_heads:
        raise ValueError(
            f"the student has {student.num_attention_heads} attention heads but the teacher has "
            f"{teacher.num_attention_heads}; att_distill compares [B, heads, L, L] matrices, so the "
            f"head counts must be equal"
        )


def _copy_module(target: nn.Module, source: nn.Module) -> None:
    sources = dict(source.named_parameters())
    with flow.no_grad():
        for name, tensor in target.named_parameters():
            tensor.copy_(sources[name].detach().to(tensor.device))


def init_student_from_teacher(student: nn.Module, teacher: nn.Module, layers: Sequence[int]) -> nn.Module:
    """Copy the teacher's embeddings, layers ``layers`` (in order), pooler and classifier into ``student``.

    ``layers`` holds one teacher layer index per student layer: BERT-PKD's first ``k``
    (``list(range(k))``), DistilBERT's :data:`DISTILBERT_LAYERS`, or any list. ``fit_dense`` (a
    student-only projection) is left as it is. Returns ``student``; raises ``ValueError`` on a bad
    index list or a shape that differs (no partial copy is left behind by an index error).
    """
    _bert_like("student", student)
    _bert_like("teacher", teacher)
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise TypeError(f"layers must be a list of teacher layer indices, got {type(layers).__name__}")
    teacher_count, student_count = len(teacher.encoder.layer), len(student.encoder.layer)
    if len(layers) != student_count:
        raise ValueError(
            f"layers has {len(layers)} entries {list(layers)} but the student has {student_count} "
            f"layers; give one teacher layer index per student layer"
        )
    for index in layers:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < teacher_count:
            raise ValueError(
                f"layers {list(layers)} holds {index!r}, not a teacher layer index in "
                f"[0, {teacher_count - 1}]"
            )
    pairs = [("embeddings", student.embeddings, teacher.embeddings)]
    pairs += [(f"encoder.layer.{i} <- teacher encoder.layer.{t}", student.encoder.layer[i],
               teacher.encoder.layer[t]) for i, t in enumerate(layers)]
    pairs += [("pooler", student.pooler, teacher.pooler),
              ("classifier", student.classifier, teacher.classifier)]
    for where, target, source in pairs:  # validate every shape before copying anything
        _check_shapes(target, source, where)
    for _, target, source in pairs:
        _copy_module(target, source)
    return student


def _check_shapes(target: nn.Module, source: nn.Module, where: str) -> None:
    sources: Dict[str, flow.Tensor] = dict(source.named_parameters())
    for name, tensor in target.named_parameters():
        if name not in sources or tuple(tensor.shape) != tuple(sources[name].shape):
            seen = tuple(sources[name].shape) if name in sources else "absent"
            raise ValueError(
                f"{where}.{name}: the student's shape {tuple(tensor.shape)} differs from the "
                f"teacher's {seen}; a student initialised from teacher layers needs the teacher's "
                f"hidden_size, intermediate_size, vocab_size, max_position_embeddings, "
                f"type_vocab_size and label_num"
            )


def save_model(model: nn.Module, path) -> str:
    """Save ``model.state_dict()`` with ``flow.save`` to the directory ``path``, atomically.

    The state is written to a temporary directory beside ``path`` and renamed into place, so a
    crash never leaves a half-written ``path``; an existing ``path`` is replaced. Returns ``path``.
    """
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=parent)
    try:
        written = os.path.join(staging, "state")
        flow.save(model.state_dict(), written)
        if os.path.exists(path):
            old = os.path.join(staging, f"old-{uuid.uuid4().hex}")
            os.rename(path, old)
        os.rename(written, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def load_model(model: nn.Module, path) -> nn.Module:
    """Load a directory written by :func:`save_model` into ``model`` (strict names); returns ``model``."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no saved model at {path!r}; write one with save_model(model, path)")
    state = flow.load(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"saved model {path!r} does not fit {type(model).__name__}: missing {missing}; "
            f"unexpected {unexpected}"
        )
    for name, value in sorted(state.items()):
        if tuple(value.shape) != tuple(own[name].shape):
            raise ValueError(
                f"saved tensor {name!r} in {path!r} has shape {tuple(value.shape)} but the model's has "
                f"shape {tuple(own[name].shape)}; build the model with the configuration it was saved with"
            )
    model.load_state_dict(state)
    return model
