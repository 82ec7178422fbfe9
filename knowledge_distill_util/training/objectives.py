"""The training objectives of the recipes, exactly as the original example scripts combined the operators.

Each objective is one small pure function ``loss(args, **tensors) -> {"loss": total, term: value, ...}``
built on :func:`~knowledge_distill_util.pred_distill`, :func:`~knowledge_distill_util.layer_distill` and
:func:`~knowledge_distill_util.att_distill`, wrapped in an :class:`Objective` that names its terms.
``args`` is any object with the attributes the formula reads (``kd_alpha``, ``kd_beta``, temperatures:
the run's :class:`~knowledge_distill_util.training.config.TrainConfig`). Tensor arguments, by name:

- ``student_logits``, ``teacher_logits``: ``[B, C]`` (``C = 1`` for a regression task);
- ``student_reps``, ``teacher_reps``: lists of ``[B, L, H]``, embedding output first;
- ``student_atts``, ``teacher_atts``: lists of ``[B, heads, L, L]``, one per layer;
- ``student_scores``, ``teacher_scores``: lists of ``[B, heads, L, L]``, one per layer, the attention scores
  before the softmax (``q k^T / sqrt(d)`` plus the additive padding mask);
- ``student_values``, ``teacher_values`` (and ``_queries``, ``_keys``): lists of ``[B, L, H]``, one per
  layer, the value (query, key) projections (the models are called with ``output_attention_scores`` and
  ``output_qkv`` only for an objective reading these, :attr:`Objective.reads_attention_details`);
- ``input_mask``: ``[B, L]`` 0/1, the batch's mask;
- ``labels``: ``[B]`` int64 class ids, or float32 scores for regression.

Regression (one logit): the hard-label term is the MSE between the logit and the score, and the
soft-label term is the MSE between the student's and the teacher's predictions
(``pred_distill``'s softmax over one logit is constant, so it would carry no signal).

| objective | loss |
|---|---|
| ``LABELS`` (teacher, labels-only baseline, Theseus) | ``CE`` |
| ``KD`` | ``kd_alpha * CE + (1 - kd_alpha) * pred_distill`` |
| ``BILSTM`` | ``(1 - kd_alpha) * CE + kd_alpha * pred_distill`` |
| ``BERT_PKD`` | ``(1 - kd_alpha) * CE + kd_alpha * pred_distill + kd_beta * layer_distill`` |
| ``TINYBERT_INTERMEDIATE`` | ``att_distill + layer_distill`` |
| ``TINYBERT_PRED`` | ``pred_distill`` |
| ``TINYBERT_COMBINED`` (the original's one stage, both flags) | ``att_distill + layer_distill + pred_distill`` |
| ``MINILM`` | ``attention_kl`` (last layers' scores) ``+ relation_kl`` (last layers' values, one relation head per attention head) |
| ``MINILM_V2`` | ``relation_kl`` of queries ``+`` keys ``+`` values (student's last layer, teacher's ``minilm_teacher_layer``, ``num_relation_heads``) |
| ``DISTILBERT`` | ``logit_weight * kl_div * T**2 + hard_label_weight * CE + hidden_weight * hidden_cosine`` (last hidden states) |
| ``PKD_PATIENCE`` | ``(1 - kd_alpha) * CE + kd_alpha * soft CE(T) + kd_beta * sum pkd_loss`` ([CLS] of the ``pkd_strategy`` pairs) |
| ``CUSTOM`` (:mod:`.custom`) | the configuration's logit terms, hard labels and intermediate matches |

Schedules (any objective): ``args.temperature_schedule`` ``flsw``/``cwsm`` gives the soft-label term per-row
temperatures (:func:`row_temperatures`); ``args.logit_weight_schedule`` / ``args.hidden_weight_schedule``
(``linear_growth``, ``linear_decay``) multiply the soft-label resp. intermediate terms by the factor fed at each
step (:class:`ScheduledArgs`, :func:`schedule_factors`). ``constant`` (the default) leaves the terms as they are.
"""
import inspect
from dataclasses import dataclass
from typing import Callable, Dict, Sequence, Tuple

