"""The :class:`Projection` layer and :class:`IntermediateMatches` of :mod:`knowledge_distill_util.nn`
(TextBrewer's ``intermediate_matches``: validated entries, each a registered loss on a feature pair)."""
import inspect
import math
from numbers import Real
from typing import Any, Dict, List, Mapping, Optional, Sequence

import oneflow as flow
import oneflow.nn.functional as F

from .._checks import check_choice, check_int
from ..registry import available_losses, get_loss, keyword_options


#: The activations of :class:`Projection` (``None`` for none).
ACTIVATIONS = ("relu", "tanh", "gelu")

#: The feature names an :class:`IntermediateMatches` entry may select.
FEATURES = ("hidden", "attention", "value", "query", "key")


class Projection(flow.nn.Module):
    """A linear map (then an optional activation) from the student's width to the teacher's.

    Args:
        in_features: the student's width.
        out_features: the teacher's width.
        activation: None, ``"relu"``, ``"tanh"`` or ``"gelu"``.

    Shape: ``[..., in_features] -> [..., out_features]``.

    >>> import oneflow as flow
    >>> proj = Projection(312, 768, activation="gelu")
    >>> proj
    Projection(in_features=312, out_features=768, activation='gelu')
    >>> tuple(proj(flow.zeros(2, 5, 312)).shape)
    (2, 5, 768)
    """

    def __init__(self, in_features: int, out_features: int, activation: Optional[str] = None):
        super().__init__()
        check_int("in_features", in_features)
        check_int("out_features", out_features)
        if activation is not None:
            check_choice("activation", activation, ACTIVATIONS)
        self.activation = activation
        self.linear = flow.nn.Linear(in_features, out_features)

    def forward(self, x: flow.Tensor) -> flow.Tensor:
        y = self.linear(x)
        if self.activation == "relu":
            return F.relu(y)
        if self.activation == "tanh":
            return flow.tanh(y)
        if self.activation == "gelu":
            return F.gelu(y)
        return y

    def __repr__(self) -> str:
        return (f"Projection(in_features={self.linear.in_features}, out_features={self.linear.out_features}, "
                f"activation={self.activation!r})")


_REQUIRED_KEYS = ("layer_S", "layer_T", "feature", "loss")
_OPTIONAL_KEYS = ("weight", "proj", "options")
_PAIR_LOSSES = ("fsp_loss", "mmd_loss")


def _entry_error(index: int, key: str, message: str) -> ValueError:
    return ValueError(f"matches[{index}][{key!r}] {message}")


def _check_projected(index: int, proj: "Projection", student: flow.Tensor) -> None:
    """The student's tensor has the projection's input width; ``ValueError`` suggesting the ``proj`` otherwise."""
    width, out = proj.linear.in_features, proj.linear.out_features
    if student.ndim == 0 or student.shape[-1] != width:
        have = student.shape[-1] if student.ndim else "no"
        fix = ("drop the proj (it has the projection's output width already)" if have == out
               else f"use [\"linear\", {have}, {out}]")
        raise _entry_error(index, "proj", f"maps {width} features to {out}, but the student's tensor has {have} "
                                          f"(shape {tuple(student.shape)}); {fix}")


def _check_layer(index: int, key: str, value, pair: bool):
    def valid(x):
        return isinstance(x, int) and not isinstance(x, bool) and x >= 0
    if pair:
        if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(valid(x) for x in value):
            raise _entry_error(index, key, f"must be a pair [i, j] of layer indices >= 0 for an FSP/MMD loss, "
                                           f"got {value!r}")
        return tuple(value)
    if not valid(value):
        raise _entry_error(index, key, f"must be a layer index (an integer >= 0), got {value!r}")
    return value


def _required_options(loss) -> List[str]:
    return [p.name for p in inspect.signature(loss).parameters.values()
            if p.kind == inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty]


def _takes_mask(loss) -> bool:
    return "mask" in inspect.signature(loss).parameters


