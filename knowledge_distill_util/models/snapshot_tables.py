"""The name tables of :mod:`.snapshot`: which original variable (name, shape) holds which parameter of this
package's BERT (:func:`_bert_table`, :func:`_layer_rows`) and BiLSTM (:func:`_lstm_vars`, :func:`_lstm_export`,
:func:`_lstm_import`); the mapping itself is listed in :mod:`.snapshot`'s docstring.
"""
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
import oneflow as flow
import oneflow.nn as nn

from .bert import BertForSequenceClassification
from .lstm import LSTMStudentForSequenceClassification

_GATES = ("input", "forget", "cell", "output")  # this package's i, f, g, o


@dataclass(frozen=True)
class _Var:
    name: str  # the snapshot's variable name
    shape: Tuple[int, ...]  # the original's shape
    required: bool



def _bert_names(scope: str) -> Tuple[str, str]:
    """(prefix of every name, the layer folder's stem) of a BERT ``scope``."""
    return {"teacher": ("", "bert-encoder-layer_"), "student": ("student-", "student-bert-encoder-layer_"),
            "theseus": ("", "bert-encoder-student-layer_")}[scope]


def _bert_table(model: BertForSequenceClassification, scope: str) -> List[Tuple[_Var, str, bool]]:
    """``(variable, parameter key, transposed)`` for every parameter of ``model``."""
    prefix, layer = _bert_names(scope)
    emb = model.embeddings
    hidden = model.hidden_size
    vocab, positions = emb.word_embeddings.num_embeddings, emb.position_embeddings.num_embeddings
    types = emb.token_type_embeddings.num_embeddings
    inter = model.encoder.layer[0].intermediate.dense.out_features if len(model.encoder.layer) else hidden
    rows = [
        (_Var(f"{prefix}bert-embeddings-word_embeddings", (vocab, hidden), True),
         "embeddings.word_embeddings.weight", False),
        (_Var(f"{prefix}bert-embeddings-position_embeddings", (1, positions, hidden), True),
         "embeddings.position_embeddings.weight", False),
        (_Var(f"{prefix}bert-embeddings-token_type_embeddings", (types, hidden), True),
         "embeddings.token_type_embeddings.weight", False),
        (_Var(f"{prefix}bert-embeddings-LayerNorm-gamma", (hidden,), True), "embeddings.LayerNorm.weight", False),
        (_Var(f"{prefix}bert-embeddings-LayerNorm-beta", (hidden,), True), "embeddings.LayerNorm.bias", False),
    ]
    rows += _layer_rows(len(model.encoder.layer), layer, "encoder.layer.", hidden, inter)
    labels = model.classifier.out_features
    rows += [
        (_Var(f"{prefix}bert-pooler-dense-weight", (hidden, hidden), True), "pooler.dense.weight", True),
        (_Var(f"{prefix}bert-pooler-dense-bias", (hidden,), True), "pooler.dense.bias", False),
        (_Var(f"{prefix}classification-output_weights", (labels, hidden), False), "classifier.weight", False),
        (_Var(f"{prefix}classification-output_bias", (labels,), False), "classifier.bias", False),
    ]
    if model.fit_dense is not None:
        fit = model.fit_dense.out_features
        rows += [(_Var(f"{prefix}fit_dense-weight", (fit, hidden), False), "fit_dense.weight", False),
                 (_Var(f"{prefix}fit_dense-bias", (fit,), False), "fit_dense.bias", False)]
    return rows


def _layer_rows(count: int, layer: str, key_prefix: str, hidden: int, inter: int) -> List[Tuple[_Var, str, bool]]:
    """The rows of ``count`` encoder layers named ``<layer><i>-...``, parameter keys ``<key_prefix><i>.``."""
    dense = [("attention-self-query", "attention.self.query", hidden, hidden),
             ("attention-self-key", "attention.self.key", hidden, hidden),
             ("attention-self-value", "attention.self.value", hidden, hidden),
             ("attention-output-dense", "attention.output.dense", hidden, hidden),
             ("intermediate-dense", "intermediate.dense", hidden, inter),
             ("output-dense", "output.dense", inter, hidden)]
    rows = []
    for i in range(count):
        stem, key = f"{layer}{i}-", f"{key_prefix}{i}."
        for original, ours, fan_in, fan_out in dense:
            rows.append((_Var(f"{stem}{original}-weight", (fan_in, fan_out), True), f"{key}{ours}.weight", True))
            rows.append((_Var(f"{stem}{original}-bias", (fan_out,), True), f"{key}{ours}.bias", False))
        for original, ours in (("attention-output-LayerNorm", "attention.output.LayerNorm"),
                               ("output-LayerNorm", "output.LayerNorm")):
            rows.append((_Var(f"{stem}{original}-gamma", (hidden,), True), f"{key}{ours}.weight", False))
            rows.append((_Var(f"{stem}{original}-beta", (hidden,), True), f"{key}{ours}.bias", False))
    return rows