import oneflow as flow
import oneflow.nn.functional as F

from ..distill import att_distill, layer_distill, pred_distill, resolve_temperatures
from ..functional import (attention_kl, checked_soft_cross_entropy, hidden_cosine, kl_div, mseloss, pkd_loss,
                          relation_kl, soft_cross_entropy)
from ..schedules import cwsm_temperature, flsw_temperature, linear_decay, linear_growth

__all__ = [
    "Objective",
    "hard_label_loss",
    "soft_label_loss",
    "labels_loss",
    "kd_loss",
    "bilstm_loss",
    "bert_pkd_loss",
    "tinybert_intermediate_loss",
    "tinybert_pred_loss",
    "LABELS",
    "KD",
    "BILSTM",
    "BERT_PKD",
    "TINYBERT_INTERMEDIATE",
    "TINYBERT_PRED",
    "tinybert_combined_loss",
    "TINYBERT_COMBINED",
    "minilm_loss",
    "MINILM",
    "minilm_v2_loss",
    "MINILM_V2",
    "WEIGHT_SCHEDULES",
    "TEMPERATURE_SCHEDULES",
    "ScheduledArgs",
    "schedule_factors",
    "uses_weight_schedules",
    "distilbert_loss",
    "DISTILBERT",
    "pkd_layer_pairs",
    "pkd_patience_loss",
    "PKD_PATIENCE",
]

Terms = Dict[str, flow.Tensor]


def _is_regression(logits: flow.Tensor) -> bool:
    return logits.shape[-1] == 1


def hard_label_loss(logits: flow.Tensor, labels: flow.Tensor) -> flow.Tensor:
    """``CE(logits, labels)`` (mean over the batch); for one logit, ``mean((logit - score)**2)``."""
    if _is_regression(logits):
        return mseloss(logits.reshape(-1), labels.to(logits.dtype).reshape(-1))
    return F.cross_entropy(logits, labels.to(flow.int64))


def soft_label_loss(args, student_logits: flow.Tensor, teacher_logits: flow.Tensor) -> flow.Tensor:
    """``pred_distill(args, student, teacher)``; for one logit the MSE between the two predictions."""
    if _is_regression(student_logits):
        return mseloss(student_logits, teacher_logits.detach())
    schedule = getattr(args, "temperature_schedule", "constant")
    if schedule == "constant":
        return pred_distill(args, student_logits, teacher_logits)
    t_s, t_t = row_temperatures(schedule, student_logits, teacher_logits, *resolve_temperatures(args))
    return checked_soft_cross_entropy(student_logits, teacher_logits, t_s, t_t,
                                      names=("student_logits", "teacher_logits"))


#: Loss-weight schedules, in the order of the :func:`schedule_factors` vector.
WEIGHT_SCHEDULES = ("constant", "linear_growth", "linear_decay")
#: Temperature schedules: one temperature, or per-row temperatures around it (:mod:`~knowledge_distill_util.schedules`).
TEMPERATURE_SCHEDULES = ("constant", "flsw", "cwsm")


def row_temperatures(schedule: str, student_logits: flow.Tensor, teacher_logits: flow.Tensor, t_s: float,
                     t_t: float):
    """``(T_s, T_t)``: the numbers themselves for ``"constant"``, else ``[N]`` per-row temperatures of
    ``flsw_temperature``/``cwsm_temperature`` (mean ``T_s`` resp. ``T_t``; computed on detached logits)."""
    if schedule == "constant":
        return t_s, t_t
    s = student_logits.reshape(-1, student_logits.shape[-1])
    if schedule == "flsw":
        t = teacher_logits.reshape(-1, teacher_logits.shape[-1])
        rows = [flsw_temperature(s, t, base=base) for base in (t_s, t_t)]
    else:
        rows = [cwsm_temperature(s, base=base) for base in (t_s, t_t)]
    return tuple(r.reshape(tuple(student_logits.shape[:-1])) for r in rows)


