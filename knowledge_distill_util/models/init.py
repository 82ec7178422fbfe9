"""Initialise a BERT student from chosen teacher layers; save and load models as safetensors (no pickle).

A saved model is a directory holding one file, ``model.safetensors`` (:data:`WEIGHTS_FILE`): every tensor
of ``model.state_dict()`` under its name, with the state's structure in the file's metadata (see
:mod:`knowledge_distill_util._state`). No file this package reads can run code: a directory in OneFlow's
old pickle layout (``pickled_data``, written by ``flow.save`` before this format) is refused before anything
in it is read, naming the one-time conversion ``python -m knowledge_distill_util convert-checkpoint DIR``.
"""
import os
from typing import Dict, Sequence

import oneflow as flow
import oneflow.nn as nn

from .._io import atomic_write_file, interrupted_copies, replace_directory
from .._state import UnreadableStateError, is_legacy_directory, legacy_error, state_bytes
from .._state import read_state as _read_state_file

__all__ = [
    "init_student_from_teacher",
    "check_student_teacher",
    "save_model",
    "load_model",
    "read_state",
    "WEIGHTS_FILE",
    "DISTILBERT_LAYERS",
]

#: The file of a saved model's directory.
WEIGHTS_FILE = "model.safetensors"

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
    """Save ``model.state_dict()`` to the directory ``path`` as ``path/model.safetensors``, atomically.

    The file is written into a fresh directory beside ``path`` which then takes the place of the old
    one in one step (:func:`knowledge_distill_util._io.replace_directory`): at every instant, also
    when the process is killed, ``path`` holds the old or the new complete weights. Temporary copies
    left by a killed save are removed by the next save to ``path``. Returns the absolute ``path``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a oneflow.nn.Module, got {type(model).__name__}")
    data = state_bytes(model.state_dict())  # every tensor checked before anything is written
    return replace_directory(path, lambda directory: _fill_weights(directory, data))


def _fill_weights(directory: str, data: bytes) -> None:
    atomic_write_file(os.path.join(directory, WEIGHTS_FILE), lambda stream: stream.write(data))


def load_model(model: nn.Module, path) -> nn.Module:
    """Load a directory written by :func:`save_model` into ``model`` (strict names); returns ``model``.

    Raises ``FileNotFoundError`` (no directory), ``ValueError`` naming the directory (unreadable, old
    pickle layout: :class:`~knowledge_distill_util._state.LegacyPickleError`, names or shapes that differ).
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        copies = interrupted_copies(path)
        if copies:
            raise FileNotFoundError(
                f"no saved model at {path!r}, but a save to it was interrupted and left the previous "
                f"weights at {copies[-1]!r}; rename that directory to {path!r} to restore them"
            )
        raise FileNotFoundError(f"no saved model at {path!r}; write one with save_model(model, path)")
    state = read_state(path)
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


def read_state(path) -> Dict[str, flow.Tensor]:
    """``{name: CPU tensor}`` of a directory written by :func:`save_model` (nothing else is run or loaded).

    Raises :class:`~knowledge_distill_util._state.LegacyPickleError` (a ``ValueError``) for a directory
    in OneFlow's pickle layout before reading anything, ``ValueError`` naming the directory when its file
    is missing, truncated or corrupt, or holds no flat ``{name: tensor}`` dict.
    """
    path = os.fspath(path)
    if is_legacy_directory(path, WEIGHTS_FILE):
        raise legacy_error("saved model", path, path)
    file = os.path.join(path, WEIGHTS_FILE)
    if not os.path.isfile(file):
        raise ValueError(f"saved model {path!r} has no {WEIGHTS_FILE}; write it with save_model(model, path)")
    return _read_state(path, file)


def _read_state(path: str, file: str) -> Dict[str, flow.Tensor]:
    """The state in ``file`` with a one-sentence error naming the directory ``path`` when it is unreadable."""
    try:
        state = _read_state_file(file)
    except UnreadableStateError as err:
        raise ValueError(
            f"saved model {path!r} is unreadable ({err.reason}); it is "
            f"truncated or corrupt: save the model again or restore the directory from a backup"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, flow.Tensor) for v in state.values()):
        raise ValueError(
            f"saved model {path!r} holds a {type(state).__name__}, not a state dict of tensors; write it "
            f"with save_model(model, path)"
        )
    return state
