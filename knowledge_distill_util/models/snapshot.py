"""The original toolkit's OneFlow snapshot directories: load them into this package's models, write them.

Layout (yejinlei/Dubhe ``model_compress/model_compress/distil``; OneFlow's ``check_point_v2``): a snapshot
(``snapshot_best``, ``snapshot_last_snapshot``, a converted pretrained BERT, ...) is a directory with one
folder per variable, named by its scopes joined with ``-``; each folder holds ``out``, the float32 values
in C order, and possibly ``meta`` (text ``VariableMetaInfo``: shape and data type; the original's
``convert_tf_ckpt_to_of.py`` writes none). OneFlow writes an empty ``snapshot_done`` file beside them.
Adam's slots are ``<variable>-m`` / ``<variable>-v`` (``util.py``'s ``remove_optimizer_params``).

BERT (``src/bert.py`` ``BertBackbone``, ``src/knowledge_distill_util.py`` ``PooledOutput``,
``_AddClassfication``, ``fit_dense``; the same names in ``theseus/bert.py``); ``H`` hidden, ``I``
intermediate, ``V``/``P``/``T`` vocabulary/positions/segments, ``C`` labels, ``F`` fit size:

Original variable (``<p>`` = ``""`` teacher, ``"student-"`` student), original shape -> this package
(``nn.Linear.weight`` is ``[out, in]``; "T" = stored transposed):

- ``<p>bert-embeddings-word_embeddings`` ``[V, H]`` -> ``embeddings.word_embeddings.weight``
- ``<p>bert-embeddings-position_embeddings`` ``[1, P, H]`` -> ``embeddings.position_embeddings.weight``
- ``<p>bert-embeddings-token_type_embeddings`` ``[T, H]`` -> ``embeddings.token_type_embeddings.weight``
- ``<p>bert-embeddings-LayerNorm-gamma`` / ``-beta`` ``[H]`` -> ``embeddings.LayerNorm.weight`` / ``.bias``
- ``<p>bert-encoder-layer_<i>-attention-self-{query,key,value}-weight`` ``[H, H]`` (T) / ``-bias`` ``[H]``
  -> ``encoder.layer.<i>.attention.self.{query,key,value}``
- ``<p>bert-encoder-layer_<i>-attention-output-dense-weight`` ``[H, H]`` (T) / ``-bias``
  -> ``encoder.layer.<i>.attention.output.dense``
- ``<p>bert-encoder-layer_<i>-attention-output-LayerNorm-gamma`` / ``-beta`` -> ``...attention.output.LayerNorm``
- ``<p>bert-encoder-layer_<i>-intermediate-dense-weight`` ``[H, I]`` (T) / ``-bias`` ``[I]``
  -> ``...intermediate.dense``
- ``<p>bert-encoder-layer_<i>-output-dense-weight`` ``[I, H]`` (T) / ``-bias`` ``[H]`` -> ``...output.dense``
- ``<p>bert-encoder-layer_<i>-output-LayerNorm-gamma`` / ``-beta`` ``[H]`` -> ``...output.LayerNorm``
- ``<p>bert-pooler-dense-weight`` ``[H, H]`` (T) / ``-bias`` -> ``pooler.dense``
- ``<p>classification-output_weights`` ``[C, H]`` / ``<p>classification-output_bias`` ``[C]`` -> ``classifier``
- ``student-fit_dense-weight`` ``[F, H]`` / ``-bias`` ``[F]`` -> ``fit_dense``

``_FullyConnected`` kernels (``<name>-weight``, ``[in, out]``) are stored transposed relative to
``nn.Linear.weight``; the classifier and ``fit_dense`` (``matmul(x, w, transpose_b=True)``) are not.
BERT-of-Theseus (``theseus/bert_theseus.py``): the successor's layers are
``bert-encoder-student-layer_<i>-...`` beside the predecessor's ``bert-encoder-layer_<i>-...``, sharing the
embeddings, pooler and classifier: ``scope="theseus"`` loads the successor as a plain BERT;
``save_snapshot(successor, ..., scope="theseus", predecessor=layers)`` writes the whole model (both layer
sets), which ``scope="teacher"`` reads back as the predecessor BERT.
The original's LayerNorm (``flow.layers.layer_norm``, no epsilon given) uses ``epsilon=1e-5``:
:func:`read_snapshot_config` returns ``layer_norm_eps=1e-5``.

Distilled-BiLSTM (``src/knowledge_distill_util.py`` ``LSTMStudentForSequenceClassification``,
``src/lstm.py`` ``lstm``): ``student-embeddings-word_embeddings`` ``[V + 1, E]``;
``student-lstm-layer0-forward-<gate>-weight`` ``[E, H]``, ``<gate>-h-weight`` ``[H, H]``, ``<gate>-bias``
``[H]`` for the gates ``input``, ``forget``, ``cell``, ``output`` (this package's ``i, f, g, o`` rows of
``weight_ih_l0`` / ``weight_hh_l0``, transposed; the one bias goes to ``bias_ih_l0``, ``bias_hh_l0`` = 0);
``student-lstm-FC1-weight`` ``[I, H]`` / ``-bias`` (``dense``), ``student-lstm-FC2-weight`` ``[C, I]`` /
``-bias`` (``classifier``), not transposed (``flow.layers.dense``). The original is one unidirectional layer
reading the state after position ``L - 1`` (``ignore_padding=False``). Further layers and the backward
direction of a bidirectional model are written as ``layer<l>-backward-...`` (the naming of the original's
unused ``Blstm``); the original's scripts cannot read those.

Not mapped: Adam slots are skipped on load and never written (as after the original's
``--serve_for_online``); the number of attention heads is not stored (pass it, or ``H / 64`` is assumed
with a warning); hidden activation, dropout and ``initializer_range`` are not stored.

The directory's files are read and written by :mod:`.snapshot_files`, the name tables live in
:mod:`.snapshot_tables`; this module (loading, sizes, saving) is a little over 400 lines because of the
mapping table above, which belongs with the functions that apply it.
"""
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import oneflow as flow
import oneflow.nn as nn

