"""The recipes' objectives as :class:`~knowledge_distill_util.engine.DistillationConfig` s: what the
:class:`~knowledge_distill_util.engine.Distiller` computes for a recipe stage (:mod:`.trainer`).

Each function maps the run's ``args`` (``kd_alpha``, ``kd_beta``, the temperatures and schedules) and whether the
task is a regression (one logit) to the configuration whose terms are the objective's formula, term for term:

| objective | configuration |
|---|---|
| ``LABELS`` | ``hard_label_weight=1``, no logit loss, no teacher |
| ``KD`` | ``soft_cross_entropy`` (``pred_distill``) at ``1 - kd_alpha``, hard labels at ``kd_alpha`` |
| ``BILSTM`` | ``soft_cross_entropy`` at ``kd_alpha``, hard labels at ``1 - kd_alpha`` |
| ``TINYBERT_PRED`` | ``soft_cross_entropy`` at 1 |
| ``BERT_PKD`` | as ``BILSTM``, plus ``layer_distill_loss`` over every hidden state at ``kd_beta`` |
| ``TINYBERT_INTERMEDIATE`` | ``att_distill_loss`` over every attention + ``layer_distill_loss``, no logit loss |
| ``TINYBERT_COMBINED`` | both matches + ``soft_cross_entropy`` at 1 (regression: hard labels at 1) |
| ``PKD_PATIENCE`` | ``soft_cross_entropy`` (``reduction="batchmean"``) at ``kd_alpha``, hard labels at ``1 - kd_alpha``, ``pkd_patience_loss`` at ``kd_beta`` |
| ``DISTILBERT`` | ``kl_div`` with ``temperature_scaling`` at ``logit_weight``, hard labels at ``hard_label_weight``, ``hidden_cosine`` of the last hidden states (``layer_S``/``layer_T`` -1) at ``hidden_weight`` |
| ``MINILM`` | ``attention_kl`` of the last layers' attention scores + ``relation_kl`` of their values (``num_relation_heads``: the student's heads), no logit loss |
| ``MINILM_V2`` | ``relation_kl`` of the queries, the keys and the values (student layer -1, teacher layer ``minilm_teacher_layer``, ``num_relation_heads``), no logit loss |

For one logit (regression) the soft term is ``hidden_mse`` of the two predictions (``mseloss``), as the objectives
compute it. The temperatures are :func:`~knowledge_distill_util.resolve_temperatures` 's, the per-row schedule
``temperature_schedule`` (``constant`` is ``"none"``), the weight schedules ``logit_weight_schedule`` (the soft
term's) and ``hidden_weight_schedule`` (the matches'). MiniLM's models are called with
``output_attention_scores`` and ``output_qkv`` (``DistillationConfig.forward_kwargs``): the default adaptor then
reads ``attention`` from the scores (before the softmax, padding at -10000) and ``query``, ``key``, ``value`` from the
projections; the losses take the batch's ``input_mask``.
"""
from typing import Any, Dict, List

from ..distill import resolve_temperatures
from ..engine.config import DistillationConfig

__all__ = ["labels_config", "kd_config", "bilstm_config", "tinybert_pred_config", "bert_pkd_config",
           "tinybert_intermediate_config", "tinybert_combined_config", "distilbert_config",
           "pkd_patience_config", "minilm_config", "minilm_v2_config"]

#: The models' forward flags of the MiniLM stages (and of the objectives reading attention details,
#: :mod:`.loss_step`): attention scores and the query/key/value projections.
ATTENTION_DETAILS = {"output_attention_scores": True, "output_qkv": True}


def _matches(*pairs, options=None) -> List[Dict[str, Any]]:
    """Layer-list matches of every layer: ``(feature, loss, weight)`` each (with ``options``, when given)."""
    return [dict({"layer_S": "all", "layer_T": "all", "feature": feature, "loss": loss, "weight": weight},
                 **({} if options is None else {"options": options})) for feature, loss, weight in pairs]


def _soft(args, regression: bool, logit_weight: float, hard_label_weight: float, matches=(),
          logit_options=None) -> DistillationConfig:
    t_s, t_t = resolve_temperatures(args)
    schedule = getattr(args, "temperature_schedule", "constant")
    return DistillationConfig(
        logit_loss="hidden_mse" if regression else "soft_cross_entropy",
        logit_options={} if regression or logit_options is None else logit_options, student_temperature=t_s,
        teacher_temperature=t_t, temperature_scheduler="none" if schedule == "constant" else schedule,
        logit_weight=logit_weight, logit_weight_schedule=getattr(args, "logit_weight_schedule", "constant"),
        hard_label_weight=hard_label_weight, intermediate_matches=list(matches),
        intermediate_weight_schedule=getattr(args, "hidden_weight_schedule", "constant"))


