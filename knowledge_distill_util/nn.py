"""torch-style Modules of the distillation losses, a projection layer, and :class:`IntermediateMatches`.

Each loss Module only stores its options (validated in the constructor) and calls the function of
:mod:`knowledge_distill_util.functional` in a one-line ``forward(student, teacher, mask=None)``.

Example::

    >>> import oneflow as flow
    >>> from knowledge_distill_util.nn import KLDivLoss
    >>> loss = KLDivLoss(student_temperature=2.0, teacher_temperature=2.0, temperature_scaling=True)
    >>> loss
    KLDivLoss(student_temperature=2.0, teacher_temperature=2.0, reduction='batchmean', temperature_scaling=True)
    >>> loss(flow.zeros(2, 3), flow.zeros(2, 3)).item()
    0.0
"""
import inspect
import math
from numbers import Real
from typing import Any, Dict, List, Mapping, Optional, Sequence

import oneflow as flow
import oneflow.nn.functional as F

from . import functional
from ._checks import check_choice, check_int, check_temperature
from ._vocab import check_vocab_alignment
from .divergences import check_mixture_weight
from .registry import available_losses, get_loss

__all__ = [
    "SoftCrossEntropyLoss",
    "KLDivLoss",
    "HiddenMSELoss",
    "HiddenCosineLoss",
    "PKDLoss",
    "AttentionMSELoss",
    "AttentionKLLoss",
    "RelationKLLoss",
    "FSPLoss",
    "MMDLoss",
    "ReverseKLLoss",
    "JSDivergenceLoss",
    "SkewKLLoss",
    "SkewReverseKLLoss",
    "TVDistanceLoss",
    "ULDLoss",
    "Projection",
    "IntermediateMatches",
    "ACTIVATIONS",
    "FEATURES",
]

#: The activations of :class:`Projection` (``None`` for none).
ACTIVATIONS = ("relu", "tanh", "gelu")

#: The feature names an :class:`IntermediateMatches` entry may select.
FEATURES = ("hidden", "attention", "value", "query", "key")


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


class _SoftTargetLoss(flow.nn.Module):
    """Shared constructor and forward of the logit losses (:class:`SoftCrossEntropyLoss`, :class:`KLDivLoss`
    and the divergences). ``vocab_alignment`` (``None``, ``"truncate"``, ``"uld"``) is shown in the repr
    only when set."""

    _default_reduction = "mean"

    def __init__(self, student_temperature: float = 1.0, teacher_temperature: float = 1.0,
                 reduction: Optional[str] = None, temperature_scaling: bool = False,
                 vocab_alignment: Optional[str] = None):
        super().__init__()
        self.student_temperature = check_temperature("student_temperature", student_temperature)
        self.teacher_temperature = check_temperature("teacher_temperature", teacher_temperature)
        reduction = self._default_reduction if reduction is None else reduction
        self.reduction = check_choice("reduction", reduction, functional.REDUCTIONS)
        self.temperature_scaling = _check_bool("temperature_scaling", temperature_scaling)
        self.vocab_alignment = check_vocab_alignment(vocab_alignment)

    def _function(self, *args, **kwargs):
        raise NotImplementedError

    def forward(self, student: flow.Tensor, teacher: flow.Tensor, mask: Optional[flow.Tensor] = None, *,
                student_temperature=None, teacher_temperature=None) -> flow.Tensor:
        """``student_temperature``/``teacher_temperature`` override the constructor's for this call
        (e.g. per-row tensors from :mod:`knowledge_distill_util.schedules`)."""
        return self._function(
            student, teacher,
            student_temperature=self.student_temperature if student_temperature is None else student_temperature,
            teacher_temperature=self.teacher_temperature if teacher_temperature is None else teacher_temperature,
            reduction=self.reduction, temperature_scaling=self.temperature_scaling, mask=mask,
            **self._options(),
        )

    def _options(self) -> Dict[str, Any]:
        """The function's further keywords: ``vocab_alignment`` when set, a divergence's ``beta``/``alpha``."""
        return {} if self.vocab_alignment is None else {"vocab_alignment": self.vocab_alignment}

    def extra_repr(self) -> str:
        options = "".join(f", {key}={value!r}" for key, value in self._options().items())
        return (f"student_temperature={self.student_temperature}, teacher_temperature={self.teacher_temperature}, "
                f"reduction={self.reduction!r}, temperature_scaling={self.temperature_scaling}{options}")