from .._checks import check_int
from .._io import replace_directory
from .bert import BertForSequenceClassification, BertLayer, BertStudentForSequenceClassification
from .lstm import LSTMStudentForSequenceClassification
from .snapshot_files import (_OPTIMIZER_SLOT, _check_directory, _write_snapshot_files, list_snapshot_variables,
                             read_snapshot_variable, snapshot_variable_shapes)
from .snapshot_tables import _Var, _bert_names, _bert_table, _layer_rows, _lstm_export, _lstm_import, _lstm_vars

__all__ = [
    "SNAPSHOT_SCOPES",
    "ORIGINAL_LAYER_NORM_EPS",
    "SnapshotReport",
    "SnapshotConfig",
    "list_snapshot_variables",
    "read_snapshot_variable",
    "snapshot_variable_shapes",
    "read_snapshot_config",
    "load_snapshot",
    "save_snapshot",
    "build_from_snapshot",
]

logger = logging.getLogger(__name__)

#: ``scope`` values: ``teacher`` (``bert-...``), ``student`` (``student-bert-...``), ``theseus`` (the
#: successor layers ``bert-encoder-student-layer_<i>`` with the shared embeddings, pooler, classifier).
SNAPSHOT_SCOPES = ("auto", "teacher", "student", "theseus")
#: ``flow.layers.layer_norm``'s default epsilon, which the original's BERT uses.
ORIGINAL_LAYER_NORM_EPS = 1e-5


@dataclass
class SnapshotReport:
    """What :func:`load_snapshot` did: variables ``loaded``; optional ones ``missing`` from the snapshot
    (the classifier of a pretrained BERT, ``fit_dense`` of a BERT-PKD student: kept as initialised);
    ``unused`` variables of the snapshot (another model's, heads such as ``cls-*``); ``optimizer_slots``
    skipped."""

    directory: str
    scope: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unused: List[str] = field(default_factory=list)
    optimizer_slots: int = 0


@dataclass
class SnapshotConfig:
    """:func:`read_snapshot_config`'s answer: ``kind`` (``"bert"`` or ``"lstm"``), the ``scope`` found,
    and ``config``, keyword arguments for the model's constructor."""

    kind: str
    scope: str
    config: Dict[str, object]


# ---------------------------------------------------------------------------------------------- scopes


def _check_model(model) -> str:
    if isinstance(model, BertForSequenceClassification):
        return "bert"
    if isinstance(model, LSTMStudentForSequenceClassification):
        return "lstm"
    raise TypeError(f"model must be a BertForSequenceClassification (teacher or student) or an "
                    f"LSTMStudentForSequenceClassification, got {type(model).__name__}")