def schedule_factors(step: int, total: int):
    """``[constant, linear_growth, linear_decay]`` at ``step`` of ``total`` (float32 numpy, what the trainer
    feeds the step as ``schedule_factors``)."""
    import numpy as np

    return np.array([1.0, linear_growth(step, total), linear_decay(step, total)], dtype=np.float32)


def uses_weight_schedules(args) -> bool:
    """True when a weight schedule of ``args`` is not ``"constant"`` (the trainer then feeds the factors)."""
    names = [getattr(args, "logit_weight_schedule", "constant"), getattr(args, "hidden_weight_schedule", "constant")]
    names += [term.get("schedule", "constant") for term in (getattr(args, "logit_terms", None) or [])
              if isinstance(term, dict)]
    return any(name != "constant" for name in names)


class ScheduledArgs:
    """``args`` plus ``schedule_factors`` (a ``[3]`` tensor, :func:`schedule_factors`) for one step."""

    def __init__(self, args, factors: flow.Tensor):
        self._args = args
        self.schedule_factors = factors

    def __getattr__(self, name):
        return getattr(self._args, name)


def factor(args, schedule: str):
    """The ``[]`` factor of weight schedule ``schedule`` at this step, or None (constant, or no factors fed)."""
    factors = getattr(args, "schedule_factors", None)
    if factors is None or schedule == "constant":
        return None
    return factors[WEIGHT_SCHEDULES.index(schedule)]


def _scheduled(args, kind: str, term: flow.Tensor) -> flow.Tensor:
    """``term`` times the factor of ``args.<kind>_weight_schedule`` (``kind``: ``logit`` or ``hidden``); the
    term itself when the schedule is constant (so the default numbers are exactly today's)."""
    f = factor(args, getattr(args, f"{kind}_weight_schedule", "constant"))
    return term if f is None else term * f


def labels_loss(args, student_logits: flow.Tensor, labels: flow.Tensor) -> Terms:
    """Labels only (teacher fine-tuning, the labels-only baseline, Theseus): ``CE``."""
    ce = hard_label_loss(student_logits, labels)
    return {"loss": ce, "ce": ce}


def kd_loss(args, student_logits: flow.Tensor, teacher_logits: flow.Tensor, labels: flow.Tensor) -> Terms:
    """KD: ``kd_alpha * CE + (1 - kd_alpha) * pred_distill`` (original run script: kd_alpha 0.8, T 1)."""
    ce = hard_label_loss(student_logits, labels)
    soft = soft_label_loss(args, student_logits, teacher_logits)
    return {"loss": args.kd_alpha * ce + (1.0 - args.kd_alpha) * _scheduled(args, "logit", soft), "ce": ce,
            "pred_distill": soft}


def bilstm_loss(args, student_logits: flow.Tensor, teacher_logits: flow.Tensor, labels: flow.Tensor) -> Terms:
    """Distilled-BiLSTM: ``(1 - kd_alpha) * CE + kd_alpha * pred_distill`` (original: kd_alpha 0.7)."""
    ce = hard_label_loss(student_logits, labels)
    soft = soft_label_loss(args, student_logits, teacher_logits)
    return {"loss": (1.0 - args.kd_alpha) * ce + args.kd_alpha * _scheduled(args, "logit", soft), "ce": ce,
            "pred_distill": soft}


def bert_pkd_loss(
    args,
    student_logits: flow.Tensor,
    teacher_logits: flow.Tensor,
    student_reps: Sequence[flow.Tensor],
    teacher_reps: Sequence[flow.Tensor],
    labels: flow.Tensor,
) -> Terms:
    """BERT-PKD: ``(1 - kd_alpha) * CE + kd_alpha * pred_distill + kd_beta * layer_distill``
    (original: kd_alpha 0.2, kd_beta 10)."""
    ce = hard_label_loss(student_logits, labels)
    soft = soft_label_loss(args, student_logits, teacher_logits)
    layer = layer_distill(args, student_reps, teacher_reps)
    total = ((1.0 - args.kd_alpha) * ce + args.kd_alpha * _scheduled(args, "logit", soft)
             + args.kd_beta * _scheduled(args, "hidden", layer))
    return {"loss": total, "ce": ce, "pred_distill": soft, "layer_distill": layer}