def labels_config(args, regression: bool) -> DistillationConfig:
    """``CE`` (one logit: the MSE with the scores)."""
    return DistillationConfig(logit_weight=0.0, hard_label_weight=1.0)


def kd_config(args, regression: bool) -> DistillationConfig:
    """``kd_alpha * CE + (1 - kd_alpha) * pred_distill``."""
    return _soft(args, regression, 1.0 - args.kd_alpha, args.kd_alpha)


def bilstm_config(args, regression: bool) -> DistillationConfig:
    """``(1 - kd_alpha) * CE + kd_alpha * pred_distill``."""
    return _soft(args, regression, args.kd_alpha, 1.0 - args.kd_alpha)


def tinybert_pred_config(args, regression: bool) -> DistillationConfig:
    """``pred_distill``."""
    return _soft(args, regression, 1.0, 0.0)


def bert_pkd_config(args, regression: bool) -> DistillationConfig:
    """``(1 - kd_alpha) * CE + kd_alpha * pred_distill + kd_beta * layer_distill``."""
    return _soft(args, regression, args.kd_alpha, 1.0 - args.kd_alpha,
                 _matches(("hidden", "layer_distill_loss", args.kd_beta)))


def tinybert_intermediate_config(args, regression: bool) -> DistillationConfig:
    """``att_distill + layer_distill``."""
    return _soft(args, regression, 0.0, 0.0,
                 _matches(("attention", "att_distill_loss", 1.0), ("hidden", "layer_distill_loss", 1.0)))


def tinybert_combined_config(args, regression: bool) -> DistillationConfig:
    """``att_distill + layer_distill + pred_distill``; one logit: the last term is the MSE with the scores."""
    matches = _matches(("attention", "att_distill_loss", 1.0), ("hidden", "layer_distill_loss", 1.0))
    if not regression:
        return _soft(args, regression, 1.0, 0.0, matches)
    config = _soft(args, regression, 0.0, 1.0, matches)
    config.hard_label_weight_schedule = config.logit_weight_schedule  # the MSE with the scores takes the soft term's
    return config


def distilbert_config(args, regression: bool) -> DistillationConfig:
    """``logit_weight * kl_div(T**2) + hard_label_weight * CE + hidden_weight * hidden_cosine`` of the last hidden
    states (padding excluded by the batch's ``input_mask``)."""
    config = _soft(args, regression, args.logit_weight, args.hard_label_weight,
                   [{"layer_S": -1, "layer_T": -1, "feature": "hidden", "loss": "hidden_cosine",
                     "weight": args.hidden_weight}])
    if not regression:
        config.logit_loss, config.temperature_scaling = "kl_div", True
    return config


def pkd_patience_config(args, regression: bool) -> DistillationConfig:
    """BERT-PKD as published: ``(1 - kd_alpha) * CE + kd_alpha * soft CE`` (summed over the classes, averaged over
    the batch) ``+ kd_beta * pkd_patience_loss`` (the [CLS] vectors of the ``pkd_strategy`` pairs)."""
    return _soft(args, regression, args.kd_alpha, 1.0 - args.kd_alpha,
                 _matches(("hidden", "pkd_patience_loss", args.kd_beta), options={"strategy": args.pkd_strategy}),
                 logit_options={"reduction": "batchmean"})


def _last_layers(feature: str, loss: str, teacher_layer: int = -1, **options) -> Dict[str, Any]:
    return {"layer_S": -1, "layer_T": teacher_layer, "feature": feature, "loss": loss, "weight": 1.0,
            "options": options}


def _relations(args, matches) -> DistillationConfig:
    return DistillationConfig(logit_weight=0.0, intermediate_matches=list(matches), forward_kwargs=ATTENTION_DETAILS,
                              intermediate_weight_schedule=getattr(args, "hidden_weight_schedule", "constant"))


def minilm_config(args, regression: bool) -> DistillationConfig:
    """``attention_kl`` of the last layers' scores ``+ relation_kl`` of their values, one relation head per attention
    head (``student_num_attention_heads``, the teacher's: the recipe checks it)."""
    return _relations(args, [_last_layers("attention", "attention_kl"),
                             _last_layers("value", "relation_kl", num_relation_heads=args.student_num_attention_heads)])


def minilm_v2_config(args, regression: bool) -> DistillationConfig:
    """``relation_kl`` of the queries, the keys and the values: the student's last layer, the teacher's
    ``minilm_teacher_layer``, ``num_relation_heads`` relation heads."""
    return _relations(args, [_last_layers(feature, "relation_kl", args.minilm_teacher_layer,
                                          num_relation_heads=args.num_relation_heads)
                             for feature in ("query", "key", "value")])
