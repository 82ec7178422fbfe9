"""The ``custom`` recipe: a distillation read entirely from the configuration (TextBrewer's ``DistillationConfig``
as configuration keys), every entry checked against the two models before the first step.

.. math::
    \\text{loss} = \\sum_j w_j f_j(s) \\, \\ell_j(z_S, z_T; T_j) + w_{ce} \\, \\mathrm{CE}(z_S, y)
                 + f_h(s) \\sum_i w_i \\, \\ell_i(\\text{student feature}_i, \\text{teacher feature}_i)

- ``logit_terms``: a list of ``{loss, weight, temperature, temperature_scaling, schedule, temperature_schedule}``;
  ``loss`` is a registered loss taking temperatures (``kl_div``, ``soft_cross_entropy``) with its default
  reduction, ``weight`` default 1, ``temperature`` default ``--temperature``, ``temperature_scaling`` default
  false (``True``: times ``T**2``), ``schedule`` (:data:`~.objective_schedules.WEIGHT_SCHEDULES`, the factor
  :math:`f_j(s)`) and ``temperature_schedule`` (:data:`~.objective_schedules.TEMPERATURE_SCHEDULES`) default constant;
- ``hard_label_weight``: :math:`w_{ce}` (0: no hard labels);
- ``intermediate_matches``: :class:`~knowledge_distill_util.nn.IntermediateMatches` entries (``layer_S``,
  ``layer_T``, ``feature`` among ``hidden`` — the embeddings then every layer —, ``attention`` — the
  ``--attention_output`` of each layer —, ``value``, ``query``, ``key``; ``loss``, ``weight``, ``proj``,
  ``options``); a negative layer counts from the top (-1: the last); their factor :math:`f_h(s)` is
  ``--hidden_weight_schedule``.

The student is a BERT of the ``student_*`` keys (any width: give a ``proj`` where the widths differ). The stage
trains as :func:`custom_config`, a :class:`~knowledge_distill_util.engine.DistillationConfig` of the same terms:
the Distiller holds the matches' projections (trained and checkpointed with the student); the saved model is the
BERT. :func:`custom_loss` is the formula itself, on a :class:`CustomStudent` (the BERT and the projections in one
module), as the objectives of the other recipes are theirs.
"""
from typing import Any, Dict, List, Mapping, Sequence

import oneflow as flow
import oneflow.nn as nn

from ..engine.config import DistillationConfig
from ..functional import mseloss
from ..nn import IntermediateMatches
from ..registry import available_losses, get_loss, takes_temperatures
from ..config.schema import ConfigError
from .kd_objectives import Terms, hard_label_loss, is_regression
from .objective_schedules import TEMPERATURE_SCHEDULES, WEIGHT_SCHEDULES, factor, row_temperatures
from .objectives import Objective

__all__ = ["CustomStudent", "custom_loss", "custom_config", "CUSTOM", "check_logit_terms", "resolve_matches",
           "check_match_losses", "logit_losses"]

_TERM_KEYS = ("loss", "weight", "temperature", "temperature_scaling", "schedule", "temperature_schedule")
_MATCH_KEYS = ("layer_S", "layer_T", "feature", "loss", "weight", "proj", "options")
#: Losses whose two tensors must have the same shape (after the projection).
_SAME_SHAPE = ("hidden_mse", "hidden_cosine", "pkd_loss", "attention_mse", "attention_kl")


def logit_losses() -> List[str]:
    """The registered losses a logit term may name: those taking temperatures."""
    return [name for name in available_losses() if takes_temperatures(get_loss(name))]


