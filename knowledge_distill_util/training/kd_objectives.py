"""The objectives of the KD family (:mod:`.objectives` names them): a hard-label term on the task's labels
plus a soft-label term on the teacher's logits; BERT-PKD (both forms) and DistilBERT add a hidden-state term.

Every loss is ``loss(args, **tensors) -> {"loss": total, term: value, ...}`` (:data:`Terms`); the tensors
are named as in :mod:`.objectives`. :func:`hard_label_loss` and :func:`soft_label_loss` are the terms the
other objectives (:mod:`.attention_objectives`, :mod:`.custom`) reuse.

Regression (one logit): the hard-label term is the MSE between the logit and the score, and the
soft-label term is the MSE between the student's and the teacher's predictions
(``pred_distill``'s softmax over one logit is constant, so it would carry no signal).
"""
from typing import Dict, Sequence

import oneflow as flow
import oneflow.nn.functional as F

from ..distill import layer_distill, pred_distill, resolve_temperatures
from ..functional import (checked_soft_cross_entropy, hidden_cosine, kl_div, mseloss, patience_layer_pairs,
                          soft_cross_entropy)
from ..functional import pkd_patience_loss as patience_loss
from .objective_schedules import row_temperatures, scheduled

__all__ = ["Terms", "is_regression", "hard_label_loss", "soft_label_loss", "labels_loss", "kd_loss", "bilstm_loss",
           "bert_pkd_loss", "distilbert_loss", "pkd_layer_pairs", "pkd_patience_loss"]

#: What an objective returns: ``{"loss": total, term: value, ...}``.
Terms = Dict[str, flow.Tensor]


def is_regression(logits: flow.Tensor) -> bool:
    """True for one logit (``[..., 1]``: a regression task)."""
    return logits.shape[-1] == 1


def hard_label_loss(logits: flow.Tensor, labels: flow.Tensor) -> flow.Tensor:
    """``CE(logits, labels)`` (mean over the batch); for one logit, ``mean((logit - score)**2)``."""
    if is_regression(logits):
        return mseloss(logits.reshape(-1), labels.to(logits.dtype).reshape(-1))
    return F.cross_entropy(logits, labels.to(flow.int64))


def soft_label_loss(args, student_logits: flow.Tensor, teacher_logits: flow.Tensor) -> flow.Tensor:
    """``pred_distill(args, student, teacher)``; for one logit the MSE between the two predictions."""
    if is_regression(student_logits):
        return mseloss(student_logits, teacher_logits.detach())
    schedule = getattr(args, "temperature_schedule", "constant")
    if schedule == "constant":
        return pred_distill(args, student_logits, teacher_logits)
    t_s, t_t = row_temperatures(schedule, student_logits, teacher_logits, *resolve_temperatures(args))
    return checked_soft_cross_entropy(student_logits, teacher_logits, t_s, t_t,
                                      names=("student_logits", "teacher_logits"))


def labels_loss(args, student_logits: flow.Tensor, labels: flow.Tensor) -> Terms:
    """Labels only (teacher fine-tuning, the labels-only baseline, Theseus): ``CE``."""
    ce = hard_label_loss(student_logits, labels)
    return {"loss": ce, "ce": ce}


def kd_loss(args, student_logits: flow.Tensor, teacher_logits: flow.Tensor, labels: flow.Tensor) -> Terms:
    """KD: ``kd_alpha * CE + (1 - kd_alpha) * pred_distill`` (original run script: kd_alpha 0.8, T 1)."""
    ce = hard_label_loss(student_logits, labels)
    soft = soft_label_loss(args, student_logits, teacher_logits)
    return {"loss": args.kd_alpha * ce + (1.0 - args.kd_alpha) * scheduled(args, "logit", soft), "ce": ce,
            "pred_distill": soft}


def bilstm_loss(args, student_logits: flow.Tensor, teacher_logits: flow.Tensor, labels: flow.Tensor) -> Terms:
    """Distilled-BiLSTM: ``(1 - kd_alpha) * CE + kd_alpha * pred_distill`` (original: kd_alpha 0.7)."""
    ce = hard_label_loss(student_logits, labels)
    soft = soft_label_loss(args, student_logits, teacher_logits)
    return {"loss": (1.0 - args.kd_alpha) * ce + args.kd_alpha * scheduled(args, "logit", soft), "ce": ce,
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
    total = ((1.0 - args.kd_alpha) * ce + args.kd_alpha * scheduled(args, "logit", soft)
             + args.kd_beta * scheduled(args, "hidden", layer))
    return {"loss": total, "ce": ce, "pred_distill": soft, "layer_distill": layer}


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
    if is_regression(student_logits):
        soft = mseloss(student_logits, teacher_logits.detach())
    else:
        t_s, t_t = row_temperatures(getattr(args, "temperature_schedule", "constant"), student_logits,
                                    teacher_logits, *resolve_temperatures(args))
        soft = kl_div(student_logits, teacher_logits, student_temperature=t_s, teacher_temperature=t_t,
                      temperature_scaling=True)
    cosine = hidden_cosine(student_reps[-1], teacher_reps[-1].detach(), mask=input_mask)
    total = (args.logit_weight * scheduled(args, "logit", soft) + args.hard_label_weight * ce
             + args.hidden_weight * scheduled(args, "hidden", cosine))
    return {"loss": total, "kl_div": soft, "ce": ce, "hidden_cosine": cosine}


def pkd_layer_pairs(student_layers: int, teacher_layers: int, strategy: str):
    """``[(student_rep, teacher_rep), ...]``: BERT-PKD's patience pairs of layer counts
    (:func:`~knowledge_distill_util.functional.patience_layer_pairs` of the list lengths).

    >>> pkd_layer_pairs(3, 12, "skip"), pkd_layer_pairs(3, 12, "last")
    ([(1, 4), (2, 8)], [(1, 10), (2, 11)])
    """
    return patience_layer_pairs(student_layers + 1, teacher_layers + 1, strategy)


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
    ``L_PT = sum over the pairs of pkd_loss(s_cls, t_cls)`` (normalised [CLS] vectors,
    :func:`~knowledge_distill_util.functional.pkd_patience_loss` with ``args.pkd_strategy``). For one logit the soft
    term is the MSE of the two predictions."""
    ce = hard_label_loss(student_logits, labels)
    if is_regression(student_logits):
        soft = mseloss(student_logits, teacher_logits.detach())
    else:
        t_s, t_t = row_temperatures(getattr(args, "temperature_schedule", "constant"), student_logits,
                                    teacher_logits, *resolve_temperatures(args))
        soft = soft_cross_entropy(student_logits, teacher_logits, student_temperature=t_s, teacher_temperature=t_t,
                                  reduction="batchmean")
    patience = patience_loss(student_reps, teacher_reps, strategy=args.pkd_strategy)
    total = ((1.0 - args.kd_alpha) * ce + args.kd_alpha * scheduled(args, "logit", soft)
             + args.kd_beta * scheduled(args, "hidden", patience))
    return {"loss": total, "ce": ce, "soft_ce": soft, "pkd_loss": patience}
