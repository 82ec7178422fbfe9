"""The objective of recipe ``distilbert_mlm`` (:mod:`.masked_lm`: its formula, data and outputs): the three
terms of DistilBERT's masked-LM distillation (:func:`masked_lm_distill_loss`) and the module the
:class:`~knowledge_distill_util.engine.Distiller` trains (:class:`MaskedLMDistillation`: the student, with the
frozen teacher or the top-k cache at its side).

Shapes: ``M`` masked positions of a batch ``[B, L]``, vocabulary ``V``, hidden size ``H``.
"""
from typing import Dict, Optional, Sequence, Union

import oneflow as flow
import oneflow.nn as nn
import oneflow.nn.functional as F

from ..data.pregenerated import IGNORE_LABEL
from ..functional import hidden_cosine
from ..fused_linear import fused_linear_distill_loss
from ..models import BertForMaskedLM
from ..sparse_losses import sparse_kl_div
from ..config.schema import TrainConfig

__all__ = ["masked_lm_distill_loss", "TeacherMaskedLogits", "MaskedLMDistillation", "NoTeacher", "student_adaptor",
           "teacher_adaptor"]

Sparse = Sequence[flow.Tensor]


def masked_lm_distill_loss(student_head_hidden: flow.Tensor, weight: flow.Tensor, bias: Optional[flow.Tensor],
                           teacher: Union[flow.Tensor, Sparse], labels: flow.Tensor, student_hidden: flow.Tensor,
                           teacher_hidden: flow.Tensor, input_mask: flow.Tensor, *, alpha_ce: float = 5.0,
                           alpha_mlm: float = 2.0, alpha_cos: float = 1.0, temperature: float = 2.0,
                           fused: bool = True, chunk_size: Optional[int] = None) -> Dict[str, flow.Tensor]:
    """The three terms of the module doc and their weighted sum ``"loss"`` (terms with weight 0 are left out).

    Args:
        student_head_hidden: ``[M, H]`` the student head's transformed hidden states at the masked positions.
        weight, bias: the decoder ``[V, H]`` (the word embeddings) and ``[V]`` (or None).
        teacher: the teacher's logits ``[M, V]``, or ``(topk_values [M, k], topk_ids [M, k])``.
        labels: ``[M]`` the masked tokens' ids.
        student_hidden, teacher_hidden: ``[B, L, H]`` last hidden states; input_mask: ``[B, L]``.
        fused: the dense soft term through the fused kernel (True) or the plain ``kl_div`` of built logits.
    """
    from ..functional import kl_div

    terms, total = {}, None
    logits = None
    if alpha_mlm > 0 or not isinstance(teacher, flow.Tensor) or not fused:
        logits = flow.matmul(student_head_hidden, weight, transpose_b=True)
        logits = logits if bias is None else logits + bias
    if alpha_ce > 0:
        if not isinstance(teacher, flow.Tensor):
            values, ids = teacher
            terms["kl_div"] = sparse_kl_div(logits, values, ids, temperature=temperature, missing="zero",
                                            reduction="batchmean", temperature_scaling=True)
        elif fused:
            terms["kl_div"] = fused_linear_distill_loss(student_head_hidden, weight, bias, teacher.detach(),
                                                        loss="kl_div", temperature=temperature,
                                                        reduction="batchmean", temperature_scaling=True,
                                                        chunk_size=chunk_size)
        else:
            terms["kl_div"] = kl_div(logits, teacher.detach(), student_temperature=temperature,
                                     teacher_temperature=temperature, reduction="batchmean",
                                     temperature_scaling=True)
    if alpha_mlm > 0:
        terms["mlm"] = F.cross_entropy(logits, labels.to(flow.int64))
    if alpha_cos > 0:
        terms["hidden_cosine"] = hidden_cosine(student_hidden, teacher_hidden.detach(), mask=input_mask)
    for name, alpha in (("kl_div", alpha_ce), ("mlm", alpha_mlm), ("hidden_cosine", alpha_cos)):
        if name in terms:
            total = terms[name] * alpha if total is None else total + terms[name] * alpha
    if total is None:
        raise ValueError("alpha_ce, alpha_mlm and alpha_cos are all 0: nothing to train; give one a weight > 0")
    return dict(loss=total, **terms)


def _masked_rows(labels: flow.Tensor) -> flow.Tensor:
    """The flat indices ``[M]`` of the masked positions of ``labels`` ``[B, L]`` (row-major order)."""
    return flow.nonzero(labels.reshape(-1) != IGNORE_LABEL).reshape(-1)