class _Match:
    """One validated entry."""

    def __init__(self, index: int, entry: Mapping[str, Any]):
        if not isinstance(entry, Mapping):
            raise TypeError(f"matches[{index}] must be a dict with keys {', '.join(_REQUIRED_KEYS)}, "
                            f"got {type(entry).__name__}")
        unknown = sorted(set(entry) - set(_REQUIRED_KEYS) - set(_OPTIONAL_KEYS))
        if unknown:
            raise ValueError(f"matches[{index}] has unknown key(s) {', '.join(map(repr, unknown))}; valid keys: "
                             f"{', '.join(_REQUIRED_KEYS + _OPTIONAL_KEYS)}")
        missing = [k for k in _REQUIRED_KEYS if k not in entry]
        if missing:
            raise ValueError(f"matches[{index}] lacks the key(s) {', '.join(map(repr, missing))}; every entry needs "
                             f"{', '.join(_REQUIRED_KEYS)}")
        self.loss_name = check_choice(f"matches[{index}]['loss']", entry["loss"], available_losses())
        self.loss = get_loss(self.loss_name)
        self.feature = check_choice(f"matches[{index}]['feature']", entry["feature"], FEATURES)
        pair = self.loss_name in _PAIR_LOSSES
        self.layer_s = _check_layer(index, "layer_S", entry["layer_S"], pair)
        self.layer_t = _check_layer(index, "layer_T", entry["layer_T"], pair)
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, Real) or not math.isfinite(weight):
            raise _entry_error(index, "weight", f"must be a finite number, got {weight!r}")
        self.weight = float(weight)
        self.options = self._options(index, entry.get("options", {}))
        self.projection = self._projection(index, entry.get("proj"))

    def _options(self, index: int, options) -> Dict[str, Any]:
        if not isinstance(options, Mapping):
            raise _entry_error(index, "options", f"must be a dict of keyword arguments of {self.loss_name}, "
                                                 f"got {type(options).__name__}")
        known = keyword_options(self.loss, exclude=("mask",))
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise _entry_error(index, "options", f"has unknown option(s) {', '.join(map(repr, unknown))} for "
                                                 f"{self.loss_name}; valid options: {', '.join(known) or 'none'}")
        missing = [k for k in _required_options(self.loss) if k not in options]
        if missing:
            raise _entry_error(index, "options", f"must give {', '.join(missing)} for {self.loss_name}, e.g. "
                                                 f"\"options\": {{\"{missing[0]}\": 12}}")
        return dict(options)

    @staticmethod
    def _projection(index: int, proj) -> Optional[Projection]:
        if proj is None:
            return None
        if not isinstance(proj, (list, tuple)) or len(proj) not in (3, 4):
            raise _entry_error(index, "proj", f"must be [\"linear\", in_features, out_features] or with an "
                                              f"activation as 4th item, got {proj!r}")
        check_choice(f"matches[{index}]['proj'][0]", proj[0], ("linear",))
        try:
            return Projection(proj[1], proj[2], proj[3] if len(proj) == 4 else None)
        except (TypeError, ValueError) as error:
            raise _entry_error(index, "proj", f"is invalid: {error}") from None