class SoftCrossEntropyLoss(_SoftTargetLoss):
    """:func:`~knowledge_distill_util.functional.soft_cross_entropy` as a Module (default ``"mean"``:
    the original element mean).

    >>> import oneflow as flow
    >>> s = flow.tensor([[1.0, 2.0, 3.0]])
    >>> round(SoftCrossEntropyLoss(reduction="batchmean")(s, s).item(), 4)
    0.8324
    """

    _default_reduction = "mean"

    def _function(self, *args, **kwargs):
        return functional.soft_cross_entropy(*args, **kwargs)


class KLDivLoss(_SoftTargetLoss):
    """:func:`~knowledge_distill_util.functional.kl_div` as a Module (default ``"batchmean"``).

    >>> import oneflow as flow
    >>> round(KLDivLoss()(flow.tensor([[0.0, 1.0]]), flow.tensor([[0.0, 0.0]])).item(), 4)
    0.1201
    """

    _default_reduction = "batchmean"

    def _function(self, *args, **kwargs):
        return functional.kl_div(*args, **kwargs)


class ReverseKLLoss(_SoftTargetLoss):
    """:func:`~knowledge_distill_util.functional.reverse_kl` as a Module (default ``"batchmean"``).

    >>> import oneflow as flow
    >>> round(ReverseKLLoss()(flow.tensor([[0.0, 1.0]]), flow.tensor([[0.0, 0.0]])).item(), 4)
    0.1109
    """

    _default_reduction = "batchmean"

    def _function(self, *args, **kwargs):
        return functional.reverse_kl(*args, **kwargs)


class _WeightedDivergenceLoss(_SoftTargetLoss):
    """A divergence with a mixture weight (``beta`` or ``alpha`` in ``[0, 1]``) stored by the constructor."""

    _default_reduction = "batchmean"
    _weight_name = ""
    _weight_meaning = ""

    def _set_weight(self, weight) -> None:
        setattr(self, self._weight_name, check_mixture_weight(self._weight_name, weight, self._weight_meaning))

    def _options(self) -> Dict[str, Any]:
        return {self._weight_name: getattr(self, self._weight_name), **super()._options()}


class JSDivergenceLoss(_WeightedDivergenceLoss):
    """:func:`~knowledge_distill_util.functional.js_divergence` with ``beta`` (default 0.5).

    >>> import oneflow as flow
    >>> loss = JSDivergenceLoss(beta=0.0)
    >>> loss
    JSDivergenceLoss(student_temperature=1.0, teacher_temperature=1.0, reduction='batchmean', temperature_scaling=False, beta=0.0)
    >>> round(loss(flow.tensor([[0.0, 1.0]]), flow.tensor([[0.0, 0.0]])).item(), 4)  # beta = 0: KL(P || Q)
    0.1201
    """

    _weight_name, _weight_meaning = "beta", "0 = KL(P || Q), 1 = KL(Q || P)"

    def __init__(self, beta: float = 0.5, student_temperature: float = 1.0, teacher_temperature: float = 1.0,
                 reduction: Optional[str] = None, temperature_scaling: bool = False,
                 vocab_alignment: Optional[str] = None):
        super().__init__(student_temperature, teacher_temperature, reduction, temperature_scaling, vocab_alignment)
        self._set_weight(beta)

    def _function(self, *args, **kwargs):
        return functional.js_divergence(*args, **kwargs)


class SkewKLLoss(_WeightedDivergenceLoss):
    """:func:`~knowledge_distill_util.functional.skew_kl` with ``alpha`` (default 0.1).

    >>> import oneflow as flow
    >>> round(SkewKLLoss(alpha=0.1)(flow.tensor([[0.0, 30.0]]), flow.tensor([[30.0, 0.0]])).item(), 4)
    2.3026
    """

    _weight_name, _weight_meaning = "alpha", "0 = KL(P || Q), 1 = 0"

    def __init__(self, alpha: float = 0.1, student_temperature: float = 1.0, teacher_temperature: float = 1.0,
                 reduction: Optional[str] = None, temperature_scaling: bool = False,
                 vocab_alignment: Optional[str] = None):
        super().__init__(student_temperature, teacher_temperature, reduction, temperature_scaling, vocab_alignment)
        self._set_weight(alpha)

    def _function(self, *args, **kwargs):
        return functional.skew_kl(*args, **kwargs)