def tinybert_intermediate_loss(
    args,
    student_reps: Sequence[flow.Tensor],
    teacher_reps: Sequence[flow.Tensor],
    student_atts: Sequence[flow.Tensor],
    teacher_atts: Sequence[flow.Tensor],
) -> Terms:
    """TinyBERT stage 1 (``--intermediate_distill``): ``att_distill + layer_distill``."""
    att = att_distill(args, student_atts, teacher_atts)
    layer = layer_distill(args, student_reps, teacher_reps)
    return {"loss": _scheduled(args, "hidden", att + layer), "att_distill": att, "layer_distill": layer}


def tinybert_pred_loss(args, student_logits: flow.Tensor, teacher_logits: flow.Tensor) -> Terms:
    """TinyBERT stage 2 (``--pred_distill``): ``pred_distill``."""
    soft = soft_label_loss(args, student_logits, teacher_logits)
    return {"loss": _scheduled(args, "logit", soft), "pred_distill": soft}


def tinybert_combined_loss(
    args,
    student_logits: flow.Tensor,
    teacher_logits: flow.Tensor,
    student_reps: Sequence[flow.Tensor],
    teacher_reps: Sequence[flow.Tensor],
    student_atts: Sequence[flow.Tensor],
    teacher_atts: Sequence[flow.Tensor],
    labels: flow.Tensor,
) -> Terms:
    """TinyBERT in one stage, as the original script with ``--intermediate_distill='True'
    --pred_distill='True'``: ``att_distill + layer_distill + pred_distill``; for one logit (regression)
    the last term is the MSE between the logit and the score, as the original computes it."""
    att = att_distill(args, student_atts, teacher_atts)
    layer = layer_distill(args, student_reps, teacher_reps)
    if _is_regression(student_logits):
        pred = mseloss(student_logits.reshape(-1), labels.to(student_logits.dtype).reshape(-1))
    else:
        pred = soft_label_loss(args, student_logits, teacher_logits)  # pred_distill (or per-row temperatures)
    return {"loss": _scheduled(args, "hidden", att + layer) + _scheduled(args, "logit", pred), "att_distill": att,
            "layer_distill": layer, "pred_distill": pred}


def minilm_loss(
    args,
    student_scores: Sequence[flow.Tensor],
    teacher_scores: Sequence[flow.Tensor],
    student_values: Sequence[flow.Tensor],
    teacher_values: Sequence[flow.Tensor],
    input_mask: flow.Tensor,
) -> Terms:
    """MiniLM's deep self-attention distillation (Wang et al. 2020) of the last layers:
    ``attention_kl(s_scores[-1], t_scores[-1]) + relation_kl(s_values[-1], t_values[-1], R = heads)``,
    padding keys and query rows excluded by ``input_mask``. The value relation uses the attention heads as
    relation heads (as MiniLM does), so the widths may differ; the head counts must be equal (the recipe's
    builder checks it before training)."""
    heads = student_scores[-1].shape[1]
    attention = attention_kl(student_scores[-1], teacher_scores[-1].detach(), mask=input_mask)
    value = relation_kl(student_values[-1], teacher_values[-1], num_relation_heads=heads, mask=input_mask)
    return {"loss": _scheduled(args, "hidden", attention + value), "attention_kl": attention,
            "value_relation_kl": value}


def minilm_v2_loss(
    args,
    student_queries: Sequence[flow.Tensor],
    teacher_queries: Sequence[flow.Tensor],
    student_keys: Sequence[flow.Tensor],
    teacher_keys: Sequence[flow.Tensor],
    student_values: Sequence[flow.Tensor],
    teacher_values: Sequence[flow.Tensor],
    input_mask: flow.Tensor,
) -> Terms:
    """MiniLMv2's multi-head self-attention relation distillation (Wang et al. 2021): with
    ``R = args.num_relation_heads`` and teacher layer ``l = args.minilm_teacher_layer`` (0-based, -1 the last),
    ``relation_kl(s_q[-1], t_q[l]) + relation_kl(s_k[-1], t_k[l]) + relation_kl(s_v[-1], t_v[l])``
    (query-query, key-key and value-value relations), padding excluded by ``input_mask``; ``R`` divides both
    widths (the recipe's builder checks it before training)."""
    heads, layer = args.num_relation_heads, args.minilm_teacher_layer
    terms = {name: relation_kl(s[-1], t[layer], num_relation_heads=heads, mask=input_mask)
             for name, s, t in (("query_relation_kl", student_queries, teacher_queries),
                                ("key_relation_kl", student_keys, teacher_keys),
                                ("value_relation_kl", student_values, teacher_values))}
    total = terms["query_relation_kl"] + terms["key_relation_kl"] + terms["value_relation_kl"]
    return dict(loss=_scheduled(args, "hidden", total), **terms)