class IntermediateMatches(flow.nn.Module):
    """Weighted sum of intermediate-layer losses built from plain dicts (TextBrewer-style recipes).

    Each entry: ``{"layer_S": 2, "layer_T": 6, "feature": "hidden", "loss": "hidden_mse", "weight": 1.0,
    "proj": ["linear", 312, 768]}``; ``weight`` (default 1.0), ``proj`` (a :class:`Projection` of the
    student's feature, optionally ``["linear", in, out, "gelu"]``) and ``options`` (extra keyword
    arguments of the loss, e.g. ``{"num_relation_heads": 12}`` for ``relation_kl``) are optional.
    ``fsp_loss``/``mmd_loss`` take pairs of layers, ``"layer_S": [0, 2]``. The projections are
    parameters of this Module (give them to the optimizer).

    ``forward(student_features, teacher_features, mask=None)``: mappings from a feature name
    (``"hidden"``, ``"attention"``, ``"value"``, ``"query"``, ``"key"``) to the per-layer lists of
    tensors; ``mask`` ``[B, L]`` goes to every loss that takes one. Returns the weighted sum.

    >>> import oneflow as flow
    >>> matches = IntermediateMatches([
    ...     {"layer_S": 1, "layer_T": 2, "feature": "hidden", "loss": "hidden_mse", "weight": 2.0},
    ...     {"layer_S": 0, "layer_T": 0, "feature": "hidden", "loss": "hidden_cosine", "proj": ["linear", 4, 6]},
    ... ])
    >>> student = {"hidden": [flow.zeros(1, 3, 4), flow.ones(1, 3, 6)]}
    >>> teacher = {"hidden": [flow.ones(1, 3, 6)] * 3}
    >>> len(list(matches.parameters()))  # the projection's weight and bias
    2
    >>> loss = matches(student, teacher)  # 2.0 * 0.0 + cosine loss of the projected zeros
    >>> loss.ndim, bool(loss >= 0)
    (0, True)
    """

    def __init__(self, matches: Sequence[Mapping[str, Any]]):
        super().__init__()
        if isinstance(matches, (Mapping, str)) or not isinstance(matches, Sequence):
            raise TypeError(f"matches must be a list of dicts (one per layer match), got {type(matches).__name__}")
        if len(matches) == 0:
            raise ValueError("matches is empty; give at least one {\"layer_S\", \"layer_T\", \"feature\", \"loss\"} dict")
        self._matches = [_Match(i, entry) for i, entry in enumerate(matches)]
        self.projections = flow.nn.ModuleDict(
            {str(i): m.projection for i, m in enumerate(self._matches) if m.projection is not None}
        )

    def _feature(self, features, side: str, index: int, match: _Match, layer: int) -> flow.Tensor:
        if not isinstance(features, Mapping) or match.feature not in features:
            have = ", ".join(map(repr, features)) if isinstance(features, Mapping) else type(features).__name__
            raise ValueError(f"matches[{index}] needs {side}_features[{match.feature!r}], but {side}_features has "
                             f"{have}")
        layers = features[match.feature]
        if not 0 <= layer < len(layers):
            key = "layer_S" if side == "student" else "layer_T"
            raise ValueError(f"matches[{index}][{key!r}] = {layer} is out of range: {side}_features"
                             f"[{match.feature!r}] has {len(layers)} layers")
        return layers[layer]

    def _side(self, features, side: str, index: int, match: _Match, layer):
        if isinstance(layer, tuple):
            return tuple(self._feature(features, side, index, match, x) for x in layer)
        return self._feature(features, side, index, match, layer)

    def forward(self, student_features: Mapping[str, Sequence[flow.Tensor]],
                teacher_features: Mapping[str, Sequence[flow.Tensor]],
                mask: Optional[flow.Tensor] = None) -> flow.Tensor:
        total = None
        for i, match in enumerate(self._matches):
            student = self._side(student_features, "student", i, match, match.layer_s)
            teacher = self._side(teacher_features, "teacher", i, match, match.layer_t)
            if match.projection is not None:
                proj = self.projections[str(i)]
                for x in student if isinstance(student, tuple) else (student,):
                    _check_projected(i, proj, x)
                student = tuple(proj(x) for x in student) if isinstance(student, tuple) else proj(student)
            kwargs = dict(match.options)
            if mask is not None and _takes_mask(match.loss):
                kwargs["mask"] = mask
            term = match.loss(student, teacher, **kwargs) * match.weight
            total = term if total is None else total + term
        return total

    def extra_repr(self) -> str:
        return "\n".join(f"({i}): {m.loss_name}(student {m.feature}[{m.layer_s}], teacher {m.feature}[{m.layer_t}]) "
                         f"x {m.weight}" for i, m in enumerate(self._matches))
