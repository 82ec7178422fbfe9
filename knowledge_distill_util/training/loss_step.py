"""A recipe stage's objective as a module: :class:`LossStep` (the student, the frozen teacher and the
:class:`~.objectives.Objective` reading ``args``), the Distiller's ``objective`` for the stages that are not
:class:`~knowledge_distill_util.engine.DistillationConfig` s (:mod:`.trainer`)."""
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import numpy as np
import oneflow as flow
import oneflow.nn as nn

from ..engine.batches import Batch
from .objective_schedules import ScheduledArgs, uses_weight_schedules
from .objectives import Objective
from .stage_configs import ATTENTION_DETAILS
from .teacher_outputs import CacheLayout

__all__ = ["LossStep"]


def _details(side: str, out) -> Dict:
    """``{side}_logits/_reps/_atts/_scores/_queries/_keys/_values`` of a BERT's :class:`~..models.BertOutput`
    (called with :data:`~.stage_configs.ATTENTION_DETAILS`): per-layer lists, scores ``[B, h, L, L]``, the others
    ``[B, L, H]``."""
    return {f"{side}_logits": out.logits, f"{side}_reps": out.reps, f"{side}_atts": out.atts,
            f"{side}_scores": out.attention_scores, f"{side}_queries": out.query, f"{side}_keys": out.key,
            f"{side}_values": out.value}


class LossStep(nn.Module):
    """``student`` (+ frozen ``teacher``) + an objective: ``forward(batch tensors) -> tuple of loss terms``.

    ``forward(input_ids, input_mask, segment_ids, labels, *extras)``: ``extras`` are the tensors named in
    ``extra_inputs``: ``"teacher_logits"`` (cached logits replacing the teacher's forward pass), the cached
    teacher outputs of ``cache_layout`` (:mod:`.teacher_outputs`, replacing it too) and the model's step
    inputs (:class:`StepInputs`). The terms come in the order of ``objective.terms``
    (``"loss"``, the total, first). The teacher must be in eval mode: :func:`train_stage` puts it there.

    ``forward(batch, weights)`` with a :class:`~knowledge_distill_util.engine.batches.Batch` (the
    Distiller's ``objective`` interface; ``weights`` unused): the same terms as an ``OrderedDict``, the
    inputs read by name from the batch (``input_ids``, ``input_mask``, ``segment_ids``, the extras; the
    labels).
    """

    def __init__(self, student: nn.Module, teacher: Optional[nn.Module], objective: Objective, args,
                 extra_inputs: Tuple[str, ...] = ()):
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.objective = objective
        self.args = args
        self.extra_inputs = tuple(extra_inputs)
        #: a weight schedule is not constant: the trainer feeds ``schedule_factors`` at every step
        self.scheduled = uses_weight_schedules(args)
        #: the layout of the cached teacher outputs fed as batch inputs (:mod:`.teacher_outputs`), or None
        self.cache_layout: Optional[CacheLayout] = None
        uses_cache = "teacher_logits" in self.extra_inputs and objective.can_cache_teacher_logits
        if objective.teacher_outputs and teacher is None and not uses_cache:
            raise ValueError(f"objective {objective.name!r} reads the teacher's {objective.teacher_outputs}: "
                             f"give a teacher")

    def forward(self, *inputs):
        if len(inputs) == 2 and isinstance(inputs[0], Batch):
            return self._batch_terms(inputs[0])
        return self._positional(*inputs)

    def _batch_terms(self, batch: Batch) -> "OrderedDict[str, flow.Tensor]":
        named = batch.kwargs
        extras = [named[name] for name in self.extra_inputs]
        if "schedule_factors" in self.extra_inputs:  # eager: the NumPy factors as a tensor, as the graph gets them
            at = self.extra_inputs.index("schedule_factors")
            if isinstance(extras[at], np.ndarray):
                extras[at] = flow.tensor(extras[at], device=named["input_ids"].device)
        values = self._positional(named["input_ids"], named["input_mask"], named["segment_ids"], batch.labels,
                                  *extras)
        return OrderedDict(zip(self.objective.terms, values))

    def _positional(self, input_ids, input_mask, segment_ids, labels, *extras):
        named = dict(zip(self.extra_inputs, extras))
        teacher_logits = named.pop("teacher_logits", None)
        factors = named.pop("schedule_factors", None)
        cached = {key: named.pop(key) for key in (self.cache_layout.keys if self.cache_layout else ())}
        args = self.args if factors is None else ScheduledArgs(self.args, factors)
        tensors = self.student_tensors(input_ids, input_mask, segment_ids, named)
        tensors.update(labels=labels, input_mask=input_mask)
        if self.objective.teacher_outputs:
            if cached:
                tensors.update(self.cache_layout.tensors(cached))
            elif teacher_logits is not None and self.objective.can_cache_teacher_logits:
                tensors["teacher_logits"] = teacher_logits
            else:
                tensors.update(self.teacher_tensors(input_ids, input_mask, segment_ids))
        terms = self.objective(args, **tensors)
        return tuple(terms[name] for name in self.objective.terms)

    def student_tensors(self, input_ids, input_mask, segment_ids, named) -> Dict:
        """The student's outputs by name (``student_logits``, ``_reps``, ``_atts``; with attention details
        :func:`_details` and ``student_model``, the trained module, which the custom recipe's matches and
        their projections read); ``named``: the model's step inputs."""
        if self.objective.reads_attention_details:
            out = self.student(input_ids, input_mask, segment_ids, **named, **ATTENTION_DETAILS)
            tensors = _details("student", out)
            tensors["student_model"] = self.student
            return tensors
        out = self.student(input_ids, input_mask, segment_ids, **named)
        if isinstance(out, (tuple, list)):
            return dict(student_logits=out[0], student_reps=out[1], student_atts=out[2])
        return dict(student_logits=out)

    def teacher_tensors(self, input_ids, input_mask, segment_ids) -> Dict:
        """The teacher's outputs by name, under ``no_grad``: with the student's flags when the objective reads
        attention details (:func:`_details`), else ``teacher_logits``, ``_reps`` and ``_atts``."""
        with flow.no_grad():
            if self.objective.reads_attention_details:
                return _details("teacher", self.teacher(input_ids, input_mask, segment_ids, **ATTENTION_DETAILS))
            t_logits, t_reps, t_atts = self.teacher(input_ids, input_mask, segment_ids)
        return dict(teacher_logits=t_logits, teacher_reps=t_reps, teacher_atts=t_atts)