class SkewReverseKLLoss(_WeightedDivergenceLoss):
    """:func:`~knowledge_distill_util.functional.skew_reverse_kl` with ``alpha`` (default 0.1).

    >>> import oneflow as flow
    >>> round(SkewReverseKLLoss()(flow.tensor([[0.0, 30.0]]), flow.tensor([[30.0, 0.0]])).item(), 4)
    2.3026
    """

    _weight_name, _weight_meaning = "alpha", "0 = KL(Q || P), 1 = 0"

    def __init__(self, alpha: float = 0.1, student_temperature: float = 1.0, teacher_temperature: float = 1.0,
                 reduction: Optional[str] = None, temperature_scaling: bool = False,
                 vocab_alignment: Optional[str] = None):
        super().__init__(student_temperature, teacher_temperature, reduction, temperature_scaling, vocab_alignment)
        self._set_weight(alpha)

    def _function(self, *args, **kwargs):
        return functional.skew_reverse_kl(*args, **kwargs)


class TVDistanceLoss(_SoftTargetLoss):
    """:func:`~knowledge_distill_util.functional.tv_distance` as a Module (default ``"batchmean"``).

    >>> import oneflow as flow
    >>> TVDistanceLoss()(flow.tensor([[0.0, 30.0]]), flow.tensor([[30.0, 0.0]])).item()
    1.0
    """

    _default_reduction = "batchmean"

    def _function(self, *args, **kwargs):
        return functional.tv_distance(*args, **kwargs)


class ULDLoss(_SoftTargetLoss):
    """:func:`~knowledge_distill_util.functional.uld_loss` (any two vocabularies; default ``"batchmean"``).

    >>> import oneflow as flow
    >>> ULDLoss()(flow.tensor([[0.0, 0.0]]), flow.tensor([[0.0, 0.0, 0.0, 0.0]])).item()
    1.0
    """

    _default_reduction = "batchmean"

    def __init__(self, student_temperature: float = 1.0, teacher_temperature: float = 1.0,
                 reduction: Optional[str] = None, temperature_scaling: bool = False):
        super().__init__(student_temperature, teacher_temperature, reduction, temperature_scaling)

    def _function(self, *args, **kwargs):
        return functional.uld_loss(*args, **kwargs)


class HiddenMSELoss(flow.nn.Module):
    """:func:`~knowledge_distill_util.functional.hidden_mse`: ``[B, L, H]`` pairs, mask ``[B, L]``.

    >>> import oneflow as flow
    >>> HiddenMSELoss()(flow.ones(1, 2, 2), flow.zeros(1, 2, 2), mask=flow.tensor([[1, 0]])).item()
    1.0
    """

    def forward(self, student: flow.Tensor, teacher: flow.Tensor, mask: Optional[flow.Tensor] = None) -> flow.Tensor:
        return functional.hidden_mse(student, teacher, mask=mask)


class HiddenCosineLoss(flow.nn.Module):
    """:func:`~knowledge_distill_util.functional.hidden_cosine`: ``[B, L, H]`` pairs, mask ``[B, L]``.

    >>> import oneflow as flow
    >>> HiddenCosineLoss()(flow.ones(1, 2, 2), flow.ones(1, 2, 2)).item()
    0.0
    """

    def forward(self, student: flow.Tensor, teacher: flow.Tensor, mask: Optional[flow.Tensor] = None) -> flow.Tensor:
        return functional.hidden_cosine(student, teacher, mask=mask)


class PKDLoss(flow.nn.Module):
    """:func:`~knowledge_distill_util.functional.pkd_loss` on [CLS] vectors (``[B, H]`` or ``[B, L, H]``).
    The [CLS] position is always valid, so a ``mask`` is refused rather than ignored.

    >>> import oneflow as flow
    >>> PKDLoss()(flow.tensor([[3.0, 0.0]]), flow.tensor([[0.0, 5.0]])).item()
    2.0
    """

    def forward(self, student: flow.Tensor, teacher: flow.Tensor, mask: Optional[flow.Tensor] = None) -> flow.Tensor:
        if mask is not None:
            raise ValueError("PKDLoss compares [CLS] vectors, which are never padding: it takes no mask; pass mask=None")
        return functional.pkd_loss(student, teacher)