def _check_scope(scope) -> str:
    if scope not in SNAPSHOT_SCOPES:
        raise ValueError(f"scope must be one of {SNAPSHOT_SCOPES}, got {scope!r}: 'teacher' reads bert-..., "
                         f"'student' student-bert-..., 'theseus' the successor layers bert-encoder-student-layer_*")
    return scope


def _resolve_scope(scope: str, names, student: bool, directory: str) -> str:
    if scope != "auto":
        return scope
    has_teacher = "bert-embeddings-word_embeddings" in names
    has_student = "student-bert-embeddings-word_embeddings" in names
    if has_teacher and has_student:
        return "student" if student else "teacher"
    if has_teacher or has_student:
        return "teacher" if has_teacher else "student"
    raise ValueError(f"snapshot {directory} holds no BERT (neither bert-embeddings-word_embeddings nor "
                     f"student-bert-embeddings-word_embeddings); it holds {', '.join(sorted(names)[:6])}"
                     f"{' ...' if len(names) > 6 else ''}")


def _count_layers(names, stem: str) -> int:
    found = {int(m.group(1)) for n in names for m in [re.match(re.escape(stem) + r"(\d+)-", n)] if m}
    return len(found)


# --------------------------------------------------------------------------------------------- loading


def load_snapshot(model: nn.Module, directory, scope: str = "auto") -> SnapshotReport:
    """Copy the original snapshot ``directory``'s variables into ``model`` (in place); see the module doc.

    ``model``: a :class:`~.bert.BertForSequenceClassification` (teacher or student; ``fit_dense`` is
    loaded when both have it) or an :class:`~.lstm.LSTMStudentForSequenceClassification`. ``scope``
    (BERT only): ``"auto"`` takes ``student-bert-...`` for a model with ``fit_dense`` when present,
    else whichever BERT the snapshot holds; ``"teacher"``, ``"student"``, ``"theseus"`` choose.
    Every variable is read and checked before the first parameter changes. Adam slots are skipped; the
    classifier and ``fit_dense`` may be missing (kept as initialised, listed in ``report.missing``, logged).
    Raises ``ValueError`` naming the variable: a missing required one, a wrong shape (both shapes), an
    encoder with another number of layers; or the directory, when it is not a snapshot.
    """
    kind = _check_model(model)
    directory = _check_directory(directory)
    scope = _check_scope(scope)
    available = list_snapshot_variables(directory)
    slots = {n for n in available if _OPTIMIZER_SLOT.fullmatch(n)}
    names = set(available) - slots
    scope, table, wanted = _wanted_variables(model, kind, scope, names, directory)
    report = SnapshotReport(directory=directory, scope=scope, optimizer_slots=len(slots))
    arrays = _read_wanted(wanted, names, directory, scope, kind, report)
    with flow.no_grad():
        if kind == "bert":
            _copy_bert(model, table, arrays)
        else:
            _lstm_import(model, arrays)
    report.loaded = sorted(arrays)
    report.missing.sort()
    report.unused = sorted(names - set(arrays))
    if report.missing:
        logger.warning("%s: %s not in the snapshot; kept as initialised", directory, ", ".join(report.missing))
    logger.info("loaded %d variables from %s (scope %s); %d unused, %d optimizer slots skipped",
                len(report.loaded), directory, scope, len(report.unused), report.optimizer_slots)
    return report


def _wanted_variables(model, kind: str, scope: str, names, directory: str):
    """``(scope, table, wanted)``: the resolved scope, the BERT table (``None`` for the LSTM) and the
    variables ``model`` reads; raises ``ValueError`` for another number of encoder layers or a BERT scope
    given for the LSTM."""
    if kind == "bert":
        scope = _resolve_scope(scope, names, model.fit_dense is not None, directory)
        stem = _bert_names(scope)[1]
        layers = _count_layers(names, stem)
        if layers != len(model.encoder.layer):
            raise ValueError(f"snapshot {directory} holds {layers} encoder layers ({stem}<i>-...) but the model has "
                             f"{len(model.encoder.layer)}; build the model with num_hidden_layers={layers} "
                             f"(read_snapshot_config)")
        table = _bert_table(model, scope)
        return scope, table, [var for var, _, _ in table]
    if scope not in ("auto", "student"):
        raise ValueError(f"scope {scope!r} is for BERT; the original's LSTM student is always student-...")
    return "student", None, _lstm_vars(model)


