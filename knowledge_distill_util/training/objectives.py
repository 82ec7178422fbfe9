"""The training objectives of the recipes, exactly as the original example scripts combined the operators.

Each objective is one small pure function ``loss(args, **tensors) -> {"loss": total, term: value, ...}``
built on :func:`~knowledge_distill_util.pred_distill`, :func:`~knowledge_distill_util.layer_distill` and
:func:`~knowledge_distill_util.att_distill`, wrapped in an :class:`Objective` that names its terms.
``args`` is any object with the attributes the formula reads (``kd_alpha``, ``kd_beta``, temperatures:
the run's :class:`~knowledge_distill_util.config.schema.TrainConfig`). Tensor arguments, by name:

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

The formulas live by family: :mod:`.kd_objectives` (hard and soft labels, BERT-PKD, DistilBERT) and
:mod:`.attention_objectives` (TinyBERT, MiniLM); :mod:`.custom` builds one from a configuration.

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

Schedules (any objective): per-row temperatures of the soft-label term and step-dependent weights of the
soft-label and intermediate terms, :mod:`.objective_schedules`.
"""
import inspect
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

from .attention_objectives import (minilm_loss, minilm_v2_loss, tinybert_combined_loss, tinybert_intermediate_loss,
                                   tinybert_pred_loss)
from ..engine.config import DistillationConfig
from . import stage_configs as configs
from .kd_objectives import (Terms, bert_pkd_loss, bilstm_loss, distilbert_loss, kd_loss, labels_loss,
                            pkd_patience_loss)

__all__ = ["Objective", "LABELS", "KD", "BILSTM", "BERT_PKD", "TINYBERT_INTERMEDIATE", "TINYBERT_PRED",
           "TINYBERT_COMBINED", "MINILM", "MINILM_V2", "DISTILBERT", "PKD_PATIENCE"]


@dataclass(frozen=True)
class Objective:
    """A loss function ``fn(args, **tensors) -> Terms`` and the names of the terms it returns.

    The tensors it reads are the parameters of ``fn`` after ``args``; ``terms[0]`` is ``"loss"``, the total.
    """

    fn: Callable[..., Terms]
    terms: Tuple[str, ...]
    #: ``config(args, regression) -> DistillationConfig`` (:mod:`.stage_configs`): the same terms as the engine's
    #: configuration, or None (the stage then runs :attr:`fn` as the Distiller's ``objective``)
    config: Optional[Callable[..., Optional[DistillationConfig]]] = None

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


LABELS = Objective(labels_loss, ("loss", "ce"), configs.labels_config)
KD = Objective(kd_loss, ("loss", "ce", "pred_distill"), configs.kd_config)
BILSTM = Objective(bilstm_loss, ("loss", "ce", "pred_distill"), configs.bilstm_config)
BERT_PKD = Objective(bert_pkd_loss, ("loss", "ce", "pred_distill", "layer_distill"), configs.bert_pkd_config)
TINYBERT_INTERMEDIATE = Objective(tinybert_intermediate_loss, ("loss", "att_distill", "layer_distill"),
                                  configs.tinybert_intermediate_config)
TINYBERT_PRED = Objective(tinybert_pred_loss, ("loss", "pred_distill"), configs.tinybert_pred_config)
TINYBERT_COMBINED = Objective(tinybert_combined_loss, ("loss", "att_distill", "layer_distill", "pred_distill"),
                              configs.tinybert_combined_config)
MINILM = Objective(minilm_loss, ("loss", "attention_kl", "value_relation_kl"), configs.minilm_config)
MINILM_V2 = Objective(minilm_v2_loss, ("loss", "query_relation_kl", "key_relation_kl", "value_relation_kl"),
                      configs.minilm_v2_config)
DISTILBERT = Objective(distilbert_loss, ("loss", "kl_div", "ce", "hidden_cosine"), configs.distilbert_config)
PKD_PATIENCE = Objective(pkd_patience_loss, ("loss", "ce", "soft_ce", "pkd_loss"), configs.pkd_patience_config)