class AttentionMSELoss(flow.nn.Module):
    """:func:`~knowledge_distill_util.functional.attention_mse` with its ``mask_threshold``.

    >>> import oneflow as flow
    >>> AttentionMSELoss()(flow.ones(1, 1, 2, 2), flow.zeros(1, 1, 2, 2)).item()
    1.0
    """

    def __init__(self, mask_threshold: float = functional.ATTENTION_MASK_THRESHOLD):
        super().__init__()
        if isinstance(mask_threshold, bool) or not isinstance(mask_threshold, Real) or math.isnan(mask_threshold):
            raise TypeError(f"mask_threshold must be a number (default -100.0), got {mask_threshold!r}")
        self.mask_threshold = float(mask_threshold)

    def forward(self, student: flow.Tensor, teacher: flow.Tensor, mask: Optional[flow.Tensor] = None) -> flow.Tensor:
        return functional.attention_mse(student, teacher, mask=mask, mask_threshold=self.mask_threshold)

    def extra_repr(self) -> str:
        return f"mask_threshold={self.mask_threshold}"


class AttentionKLLoss(flow.nn.Module):
    """:func:`~knowledge_distill_util.functional.attention_kl` on attention scores ``[B, heads, L, L]``.

    >>> import oneflow as flow
    >>> AttentionKLLoss()(flow.zeros(1, 1, 2, 2), flow.zeros(1, 1, 2, 2)).item()
    0.0
    """

    def forward(self, student: flow.Tensor, teacher: flow.Tensor, mask: Optional[flow.Tensor] = None) -> flow.Tensor:
        return functional.attention_kl(student, teacher, mask=mask)


class RelationKLLoss(flow.nn.Module):
    """:func:`~knowledge_distill_util.functional.relation_kl` with ``num_relation_heads``.

    >>> import oneflow as flow
    >>> RelationKLLoss(num_relation_heads=2)(flow.ones(1, 3, 4), flow.ones(1, 3, 8)).item()
    0.0
    """

    def __init__(self, num_relation_heads: int):
        super().__init__()
        self.num_relation_heads = check_int("num_relation_heads", num_relation_heads)

    def forward(self, student: flow.Tensor, teacher: flow.Tensor, mask: Optional[flow.Tensor] = None) -> flow.Tensor:
        return functional.relation_kl(student, teacher, num_relation_heads=self.num_relation_heads, mask=mask)

    def extra_repr(self) -> str:
        return f"num_relation_heads={self.num_relation_heads}"


class FSPLoss(flow.nn.Module):
    """:func:`~knowledge_distill_util.functional.fsp_loss`: ``forward((s0, s1), (t0, t1), mask=None)``.

    >>> import oneflow as flow
    >>> x = flow.ones(1, 2, 2)
    >>> FSPLoss()((x, x), (x, 2 * x)).item()
    1.0
    """

    def forward(self, student: Sequence[flow.Tensor], teacher: Sequence[flow.Tensor],
                mask: Optional[flow.Tensor] = None) -> flow.Tensor:
        return functional.fsp_loss(student, teacher, mask=mask)


class MMDLoss(flow.nn.Module):
    """:func:`~knowledge_distill_util.functional.mmd_loss`: ``forward((s0, s1), (t0, t1), mask=None)``.

    >>> import oneflow as flow
    >>> MMDLoss()((flow.ones(1, 2, 3),) * 2, (flow.ones(1, 2, 5),) * 2).item()
    0.0
    """

    def forward(self, student: Sequence[flow.Tensor], teacher: Sequence[flow.Tensor],
                mask: Optional[flow.Tensor] = None) -> flow.Tensor:
        return functional.mmd_loss(student, teacher, mask=mask)


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


# --------------------------------------------------------------------------------------------------
# IntermediateMatches
# --------------------------------------------------------------------------------------------------

_REQUIRED_KEYS = ("layer_S", "layer_T", "feature", "loss")
_OPTIONAL_KEYS = ("weight", "proj", "options")
_PAIR_LOSSES = ("fsp_loss", "mmd_loss")


def _entry_error(index: int, key: str, message: str) -> ValueError:
    return ValueError(f"matches[{index}][{key!r}] {message}")


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


def _keyword_options(loss) -> List[str]:
    return [p.name for p in inspect.signature(loss).parameters.values()
            if p.kind == inspect.Parameter.KEYWORD_ONLY and p.name != "mask"]


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
        known = _keyword_options(self.loss)
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