def _last_hidden(bert, input_ids, input_mask, token_type_ids) -> flow.Tensor:
    return bert(input_ids, input_mask, token_type_ids, output_hidden_states=True).hidden_states[-1]


class TeacherMaskedLogits(nn.Module):
    """The teacher's logits at the masked positions ``[M, V]`` of a corpus batch (what the top-k cache keeps)."""

    def __init__(self, teacher: BertForMaskedLM):
        super().__init__()
        self.teacher = teacher

    def forward(self, input_ids, input_mask, token_type_ids, masked_lm_labels, position=None):
        hidden = _last_hidden(self.teacher.bert, input_ids, input_mask, token_type_ids)
        rows = flow.index_select(hidden.reshape(-1, hidden.shape[-1]), 0, _masked_rows(masked_lm_labels))
        return self.teacher.cls(rows, self.teacher.bert.word_embedding_table())


class MaskedLMDistillation(nn.Module):
    """The Distiller's "student": the student :class:`BertForMaskedLM` (``self.mlm``, the only parameters)
    computing the loss against the frozen teacher (held outside the module's parameters and state) or the
    top-k cache; ``forward(batch...) -> {"loss", terms...}`` (see :func:`masked_lm_distill_loss`)."""

    def __init__(self, student: BertForMaskedLM, teacher: BertForMaskedLM, cfg: TrainConfig, cache=None,
                 batch_size: int = 1):
        super().__init__()
        self.mlm = student
        self.__dict__["_teacher"] = teacher  # not a submodule: not trained, not checkpointed
        self.cache, self.batch_size = cache, batch_size
        self.weights = dict(alpha_ce=cfg.logit_weight, alpha_mlm=cfg.hard_label_weight,
                            alpha_cos=cfg.hidden_weight, temperature=cfg.temperature)

    def _teacher_side(self, input_ids, input_mask, token_type_ids, rows, position):
        teacher, need_hidden = self._teacher, self.weights["alpha_cos"] > 0
        hidden = logits = None
        with flow.no_grad():
            if need_hidden or self.cache is None:
                hidden = _last_hidden(teacher.bert, input_ids, input_mask, token_type_ids)
            if self.cache is None:
                logits = teacher.cls(flow.index_select(hidden.reshape(-1, hidden.shape[-1]), 0, rows),
                                     teacher.bert.word_embedding_table())
        if self.cache is not None:
            index = int(position[0].item()) // self.batch_size
            values, ids = self.cache[index]
            if values.shape[0] != rows.shape[0]:
                raise ValueError(f"the top-k logits cache {self.cache.path} holds {values.shape[0]} masked positions "
                                 f"for batch {index} but it has {rows.shape[0]}; it was written for another corpus "
                                 f"or batch size: choose another --teacher_logits_cache")
            logits = (values.to(input_ids.device), ids.to(input_ids.device))
        return logits, hidden

    def forward(self, input_ids, input_mask, token_type_ids, masked_lm_labels, position=None):
        rows = _masked_rows(masked_lm_labels)
        hidden = _last_hidden(self.mlm.bert, input_ids, input_mask, token_type_ids)
        head = self.mlm.cls.transform(flow.index_select(hidden.reshape(-1, hidden.shape[-1]), 0, rows))
        teacher_logits, teacher_hidden = self._teacher_side(input_ids, input_mask, token_type_ids, rows, position)
        labels = flow.index_select(masked_lm_labels.reshape(-1), 0, rows)
        terms = masked_lm_distill_loss(head, self.mlm.bert.word_embedding_table(), self.mlm.cls.bias, teacher_logits,
                                       labels, hidden, teacher_hidden if teacher_hidden is not None else hidden,
                                       input_mask, **self.weights)
        self.last_terms = {k: v.detach() for k, v in terms.items()}  # the Distiller logs their sum only
        return terms


class NoTeacher(nn.Module):
    """The Distiller's teacher slot: the real teacher runs inside :class:`MaskedLMDistillation`."""

    def forward(self, *args, **kwargs):
        return None


def student_adaptor(batch, outputs) -> Dict:
    """The Distiller's student adaptor: :class:`MaskedLMDistillation`'s weighted sum as the one loss term."""
    return {"losses": {k: v for k, v in outputs.items() if k == "loss"}}


def teacher_adaptor(batch, outputs) -> Dict:
    """The Distiller's teacher adaptor: nothing (:class:`NoTeacher` returns None)."""
    return {}