def _choice(where: str, value, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{where} is {value!r}; choose one of {', '.join(map(repr, choices))}")


def _number(where: str, value, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value == value or value < minimum \
            or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{where} must be a finite number >= {minimum:g}, got {value!r}; fix it in the config")
    return float(value)


def check_logit_terms(terms, temperature: float) -> List[Dict[str, Any]]:
    """The ``logit_terms`` with their defaults filled in; :class:`ConfigError` naming the key otherwise."""
    if terms is None:
        return []
    if not isinstance(terms, list):
        raise ConfigError(f"logit_terms must be a list of {{loss, weight, ...}} entries, got {type(terms).__name__}")
    checked = []
    for i, term in enumerate(terms):
        where = f"logit_terms[{i}]"
        if not isinstance(term, Mapping):
            raise ConfigError(f"{where} must be a mapping such as {{loss: kl_div, weight: 1.0}}, got {term!r}")
        unknown = sorted(set(term) - set(_TERM_KEYS))
        if unknown:
            raise ConfigError(f"{where} has unknown key(s) {unknown}; the keys of a logit term: {', '.join(_TERM_KEYS)}")
        if "loss" not in term:
            raise ConfigError(f"{where} names no loss; add loss: one of {', '.join(logit_losses())}")
        _choice(f"{where}['loss']", term["loss"], logit_losses())
        entry = dict(weight=1.0, temperature=temperature, temperature_scaling=False, schedule="constant",
                     temperature_schedule="constant")
        entry.update(term)
        entry["weight"] = _number(f"{where}['weight']", entry["weight"])
        entry["temperature"] = _number(f"{where}['temperature']", entry["temperature"], 1e-4)
        if not isinstance(entry["temperature_scaling"], bool):
            raise ConfigError(f"{where}['temperature_scaling'] must be true or false, got {entry['temperature_scaling']!r}")
        _choice(f"{where}['schedule']", entry["schedule"], WEIGHT_SCHEDULES)
        _choice(f"{where}['temperature_schedule']", entry["temperature_schedule"], TEMPERATURE_SCHEDULES)
        checked.append(entry)
    return checked


def _features(config: Mapping) -> Dict[str, tuple]:
    """``feature -> (number of entries, width of the last axis)`` of a BERT's per-layer lists."""
    layers, width, heads = config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"]
    return {"hidden": (layers + 1, width), "attention": (layers, None), "value": (layers, width),
            "query": (layers, width), "key": (layers, width), "heads": (heads, None)}


def _layer(where: str, value, count: int, side: str, pair: bool):
    """``value`` (an index, -1 the last, or a pair of them) as indices >= 0 below ``count``."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if pair and len(items) != 2 or not pair and isinstance(value, (list, tuple)):
        raise ConfigError(f"{where} is {value!r}; give {'a pair [i, j] of layer indices' if pair else 'one layer index'}")
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise ConfigError(f"{where} is {value!r}; a layer is an integer (-1: the last)")
        if not -count <= item < count:
            raise ConfigError(f"{where} is {item} but the {side} has {count} of these layers (0 to {count - 1}, "
                              f"-1 the last); pick a layer of the {side}")
        out.append(item % count)
    return out if pair else out[0]


def resolve_matches(matches, student_config: Mapping, teacher_config: Mapping) -> List[Dict[str, Any]]:
    """The ``intermediate_matches`` with layers as indices >= 0, checked against both models: known keys,
    loss, feature and projection, layers inside the models, widths that fit (or a ``proj``), relation heads
    that divide the widths, equal head counts for attention losses. :class:`ConfigError` naming the key."""
    if matches is None:
        return []
    if not isinstance(matches, list):
        raise ConfigError(f"intermediate_matches must be a list of {{layer_S, layer_T, feature, loss}} entries, got "
                          f"{type(matches).__name__}")
    sides = {"student": _features(student_config), "teacher": _features(teacher_config)}
    resolved = []
    for i, entry in enumerate(matches):
        where = f"intermediate_matches[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where} must be a mapping {{layer_S, layer_T, feature, loss, ...}}, got {entry!r}")
        unknown = sorted(set(entry) - set(_MATCH_KEYS))
        missing = [k for k in ("layer_S", "layer_T", "feature", "loss") if k not in entry]
        if unknown or missing:
            raise ConfigError(f"{where} has unknown key(s) {unknown} or lacks {missing}; an entry has layer_S, layer_T, "
                              f"feature, loss and optionally weight, proj, options")
        _choice(f"{where}['loss']", entry["loss"], available_losses())
        _choice(f"{where}['feature']", entry["feature"], ("hidden", "attention", "value", "query", "key"))
        feature, loss, pair = entry["feature"], entry["loss"], entry["loss"] in ("fsp_loss", "mmd_loss")
        out = dict(entry)
        for key, side in (("layer_S", "student"), ("layer_T", "teacher")):
            out[key] = _layer(f"{where}['{key}']", entry[key], sides[side][feature][0], side, pair)
        _check_widths(where, out, sides)
        resolved.append(out)
    return resolved


def _check_widths(where: str, entry: Dict[str, Any], sides: Dict[str, Dict[str, tuple]]) -> None:
    feature, loss, proj = entry["feature"], entry["loss"], entry.get("proj")
    s_width, t_width = sides["student"][feature][1], sides["teacher"][feature][1]
    if proj is not None:
        if feature == "attention":
            raise ConfigError(f"{where}['proj'] projects attention maps [B, heads, L, L]; drop it (a projection maps "
                              f"hidden, value, query or key widths)")
        if not isinstance(proj, (list, tuple)) or len(proj) not in (3, 4) or proj[0] != "linear":
            raise ConfigError(f"{where}['proj'] is {proj!r}; write [linear, {s_width}, {t_width}] (optionally an "
                              f"activation relu, tanh or gelu as 4th item)")
        if list(proj[1:3]) != [s_width, t_width]:
            raise ConfigError(f"{where}['proj'] maps {proj[1]} -> {proj[2]} but the student's {feature} width is "
                              f"{s_width} and the teacher's {t_width}; write [linear, {s_width}, {t_width}]")
        s_width = t_width
    if feature == "attention" and loss in _SAME_SHAPE:
        s_heads, t_heads = sides["student"]["heads"][0], sides["teacher"]["heads"][0]
        if s_heads != t_heads:
            raise ConfigError(f"{where} ({loss}) compares attention maps of {s_heads} student and {t_heads} teacher "
                              f"heads; pass --student_num_attention_heads {t_heads}")
    elif loss in _SAME_SHAPE and s_width != t_width:
        raise ConfigError(f"{where} ({loss}) compares a student {feature} of width {s_width} with a teacher's of "
                          f"width {t_width}; add proj: [linear, {s_width}, {t_width}]")
    heads = (entry.get("options") or {}).get("num_relation_heads") if isinstance(entry.get("options"), Mapping) \
        else None
    if loss == "relation_kl" and isinstance(heads, int) and not isinstance(heads, bool) and heads > 0:
        for who, width in (("student", s_width), ("teacher", t_width)):
            if width is not None and width % heads:
                raise ConfigError(f"{where}['options']['num_relation_heads'] {heads} does not divide the {who}'s "
                                  f"{feature} width {width}; pick a divisor of both {s_width} and {t_width}")


def check_match_losses(matches: Sequence[Mapping[str, Any]]) -> List[IntermediateMatches]:
    """One :class:`~knowledge_distill_util.nn.IntermediateMatches` (weight 1) per match: what the losses check of
    their entries (options, projections); :class:`ConfigError` naming the entry otherwise."""
    built = []
    for index, entry in enumerate(matches):
        try:
            built.append(IntermediateMatches([dict(entry, weight=1.0)]))
        except (TypeError, ValueError) as error:
            text = str(error).replace("matches[0]", f"intermediate_matches[{index}]")
            raise ConfigError(f"{text}; fix that entry of intermediate_matches") from None
    return built


def _engine_term(term: Mapping[str, Any], regression: bool) -> Dict[str, Any]:
    """A checked ``logit_terms`` entry (:func:`check_logit_terms`) as a ``DistillationConfig.logit_terms`` entry."""
    weighted = {"weight": term["weight"], "weight_schedule": term["schedule"]}
    if regression:
        return dict(weighted, loss="hidden_mse")
    scheduler = "none" if term["temperature_schedule"] == "constant" else term["temperature_schedule"]
    return dict(weighted, loss=term["loss"], temperature=term["temperature"],
                temperature_scaling=term["temperature_scaling"], temperature_scheduler=scheduler)


def custom_config(args, regression: bool) -> DistillationConfig:
    """The custom loss of the module doc as a :class:`~knowledge_distill_util.engine.DistillationConfig`: each
    ``logit_terms`` entry a :class:`~knowledge_distill_util.engine.LogitTerm` (``schedule`` its ``weight_schedule``,
    ``temperature_schedule`` its ``temperature_scheduler``; one logit: ``hidden_mse``, the MSE of the two
    predictions), ``hard_label_weight``, the ``intermediate_matches`` under ``hidden_weight_schedule``; the models
    give their query/key/value projections (``output_qkv``) when a match reads them."""
    terms = [_engine_term(term, regression) for term in check_logit_terms(args.logit_terms, args.temperature)]
    matches = [dict(entry) for entry in args.intermediate_matches or []]
    projections = any(entry["feature"] in ("value", "query", "key") for entry in matches)
    return DistillationConfig(logit_weight=0.0, logit_terms=terms, hard_label_weight=args.hard_label_weight,
                              intermediate_matches=matches, forward_kwargs={"output_qkv": True} if projections else {},
                              intermediate_weight_schedule=getattr(args, "hidden_weight_schedule", "constant"))


class CustomStudent(nn.Module):
    """The module :func:`custom_loss` trains: the BERT student (``bert``) and one
    :class:`~knowledge_distill_util.nn.IntermediateMatches` per match (``matches``, with their projections).
    ``forward`` is the BERT's."""

    def __init__(self, bert: nn.Module, matches: Sequence[Mapping[str, Any]], logit_terms: Sequence[Mapping]):
        super().__init__()
        self.bert = bert
        self.logit_terms = [dict(term) for term in logit_terms]
        self.match_weights = [float(entry.get("weight", 1.0)) for entry in matches]
        self.matches = nn.ModuleList(check_match_losses(matches))
        self.config = bert.config

    def forward(self, *args, **kwargs):
        return self.bert(*args, **kwargs)


def custom_loss(
    args,
    student_model: CustomStudent,
    student_logits: flow.Tensor,
    teacher_logits: flow.Tensor,
    student_reps: Sequence[flow.Tensor],
    teacher_reps: Sequence[flow.Tensor],
    student_atts: Sequence[flow.Tensor],
    teacher_atts: Sequence[flow.Tensor],
    student_queries: Sequence[flow.Tensor],
    teacher_queries: Sequence[flow.Tensor],
    student_keys: Sequence[flow.Tensor],
    teacher_keys: Sequence[flow.Tensor],
    student_values: Sequence[flow.Tensor],
    teacher_values: Sequence[flow.Tensor],
    input_mask: flow.Tensor,
    labels: flow.Tensor,
) -> Terms:
    """The loss of the module doc; the terms: ``loss``, ``logit`` (the weighted logit terms), ``ce`` and
    ``matches`` (the weighted matches) — the same four columns for any configuration."""
    parts = []
    logit = None
    for term in student_model.logit_terms:
        if is_regression(student_logits):
            value = mseloss(student_logits, teacher_logits.detach())
        else:
            t_s, t_t = row_temperatures(term["temperature_schedule"], student_logits, teacher_logits,
                                        term["temperature"], term["temperature"])
            value = get_loss(term["loss"])(student_logits, teacher_logits, student_temperature=t_s,
                                           teacher_temperature=t_t, temperature_scaling=term["temperature_scaling"])
        f = factor(args, term["schedule"])
        value = value * term["weight"] if f is None else value * term["weight"] * f
        logit = value if logit is None else logit + value
    if logit is not None:
        parts.append(logit)
    ce = hard_label_loss(student_logits, labels)
    if args.hard_label_weight > 0:
        parts.append(args.hard_label_weight * ce)
    student = {"hidden": student_reps, "attention": student_atts, "value": student_values,
               "query": student_queries, "key": student_keys}
    teacher = {"hidden": teacher_reps, "attention": teacher_atts, "value": teacher_values,
               "query": teacher_queries, "key": teacher_keys}
    matched = None
    for weight, match in zip(student_model.match_weights, student_model.matches):
        value = match(student, teacher, mask=input_mask) * weight
        matched = value if matched is None else matched + value
    if matched is not None:
        f = factor(args, getattr(args, "hidden_weight_schedule", "constant"))
        parts.append(matched if f is None else matched * f)
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    zero = flow.zeros_like(ce)
    return {"loss": total, "logit": zero if logit is None else logit, "ce": ce,
            "matches": zero if matched is None else matched}


CUSTOM = Objective(custom_loss, ("loss", "logit", "ce", "matches"), custom_config)