def _read_wanted(wanted: List[_Var], names, directory: str, scope: str, kind: str,
                 report: SnapshotReport) -> Dict[str, np.ndarray]:
    """``{name: values}`` of every ``wanted`` variable present (optional absent ones go to
    ``report.missing``); raises ``ValueError`` for a required one that is absent."""
    arrays = {}
    for var in wanted:
        if var.name not in names:
            if var.required:
                raise ValueError(f"variable {var.name} (shape {var.shape}) is missing from snapshot {directory}; "
                                 f"it is not a {scope} {kind.upper()} snapshot of this architecture (scope "
                                 f"{scope!r}: try another scope, or check the path)")
            report.missing.append(var.name)
            continue
        arrays[var.name] = read_snapshot_variable(directory, var.name, var.shape)
    return arrays


def _copy_bert(model: BertForSequenceClassification, table, arrays: Dict[str, np.ndarray]) -> None:
    """Copy ``arrays`` into the BERT's parameters by ``table`` (transposing the ``_FullyConnected`` kernels)."""
    params = dict(model.named_parameters())
    for var, key, transposed in table:
        if var.name in arrays:
            value = arrays[var.name].T if transposed else arrays[var.name].reshape(tuple(params[key].shape))
            params[key].copy_(flow.tensor(np.ascontiguousarray(value), dtype=params[key].dtype)
                              .to(params[key].device))


# --------------------------------------------------------------------------------------------- configs


def _numel(shapes: Dict[str, Tuple[int, ...]], name: str) -> int:
    return int(np.prod(shapes[name]))


def _divide(shapes, name: str, by: int, what: str, directory: str) -> int:
    total = _numel(shapes, name)
    if total % by:
        raise ValueError(f"variable {name} in {directory} holds {total} values, not a multiple of the hidden "
                         f"size {by}; the snapshot is corrupt")
    return total // by


def read_snapshot_config(directory, scope: str = "auto", num_attention_heads: Optional[int] = None,
                         student: bool = False) -> SnapshotConfig:
    """The architecture sizes of the snapshot ``directory``, from its variables' sizes alone.

    BERT: ``vocab_size``, ``hidden_size``, ``num_hidden_layers``, ``intermediate_size``,
    ``max_position_embeddings``, ``type_vocab_size``, ``label_num`` (when the classifier is present),
    ``is_student``/``fit_size`` (when ``fit_dense`` is present), ``layer_norm_eps`` = 1e-5 (the original's)
    and ``num_attention_heads``: not stored in a snapshot, so the argument, else ``hidden_size // 64`` (the
    original's ``hidden_size_per_head`` default) with a warning; a hidden size that is not a multiple of 64
    then raises ``ValueError`` asking for it. ``scope="auto"`` with both BERTs present takes the student
    when ``student`` is True. LSTM: ``vocab_size`` (rows), ``embedding_size``, ``hidden_size``,
    ``num_hidden_layers``, ``bidirectional``, ``intermediate_size``, ``label_num``, ``ignore_padding``
    False (the original's). Found from ``student-lstm-layer0-forward-input-weight``.
    """
    directory = _check_directory(directory)
    scope = _check_scope(scope)
    num_attention_heads = check_int("num_attention_heads", num_attention_heads, allow_none=True)
    shapes = {n: s for n, s in snapshot_variable_shapes(directory).items() if not _OPTIMIZER_SLOT.fullmatch(n)}
    if "student-lstm-layer0-forward-input-weight" in shapes and scope in ("auto", "student"):
        return _lstm_config(shapes, directory)
    scope = _resolve_scope(scope, shapes, student, directory)
    prefix, stem = _bert_names(scope)
    gamma = f"{prefix}bert-embeddings-LayerNorm-gamma"
    if gamma not in shapes:
        raise ValueError(f"variable {gamma} is missing from snapshot {directory}; it is not a {scope} BERT snapshot")
    hidden = _numel(shapes, gamma)
    layers = _count_layers(shapes, stem)
    if layers == 0:
        raise ValueError(f"snapshot {directory} holds no encoder layer {stem}0-...; it is not a {scope} BERT snapshot")
    config: Dict[str, object] = {
        "vocab_size": _divide(shapes, f"{prefix}bert-embeddings-word_embeddings", hidden, "vocab", directory),
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": _numel(shapes, f"{stem}0-intermediate-dense-bias"),
        "max_position_embeddings": _divide(shapes, f"{prefix}bert-embeddings-position_embeddings", hidden,
                                           "positions", directory),
        "type_vocab_size": _divide(shapes, f"{prefix}bert-embeddings-token_type_embeddings", hidden, "types",
                                   directory),
        "layer_norm_eps": ORIGINAL_LAYER_NORM_EPS,
    }
    if num_attention_heads is None:
        if hidden % 64:
            raise ValueError(f"snapshot {directory} has hidden_size {hidden}, which is not a multiple of 64, and "
                             f"a snapshot does not store the number of attention heads: pass num_attention_heads "
                             f"(the original's --num_attention_heads / --student_num_attention_heads)")
        num_attention_heads = hidden // 64
        logger.warning("snapshot %s does not store the number of attention heads; assuming %d (hidden_size %d / "
                       "64, the original's hidden_size_per_head default): pass num_attention_heads otherwise",
                       directory, num_attention_heads, hidden)
    if hidden % num_attention_heads:
        raise ValueError(f"num_attention_heads={num_attention_heads} does not divide the snapshot's hidden_size "
                         f"{hidden}; pass the head count the model was trained with")
    config["num_attention_heads"] = num_attention_heads
    if f"{prefix}classification-output_bias" in shapes:
        config["label_num"] = _numel(shapes, f"{prefix}classification-output_bias")
    if f"{prefix}fit_dense-bias" in shapes:
        config["is_student"] = True
        config["fit_size"] = _numel(shapes, f"{prefix}fit_dense-bias")
    return SnapshotConfig("bert", scope, config)