def distilbert_loss(
    args,
    student_logits: flow.Tensor,
    teacher_logits: flow.Tensor,
    student_reps: Sequence[flow.Tensor],
    teacher_reps: Sequence[flow.Tensor],
    input_mask: flow.Tensor,
    labels: flow.Tensor,
) -> Terms:
    """DistilBERT (Sanh et al. 2019): ``logit_weight * kl_div(s / T, t / T) * T**2`` (batch mean, DistilBERT's
    ``alpha_ce`` term) ``+ hard_label_weight * CE`` (its ``alpha_mlm``, here the task's labels) ``+
    hidden_weight * hidden_cosine(s_reps[-1], t_reps[-1])`` (its ``alpha_cos``: one minus the cosine of the
    last hidden states, padding excluded by ``input_mask``). For one logit (regression) the soft term is the
    MSE of the two predictions."""
    ce = hard_label_loss(student_logits, labels)
    if _is_regression(student_logits):
        soft = mseloss(student_logits, teacher_logits.detach())
    else:
        t_s, t_t = row_temperatures(getattr(args, "temperature_schedule", "constant"), student_logits,
                                    teacher_logits, *resolve_temperatures(args))
        soft = kl_div(student_logits, teacher_logits, student_temperature=t_s, teacher_temperature=t_t,
                      temperature_scaling=True)
    cosine = hidden_cosine(student_reps[-1], teacher_reps[-1].detach(), mask=input_mask)
    total = (args.logit_weight * _scheduled(args, "logit", soft) + args.hard_label_weight * ce
             + args.hidden_weight * _scheduled(args, "hidden", cosine))
    return {"loss": total, "kl_div": soft, "ce": ce, "hidden_cosine": cosine}


