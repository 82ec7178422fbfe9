"""One intermediate match of a :class:`~knowledge_distill_util.engine.Distiller`: a module path or a layer index
on each side, a registered loss, an optional projection.

A layer is a **string** (a module path: its output, captured by :class:`~.taps.FeatureTaps`;
``"feature": "output"``), an **int** (an index into the adaptor's list ``features[feature]``, negative from the
end as in Python, ``feature`` one of
``hidden``, ``attention``, ``value``, ``query``, ``key``), or a pair of them for ``fsp_loss``/``mmd_loss``.
The loss, its ``options``, ``weight`` and ``proj`` are checked and applied by an
:class:`~knowledge_distill_util.nn.IntermediateMatches` of this one entry (its projection is a parameter).

``"all"`` on both sides hands a *layer-list loss* (:mod:`.layer_lists`: the original toolkit's
``layer_distill``/``att_distill`` formulas and BERT-PKD's patience term, each pairing the layers itself) the whole
list ``features[feature]`` of each side, e.g. ``{"layer_S": "all", "layer_T": "all", "feature": "hidden",
"loss": "layer_distill_loss"}``; its ``options`` are the function's (``strategy``, ``layer_map``, ``pairs``).

    >>> m = Match(0, {"layer_S": "body.1", "layer_T": "body.3", "feature": "output", "loss": "hidden_mse"})
    >>> m.name, m.student_paths, m.teacher_paths
    ('match0_hidden_mse', ['body.1'], ['body.3'])
    >>> Match(1, {"layer_S": "all", "layer_T": "all", "feature": "hidden", "loss": "layer_distill_loss"}).name
    'match1_layer_distill_loss'
    >>> Match(1, {"layer_S": "body.1", "layer_T": 2, "feature": "output", "loss": "hidden_mse"})
    Traceback (most recent call last):
    ...
    ValueError: intermediate_matches[1]['layer_T'] = 2 indexes the adaptor's feature lists: set "feature" to one of 'hidden', 'attention', 'value', 'query', 'key', or give a module path (a string)
"""
import math
from numbers import Real
from typing import Any, Dict, List, Mapping, Optional

import oneflow as flow
import oneflow.nn as nn

from ..nn import IntermediateMatches
from .adaptors import LIST_FEATURES, require
from .layer_lists import LIST_LOSSES, LayerList, option_names

__all__ = ["Match", "SAME_SHAPE_LOSSES", "ALL_LAYERS"]

