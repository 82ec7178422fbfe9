"""The objectives of TinyBERT and MiniLM (:mod:`.objectives` names them): attentions (maps, scores, relations
of queries, keys and values) and hidden states matched layer by layer, and TinyBERT's prediction stage.

Every loss is ``loss(args, **tensors) -> {"loss": total, term: value, ...}``, the tensors named as in
:mod:`.objectives`.
"""
from typing import Sequence

import oneflow as flow

from ..distill import att_distill, layer_distill
from ..functional import attention_kl, mseloss, relation_kl
from .kd_objectives import Terms, is_regression, soft_label_loss
from .objective_schedules import scheduled

__all__ = ["tinybert_intermediate_loss", "tinybert_pred_loss", "tinybert_combined_loss", "minilm_loss",
           "minilm_v2_loss"]


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
    return {"loss": scheduled(args, "hidden", att + layer), "att_distill": att, "layer_distill": layer}


def tinybert_pred_loss(args, student_logits: flow.Tensor, teacher_logits: flow.Tensor) -> Terms:
    """TinyBERT stage 2 (``--pred_distill``): ``pred_distill``."""
    soft = soft_label_loss(args, student_logits, teacher_logits)
    return {"loss": scheduled(args, "logit", soft), "pred_distill": soft}


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
    if is_regression(student_logits):
        pred = mseloss(student_logits.reshape(-1), labels.to(student_logits.dtype).reshape(-1))
    else:
        pred = soft_label_loss(args, student_logits, teacher_logits)  # pred_distill (or per-row temperatures)
    return {"loss": scheduled(args, "hidden", att + layer) + scheduled(args, "logit", pred), "att_distill": att,
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
    return {"loss": scheduled(args, "hidden", attention + value), "attention_kl": attention,
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
    return dict(loss=scheduled(args, "hidden", total), **terms)