def pkd_layer_pairs(student_layers: int, teacher_layers: int, strategy: str):
    """``[(student_rep, teacher_rep), ...]``: indices into the ``reps`` lists (0 = embeddings) of BERT-PKD's
    patience pairs, one per intermediate student layer ``k = 1 .. Ls - 1``: ``"skip"`` pairs it with teacher
    layer ``k * Lt / Ls``, ``"last"`` with ``Lt - Ls + k`` (the last layers before the top; the top layers
    are left to the logits).

    >>> pkd_layer_pairs(3, 12, "skip"), pkd_layer_pairs(3, 12, "last")
    ([(1, 4), (2, 8)], [(1, 10), (2, 11)])
    """
    if strategy == "skip":
        return [(k, k * (teacher_layers // student_layers)) for k in range(1, student_layers)]
    return [(k, teacher_layers - student_layers + k) for k in range(1, student_layers)]


def pkd_patience_loss(
    args,
    student_logits: flow.Tensor,
    teacher_logits: flow.Tensor,
    student_reps: Sequence[flow.Tensor],
    teacher_reps: Sequence[flow.Tensor],
    labels: flow.Tensor,
) -> Terms:
    """BERT-PKD as published (Sun et al. 2019, eq. 7): ``(1 - kd_alpha) * CE + kd_alpha * L_DS + kd_beta *
    L_PT``, ``L_DS`` the soft cross entropy at ``T`` summed over the classes and averaged over the batch,
    ``L_PT = sum over the pairs of pkd_loss(s_cls, t_cls)`` (normalised [CLS] vectors, :func:`pkd_layer_pairs`
    with ``args.pkd_strategy``). For one logit the soft term is the MSE of the two predictions."""
    ce = hard_label_loss(student_logits, labels)
    if _is_regression(student_logits):
        soft = mseloss(student_logits, teacher_logits.detach())
    else:
        t_s, t_t = row_temperatures(getattr(args, "temperature_schedule", "constant"), student_logits,
                                    teacher_logits, *resolve_temperatures(args))
        soft = soft_cross_entropy(student_logits, teacher_logits, student_temperature=t_s, teacher_temperature=t_t,
                                  reduction="batchmean")
    pairs = pkd_layer_pairs(len(student_reps) - 1, len(teacher_reps) - 1, args.pkd_strategy)
    patience = None
    for s, t in pairs:
        term = pkd_loss(student_reps[s][:, 0], teacher_reps[t][:, 0].detach())
        patience = term if patience is None else patience + term
    total = ((1.0 - args.kd_alpha) * ce + args.kd_alpha * _scheduled(args, "logit", soft)
             + args.kd_beta * _scheduled(args, "hidden", patience))
    return {"loss": total, "ce": ce, "soft_ce": soft, "pkd_loss": patience}


@dataclass(frozen=True)
class Objective:
    """A loss function ``fn(args, **tensors) -> Terms`` and the names of the terms it returns.

    The tensors it reads are the parameters of ``fn`` after ``args``; ``terms[0]`` is ``"loss"``, the total.
    """

    fn: Callable[..., Terms]
    terms: Tuple[str, ...]

    @property
    def name(self) -> str:
        return self.fn.__name__

    @property
    def inputs(self) -> Tuple[str, ...]:
        """The tensor arguments of :attr:`fn` (every parameter after ``args``)."""
        return tuple(list(inspect.signature(self.fn).parameters)[1:])

    @property
    def teacher_outputs(self) -> Tuple[str, ...]:
        """Which teacher outputs (``logits``, ``reps``, ``atts``, ``scores``, ``queries``, ``keys``,
        ``values``) the loss reads."""
        return tuple(n[len("teacher_"):] for n in self.inputs if n.startswith("teacher_"))

    @property
    def reads_layers(self) -> bool:
        """True when the loss reads hidden states or attentions (of either model)."""
        return any(n.endswith(("_reps", "_atts")) for n in self.inputs)

    @property
    def reads_attention_details(self) -> bool:
        """True when the loss reads attention scores, queries, keys or values: the models are
        then called with ``output_attention_scores=True, output_qkv=True``."""
        return any(n.endswith(("_scores", "_queries", "_keys", "_values")) for n in self.inputs)

    @property
    def can_cache_teacher_logits(self) -> bool:
        """True when the teacher's logits are all it reads: they can be computed once, before training."""
        return self.teacher_outputs == ("logits",)

    def __call__(self, args, **tensors) -> Terms:
        return self.fn(args, **{name: tensors[name] for name in self.inputs})


LABELS = Objective(labels_loss, ("loss", "ce"))
KD = Objective(kd_loss, ("loss", "ce", "pred_distill"))
BILSTM = Objective(bilstm_loss, ("loss", "ce", "pred_distill"))
BERT_PKD = Objective(bert_pkd_loss, ("loss", "ce", "pred_distill", "layer_distill"))
TINYBERT_INTERMEDIATE = Objective(tinybert_intermediate_loss, ("loss", "att_distill", "layer_distill"))
TINYBERT_PRED = Objective(tinybert_pred_loss, ("loss", "pred_distill"))
TINYBERT_COMBINED = Objective(tinybert_combined_loss, ("loss", "att_distill", "layer_distill", "pred_distill"))
MINILM = Objective(minilm_loss, ("loss", "attention_kl", "value_relation_kl"))
MINILM_V2 = Objective(minilm_v2_loss, ("loss", "query_relation_kl", "key_relation_kl", "value_relation_kl"))
DISTILBERT = Objective(distilbert_loss, ("loss", "kl_div", "ce", "hidden_cosine"))
PKD_PATIENCE = Objective(pkd_patience_loss, ("loss", "ce", "soft_ce", "pkd_loss"))