def _lstm_config(shapes, directory: str) -> SnapshotConfig:
    hidden = _numel(shapes, "student-lstm-layer0-forward-input-bias")
    embedding = _divide(shapes, "student-lstm-layer0-forward-input-weight", hidden, "embedding", directory)
    layers = _count_layers(shapes, "student-lstm-layer")
    bidirectional = "student-lstm-layer0-backward-input-bias" in shapes
    inter = _numel(shapes, "student-lstm-FC1-bias")
    config: Dict[str, object] = {
        "vocab_size": _divide(shapes, "student-embeddings-word_embeddings", embedding, "vocab", directory),
        "embedding_size": embedding, "hidden_size": hidden, "num_hidden_layers": layers,
        "bidirectional": bidirectional, "intermediate_size": inter, "ignore_padding": False,
    }
    if "student-lstm-FC2-bias" in shapes:
        config["label_num"] = _numel(shapes, "student-lstm-FC2-bias")
    return SnapshotConfig("lstm", "student", config)


def build_from_snapshot(directory, scope: str = "auto", num_attention_heads: Optional[int] = None,
                        student: bool = False, **overrides) -> Tuple[nn.Module, SnapshotReport]:
    """Build the model :func:`read_snapshot_config` describes (``overrides`` replace values, e.g.
    ``label_num=3`` for a pretrained BERT without classifier, ``hidden_dropout_prob=0.0``), load the
    snapshot into it and return ``(model, report)``."""
    found = read_snapshot_config(directory, scope, num_attention_heads, student)
    config = dict(found.config, **overrides)
    if found.kind == "lstm":
        model = LSTMStudentForSequenceClassification(**config)
    elif config.get("is_student"):
        model = BertStudentForSequenceClassification(**config)
    else:
        model = BertForSequenceClassification(**config)
    return model, load_snapshot(model, directory, found.scope)


# ---------------------------------------------------------------------------------------------- saving


def _export(model, scope: str) -> Dict[str, np.ndarray]:
    if isinstance(model, LSTMStudentForSequenceClassification):
        return _lstm_export(model)
    params = {k: v.detach().cpu().numpy() for k, v in model.named_parameters()}
    return {var.name: (params[key].T if transposed else params[key].reshape(var.shape))
            for var, key, transposed in _bert_table(model, scope)}