#: The ``layer_S``/``layer_T`` of a layer-list loss: every layer of the feature.
ALL_LAYERS = "all"

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
        elif isinstance(item, bool) or not isinstance(item, int):
            raise TypeError(f"{_where(index, key)} must be a module path (str) or a layer index (int; -1 the last), "
                            f"got {item!r}")
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
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, Real) or not math.isfinite(weight):
            raise ValueError(f"{_where(index, 'weight')} must be a finite number, got {weight!r}")
        self.weight = float(weight)
        self.list_loss = self._list_loss(index, entry)
        if self.list_loss is not None:
            return
        self.layers_s, pair_s = _check_layer(index, "layer_S", entry.get("layer_S"), self.feature)
        self.layers_t, pair_t = _check_layer(index, "layer_T", entry.get("layer_T"), self.feature)
        converted = dict(entry, feature="hidden", weight=1.0, layer_S=[0, 1] if pair_s else 0,
                         layer_T=[0, 1] if pair_t else 0)
        try:
            self.inner = IntermediateMatches([converted])
        except (TypeError, ValueError) as error:
            raise type(error)(str(error).replace("matches[0]", _where(index))) from None
        self.loss_name = entry["loss"]
        self.has_proj = entry.get("proj") is not None
        self.name = f"match{index}_{self.loss_name}"

    def _list_loss(self, index: int, entry: Mapping[str, Any]) -> Optional[LayerList]:
        """The :class:`~.layer_lists.LayerList` of an ``"all"`` entry (its layers and name set), else None."""
        sides = [entry.get("layer_S") == ALL_LAYERS, entry.get("layer_T") == ALL_LAYERS]
        loss = entry.get("loss")
        if not any(sides) and loss not in LIST_LOSSES:
            return None
        if not all(sides) or loss not in LIST_LOSSES:
            raise ValueError(f"{_where(index)}: \"layer_S\": \"all\" and \"layer_T\": \"all\" go together with a "
                             f"layer-list loss ({', '.join(LIST_LOSSES)}), got layer_S={entry.get('layer_S')!r}, "
                             f"layer_T={entry.get('layer_T')!r}, loss={loss!r}")
        if self.feature not in LIST_FEATURES:
            raise ValueError(f"{_where(index, 'feature')} must be one of {', '.join(map(repr, LIST_FEATURES))} for "
                             f"{loss}, got {self.feature!r}")
        unknown = sorted(set(entry) - {"layer_S", "layer_T", "feature", "loss", "weight", "options"})
        if unknown:
            raise ValueError(f"{_where(index)} has key(s) {', '.join(map(repr, unknown))} that {loss} does not take "
                             f"(no projection: its layers must have the teacher's shapes)")
        options, known = entry.get("options", {}), option_names(loss)
        if not isinstance(options, Mapping) or set(options) - set(known):
            raise ValueError(f"{_where(index, 'options')} must be a dict with keys among {', '.join(known)}, got "
                             f"{options!r}")
        self.layers_s = self.layers_t = [ALL_LAYERS]
        self.loss_name, self.has_proj, self.name = loss, False, f"match{index}_{loss}"
        return LayerList(loss, options)

    @property
    def student_paths(self) -> List[str]:
        return [] if self.list_loss is not None else [x for x in self.layers_s if isinstance(x, str)]

    @property
    def teacher_paths(self) -> List[str]:
        return [] if self.list_loss is not None else [x for x in self.layers_t if isinstance(x, str)]

    def _tensors(self, layers, features: Dict, taps, side: str) -> List[flow.Tensor]:
        if self.list_loss is not None:
            return list(require(features, self.feature, side, f"{_where(self.index)} ({self.loss_name})"))
        tensors = []
        for layer in layers:
            if isinstance(layer, str):
                tensors.append(taps.get(layer))
                continue
            layers_list = require(features, self.feature, side, f"{_where(self.index)} ({self.loss_name})")
            if not -len(layers_list) <= layer < len(layers_list):
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
        """The teacher's tensors this match reads (one, two for a pair of layers; for a layer-list loss the layers it
        pairs, :meth:`.LayerList.teacher`): what a teacher-output cache stores (:mod:`~.teacher_cache`)."""
        tensors = self._tensors(self.layers_t, teacher_features, taps_t, "teacher")
        return tensors if self.list_loss is None else self._listed(lambda: self.list_loss.teacher(tensors))

    def student_tensors(self, student_features: Dict, taps_s) -> List[flow.Tensor]:
        """The student's tensors this match reads."""
        tensors = self._tensors(self.layers_s, student_features, taps_s, "student")
        if self.list_loss is not None:
            self.list_loss.students = len(tensors)
        return tensors

    def _listed(self, compute):
        """``compute()``, its ``TypeError``/``ValueError`` naming this match."""
        try:
            return compute()
        except (TypeError, ValueError) as error:
            raise type(error)(f"{_where(self.index)} ({self.loss_name}): {error}") from None

    def forward(self, student: List[flow.Tensor], teacher: List[flow.Tensor], mask=None) -> flow.Tensor:
        """The unweighted loss of this match (``weight`` is applied by the caller) of the tensors of
        :meth:`student_tensors` and :meth:`teacher_tensors`."""
        if self.list_loss is not None:
            return self._listed(lambda: self.list_loss(student, teacher))
        self._check_shapes(student, teacher)
        try:
            return self.inner({"hidden": student}, {"hidden": teacher}, mask=mask)
        except (TypeError, ValueError) as error:
            text = str(error)  # the inner module's own entry is matches[0]
            text = (_where(self.index) + text[len("matches[0]"):] if text.startswith("matches[0]")
                    else f"{_where(self.index)} ({self.loss_name}): {text}")
            raise type(error)(text) from None