def _lstm_stem(layer: int, direction: str) -> str:
    return f"student-lstm-layer{layer}-{direction}-"


def _lstm_vars(model: LSTMStudentForSequenceClassification) -> List[_Var]:
    cfg = model.config
    hidden, directions = cfg["hidden_size"], 2 if model.bidirectional else 1
    out = [_Var("student-embeddings-word_embeddings", tuple(model.embedding.weight.shape), True)]
    for layer, lstm in enumerate(model.forward_lstm):
        fan_in = lstm.weight_ih_l0.shape[1]
        for direction in ("forward", "backward")[:directions]:
            stem = _lstm_stem(layer, direction)
            for gate in _GATES:
                out += [_Var(f"{stem}{gate}-weight", (fan_in, hidden), True),
                        _Var(f"{stem}{gate}-h-weight", (hidden, hidden), True),
                        _Var(f"{stem}{gate}-bias", (hidden,), True)]
    out += [_Var("student-lstm-FC1-weight", tuple(model.dense.weight.shape), True),
            _Var("student-lstm-FC1-bias", tuple(model.dense.bias.shape), True),
            _Var("student-lstm-FC2-weight", tuple(model.classifier.weight.shape), False),
            _Var("student-lstm-FC2-bias", tuple(model.classifier.bias.shape), False)]
    return out


def _lstm_modules(model) -> List[Tuple[int, str, nn.LSTM]]:
    pairs = [(i, "forward", m) for i, m in enumerate(model.forward_lstm)]
    if model.backward_lstm is not None:
        pairs += [(i, "backward", m) for i, m in enumerate(model.backward_lstm)]
    return pairs


def _lstm_export(model) -> Dict[str, np.ndarray]:
    out = {"student-embeddings-word_embeddings": model.embedding.weight.detach().cpu().numpy()}
    for layer, direction, lstm in _lstm_modules(model):
        stem, hidden = _lstm_stem(layer, direction), lstm.hidden_size
        w_ih, w_hh = lstm.weight_ih_l0.detach().cpu().numpy(), lstm.weight_hh_l0.detach().cpu().numpy()
        bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().cpu().numpy()
        for k, gate in enumerate(_GATES):
            rows = slice(k * hidden, (k + 1) * hidden)
            out[f"{stem}{gate}-weight"] = w_ih[rows].T
            out[f"{stem}{gate}-h-weight"] = w_hh[rows].T
            out[f"{stem}{gate}-bias"] = bias[rows]
    out["student-lstm-FC1-weight"] = model.dense.weight.detach().cpu().numpy()
    out["student-lstm-FC1-bias"] = model.dense.bias.detach().cpu().numpy()
    out["student-lstm-FC2-weight"] = model.classifier.weight.detach().cpu().numpy()
    out["student-lstm-FC2-bias"] = model.classifier.bias.detach().cpu().numpy()
    return out


def _lstm_import(model, arrays: Dict[str, np.ndarray]) -> None:
    def put(parameter, value):
        parameter.copy_(flow.tensor(np.ascontiguousarray(value), dtype=parameter.dtype).to(parameter.device))

    if "student-embeddings-word_embeddings" in arrays:
        put(model.embedding.weight, arrays["student-embeddings-word_embeddings"])
    for layer, direction, lstm in _lstm_modules(model):
        stem = _lstm_stem(layer, direction)
        if f"{stem}input-weight" not in arrays:
            continue
        put(lstm.weight_ih_l0, np.concatenate([arrays[f"{stem}{g}-weight"].T for g in _GATES]))
        put(lstm.weight_hh_l0, np.concatenate([arrays[f"{stem}{g}-h-weight"].T for g in _GATES]))
        put(lstm.bias_ih_l0, np.concatenate([arrays[f"{stem}{g}-bias"] for g in _GATES]))
        put(lstm.bias_hh_l0, np.zeros(tuple(lstm.bias_hh_l0.shape), dtype=np.float32))
    for name, parameter in (("student-lstm-FC1-weight", model.dense.weight),
                            ("student-lstm-FC1-bias", model.dense.bias),
                            ("student-lstm-FC2-weight", model.classifier.weight),
                            ("student-lstm-FC2-bias", model.classifier.bias)):
        if name in arrays:
            put(parameter, arrays[name])