def _export_predecessor(predecessor, model: BertForSequenceClassification, scope: str) -> Dict[str, np.ndarray]:
    """BERT-of-Theseus's predecessor layers as the teacher's ``bert-encoder-layer_<i>-...`` variables."""
    if scope != "theseus":
        raise ValueError(f"predecessor layers are written with scope='theseus' only (they sit beside the successor's "
                         f"bert-encoder-student-layer_<i>), got scope={scope!r}")
    if not isinstance(predecessor, nn.ModuleList) or not len(predecessor) or \
            not all(isinstance(layer, BertLayer) for layer in predecessor):
        raise TypeError(f"predecessor must be a non-empty nn.ModuleList of BertLayer (TheseusModel.predecessor), got "
                        f"{type(predecessor).__name__}")
    hidden, inter = predecessor[0].intermediate.dense.in_features, predecessor[0].intermediate.dense.out_features
    if hidden != model.hidden_size:
        raise ValueError(f"predecessor layers have hidden size {hidden} but the model has {model.hidden_size}; they "
                         f"share the embeddings, so pass the predecessor of this model")
    params = {k: v.detach().cpu().numpy() for k, v in predecessor.named_parameters()}
    return {var.name: (params[key].T if transposed else params[key].reshape(var.shape))
            for var, key, transposed in _layer_rows(len(predecessor), "bert-encoder-layer_", "", hidden, inter)}


def save_snapshot(model: nn.Module, directory, scope: Optional[str] = None, predecessor: Optional[nn.Module] = None,
                  extra: Optional[Dict[str, np.ndarray]] = None) -> str:
    """Write ``model`` as an original snapshot directory (see the module doc), atomically.

    ``scope`` (BERT): ``"teacher"`` (``bert-...``), ``"student"`` (``student-bert-...``, the default for
    a model with ``fit_dense``), ``"theseus"``; the LSTM is always ``student-...``. ``predecessor``
    (``scope="theseus"`` only): BERT-of-Theseus's predecessor layers (an ``nn.ModuleList`` of ``BertLayer``),
    written beside ``model`` (the successor) as ``bert-encoder-layer_<i>-...``: the whole Theseus model, as
    the original's ``run_classifier.py`` saves it. ``extra``: more variables ``{name: float32 array}`` written
beside the model's (e.g. a masked-LM head, :meth:`~.mlm.BertForMaskedLM.snapshot_head_arrays`); a name the
model already writes is a ``ValueError``. Each variable gets
    ``out`` (float32, C order) and a ``meta`` file; ``snapshot_done`` marks the directory complete, so
    OneFlow's ``flow.load`` and the original's loader read it. No optimizer slots are written (as after
    the original's ``--serve_for_online``). The directory is replaced as a whole
    (``_io.replace_directory``). Returns its absolute path.

    >>> import tempfile
    >>> model = BertForSequenceClassification(vocab_size=30, hidden_size=8, num_hidden_layers=1,
    ...                                       num_attention_heads=2, intermediate_size=16, max_position_embeddings=10)
    >>> path = save_snapshot(model, os.path.join(tempfile.mkdtemp(), "snapshot_best"))
    >>> sorted(os.listdir(path))[:2]
    ['bert-embeddings-LayerNorm-beta', 'bert-embeddings-LayerNorm-gamma']
    >>> read_snapshot_config(path, num_attention_heads=2).config["intermediate_size"]
    16
    >>> report = load_snapshot(model, path)
    >>> len(report.loaded), report.missing, report.scope
    (25, [], 'teacher')
    """
    kind = _check_model(model)
    directory = _check_directory(directory)
    if scope is None:
        scope = "student" if kind == "lstm" or model.fit_dense is not None else "teacher"
    if scope == "auto" or _check_scope(scope) == "auto":
        raise ValueError("save_snapshot needs a definite scope: 'teacher', 'student' or 'theseus' (or None)")
    if kind == "lstm" and scope != "student":
        raise ValueError(f"scope {scope!r} is for BERT; the original's LSTM student is always student-...")
    arrays = _export(model, scope)
    if predecessor is not None:
        arrays.update(_export_predecessor(predecessor, model, scope))
    if extra:
        clash = sorted(set(extra) & set(arrays))
        if clash:
            raise ValueError(f"extra variables {clash} are already written from the model; give other names")
        arrays.update({str(name): np.asarray(value, dtype=np.float32) for name, value in extra.items()})
    path = replace_directory(directory, lambda staging: _write_snapshot_files(staging, arrays))
    logger.info("wrote %d variables to %s (scope %s)", len(arrays), path, scope)
    return path
