"""One intermediate match of a :class:`~knowledge_distill_util.engine.Distiller`: a module path or a layer index
on each side, a registered loss, an optional projection.

A layer is a **string** (a module path: its output, captured by :class:`~.taps.FeatureTaps`;
``"feature": "output"``), an **int** (an index into the adaptor's list ``features[feature]``, ``feature`` one of
``hidden``, ``attention``, ``value``, ``query``, ``key``), or a pair of them for ``fsp_loss``/``mmd_loss``.
The loss, its ``options``, ``weight`` and ``proj`` are checked and applied by an
:class:`~knowledge_distill_util.nn.IntermediateMatches` of this one entry (its projection is a parameter).

    >>> m = Match(0, {"layer_S": "body.1", "layer_T": "body.3", "feature": "output", "loss": "hidden_mse"})
    >>> m.name, m.student_paths, m.teacher_paths
    ('match0_hidden_mse', ['body.1'], ['body.3'])
    >>> Match(1, {"layer_S": "body.1", "layer_T": 2, "feature": "output", "loss": "hidden_mse"})
    Traceback (most recent call last):
    ...
    ValueError: intermediate_matches[1]['layer_T'] = 2 indexes the adaptor's feature lists: set "feature" to one of 'hidden', 'attention', 'value', 'query', 'key', or give a module path (a string)
"""
import math
from numbers import Real
from typing import Any, Dict, List, Mapping

import oneflow as flow
import oneflow.nn as nn

from ..nn import IntermediateMatches
from .adaptors import LIST_FEATURES, require

__all__ = ["Match", "SAME_SHAPE_LOSSES"]

#: Losses whose student and teacher tensors must have the same shape (after the projection).
SAME_SHAPE_LOSSES = ("hidden_mse", "hidden_cosine", "pkd_loss", "attention_mse", "attention_kl")
_FEATURES = LIST_FEATURES + ("output",)


def _where(index: int, key: str = "") -> str:
    return f"intermediate_matches[{index}]" + (f"[{key!r}]" if key else "")


def _check_layer(index: int, key: str, layer, feature: str):
    items = layer if isinstance(layer, (list, tuple)) else [layer]
    if isinstance(layer, (list, tuple)) and len(layer) != 2:
        raise ValueError(f"{_where(index, key)} must be a module path, a layer index or a pair of them, got {layer!r}")
    for item in items:
        if isinstance(item, str):
            if not item:
                raise ValueError(f"{_where(index, key)} is an empty module path; give a key of "
                                 f"dict(model.named_modules())")
        elif isinstance(item, bool) or not isinstance(item, int) or item < 0:
            raise TypeError(f"{_where(index, key)} must be a module path (str) or a layer index (int >= 0), got "
                            f"{item!r}")
        elif feature == "output":
            raise ValueError(f"{_where(index, key)} = {item} indexes the adaptor's feature lists: set \"feature\" to "
                             f"one of {', '.join(map(repr, LIST_FEATURES))}, or give a module path (a string)")
    return list(items), isinstance(layer, (list, tuple))


class Match(nn.Module):
    """Entry ``index`` of ``DistillationConfig.intermediate_matches`` (see the module doc)."""

    def __init__(self, index: int, entry: Mapping[str, Any]):
        super().__init__()
        if not isinstance(entry, Mapping):
            raise TypeError(f"{_where(index)} must be a dict with keys layer_S, layer_T, feature, loss, got "
                            f"{type(entry).__name__}")
        self.index = index
        self.feature = entry.get("feature")
        if self.feature not in _FEATURES:
            raise ValueError(f"{_where(index, 'feature')} must be one of {', '.join(map(repr, _FEATURES))} "
                             f"(\"output\" for module paths), got {self.feature!r}")
        self.layers_s, pair_s = _check_layer(index, "layer_S", entry.get("layer_S"), self.feature)
        self.layers_t, pair_t = _check_layer(index, "layer_T", entry.get("layer_T"), self.feature)
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, Real) or not math.isfinite(weight):
            raise ValueError(f"{_where(index, 'weight')} must be a finite number, got {weight!r}")
        self.weight = float(weight)
        converted = dict(entry, feature="hidden", weight=1.0, layer_S=[0, 1] if pair_s else 0,
                         layer_T=[0, 1] if pair_t else 0)
        try:
            self.inner = IntermediateMatches([converted])
        except (TypeError, ValueError) as error:
            raise type(error)(str(error).replace("matches[0]", _where(index))) from None
        self.loss_name = entry["loss"]
        self.has_proj = entry.get("proj") is not None
        self.name = f"match{index}_{self.loss_name}"

    @property
    def student_paths(self) -> List[str]:
        return [x for x in self.layers_s if isinstance(x, str)]

    @property
    def teacher_paths(self) -> List[str]:
        return [x for x in self.layers_t if isinstance(x, str)]

    def _tensors(self, layers, features: Dict, taps, side: str) -> List[flow.Tensor]:
        tensors = []
        for layer in layers:
            if isinstance(layer, str):
                tensors.append(taps.get(layer))
                continue
            layers_list = require(features, self.feature, side, f"{_where(self.index)} ({self.loss_name})")
            if not 0 <= layer < len(layers_list):
                key = "layer_S" if side == "student" else "layer_T"
                raise ValueError(f"{_where(self.index, key)} = {layer} is out of range: the {side}'s "
                                 f"{self.feature!r} has {len(layers_list)} layers")
            tensors.append(layers_list[layer])
        return tensors

    def _check_shapes(self, student: List[flow.Tensor], teacher: List[flow.Tensor]) -> None:
        if self.loss_name not in SAME_SHAPE_LOSSES or self.has_proj:
            return
        s, t = tuple(student[0].shape), tuple(teacher[0].shape)
        if s != t:
            raise ValueError(f"{_where(self.index)} ({self.loss_name}): the student's {self.layers_s[0]!r} has shape "
                             f"{s} but the teacher's {self.layers_t[0]!r} has shape {t}; add \"proj\": [\"linear\", "
                             f"{s[-1]}, {t[-1]}] to map the student's width to the teacher's")

    def teacher_tensors(self, teacher_features: Dict, taps_t) -> List[flow.Tensor]:
        """The teacher's tensors this match reads (one, or two for a pair of layers): what a teacher-output
        cache stores (:mod:`~.teacher_cache`)."""
        return self._tensors(self.layers_t, teacher_features, taps_t, "teacher")

    def student_tensors(self, student_features: Dict, taps_s) -> List[flow.Tensor]:
        """The student's tensors this match reads."""
        return self._tensors(self.layers_s, student_features, taps_s, "student")

    def forward(self, student: List[flow.Tensor], teacher: List[flow.Tensor], mask=None) -> flow.Tensor:
        """The unweighted loss of this match (``weight`` is applied by the caller) of the tensors of
        :meth:`student_tensors` and :meth:`teacher_tensors`."""
        self._check_shapes(student, teacher)
        try:
            return self.inner({"hidden": student}, {"hidden": teacher}, mask=mask)
        except (TypeError, ValueError) as error:
            text = str(error)  # the inner module's own entry is matches[0]
            text = (_where(self.index) + text[len("matches[0]"):] if text.startswith("matches[0]")
                    else f"{_where(self.index)} ({self.loss_name}): {text}")
            raise type(error)(text) from None
