r"""The loss of one distillation step: student and teacher forwards, adaptors, the weighted terms.

.. math::
    \text{loss} = \sum_k w_k(s) \, \ell_k(z_S, \bar z_T; T_S, T_T) + w_{ce}(s) \, \mathrm{CE}(z_S, y)
                + \sum_i w_i \, \ell_i(\text{match}_i) + w_{x} \sum \text{losses}

summed over the logit losses :math:`k` (the top-level one and each ``logit_terms`` entry, with a weight > 0,
:meth:`~.config.DistillationConfig.weighted_logit_terms`), with :math:`w_k(s)` the term's weight times its
schedule's factor at step :math:`s` (same for ``hard_label_weight``; :math:`w_i` the match's ``weight`` times
``intermediate_weight_schedule(step, total)``; they come in as the tensor ``weights`` ``[logit, hard label,
intermediate factor, each logit_terms entry]`` so that ``nn.Graph`` sees them change),
:math:`\bar z_T` the teacher's logits (several teachers: their weighted average,
:func:`~knowledge_distill_util.functional.average_logits`). The terms are returned unweighted, ``"loss"``
first. The teachers run in eval mode under ``no_grad``. What the terms read from the teachers (the *teacher
reads*: ``"logits"``, the averaged logits, when a logit loss has a weight; ``"match<i>.<j>"``, the ``j``-th teacher
tensor of match ``i``) can come from a :class:`~.teacher_cache.TeacherCache` instead of a teacher forward, or
be given to ``forward`` (``teacher=``, e.g. as inputs of the compiled step, see :meth:`DistillStep.cached_reads`).
"""
from collections import OrderedDict
import math
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

import oneflow as flow
import oneflow.nn as nn
import oneflow.nn.functional as F

from ..functional import average_logits, mseloss
from ..registry import get_loss, takes_temperatures
from ..schedules import cwsm_temperature, flsw_temperature
from .adaptors import check_features, require
from .batches import Batch, describe, first_line
from .config import DistillationConfig, LogitTerm
from .matches import Match
from .taps import FeatureTaps

__all__ = ["DistillStep", "IGNORE_INDEX", "check_labels", "check_class_ids", "hard_label_loss"]


#: The label of a row the hard-label loss ignores (Hugging Face's and ``cross_entropy``'s convention, e.g. padding).
IGNORE_INDEX = -100
#: Label dtypes read as class ids (bool: 0/1).
_CLASS_ID_DTYPES = (flow.bool, flow.uint8, flow.int8, flow.int32, flow.int64)


def check_labels(logits, labels) -> None:
    """The hard labels fit the student's ``logits`` ``[..., C]`` (a tensor or an array: only its shape is read):
    one label per row of ``[...]`` (any shape with
    that many elements, e.g. ``[B]`` or ``[B, 1]``); for ``C > 1`` integer (or bool) class ids in ``[0, C)``, the
    values read on the host outside ``nn.Graph`` (inside it only the shape and dtype are checked); for one logit
    (regression) any number. ``TypeError``/``ValueError``, one sentence naming the labels and the fix, otherwise
    (instead of OneFlow's abort or a NaN loss).

        >>> check_labels(flow.zeros(2, 3), flow.tensor([0, 3]))
        Traceback (most recent call last):
        ...
        ValueError: the labels hold 3, outside the student's 3 classes 0..2; map them to 0..2 (or give the student 4 outputs; -100 marks a row the loss ignores)
    """
    classes, rows = logits.shape[-1], math.prod(logits.shape[:-1])
    if not isinstance(labels, flow.Tensor):
        raise TypeError(f"the labels must be a tensor (or a NumPy array) of class ids, got {type(labels).__name__}")
    if labels.numel() != rows:
        raise ValueError(f"the labels have shape {tuple(labels.shape)} but the student's logits "
                         f"{tuple(logits.shape)} need one label per row, {rows} in all (shape "
                         f"{tuple(logits.shape[:-1])}); give one class id per row")
    if classes == 1:
        return
    if labels.dtype not in _CLASS_ID_DTYPES:
        dtype = str(labels.dtype).replace("oneflow.", "")
        raise TypeError(f"the labels are {dtype} but the student's {classes} classes need integer class ids; give "
                        f"ids in 0..{classes - 1} (a student with one output would regress on float scores)")
    check_class_ids(labels, classes)


def check_class_ids(labels: flow.Tensor, classes: int) -> None:
    """The integer ``labels`` are in ``[0, classes)`` or :data:`IGNORE_INDEX`, read on the host (nothing is checked
    on the lazy tensors inside ``nn.Graph``, on global tensors or on an empty batch); ``ValueError`` naming a value
    outside otherwise."""
    if labels.is_lazy or labels.is_global or labels.numel() == 0:
        return
    ids = labels.to(flow.int64)
    ids = flow.where(ids == IGNORE_INDEX, flow.zeros_like(ids), ids)
    low, high = (int(value) for value in flow.stack([ids.min(), ids.max()]).numpy())  # one read on the host
    if low < 0 or high >= classes:
        raise ValueError(f"the labels hold {low if low < 0 else high}, outside the student's {classes} classes "
                         f"0..{classes - 1}; map them to 0..{classes - 1} (or give the student {max(high + 1, classes)} "
                         f"outputs; {IGNORE_INDEX} marks a row the loss ignores)")


def hard_label_loss(logits: flow.Tensor, labels: flow.Tensor) -> flow.Tensor:
    """Mean cross-entropy of ``[..., C]`` logits with integer labels ``[...]`` over the rows whose label is not
    :data:`IGNORE_INDEX`; for one logit the MSE."""
    if logits.shape[-1] == 1:
        return mseloss(logits.reshape(-1), labels.to(logits.dtype).reshape(-1))
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1).to(flow.int64))


class _LogitLoss(NamedTuple):
    """One weighted logit loss of a step: its term's ``name`` in the terms, the :class:`LogitTerm`, its ``index`` in
    the weights, its function ``fn``, whether ``fn`` takes ``temperatures``, and ``where`` it is configured
    (``logit_loss`` or ``logit_terms[i]``)."""

    name: str
    term: LogitTerm
    index: int
    fn: Callable
    temperatures: bool
    where: str

    @classmethod
    def of(cls, name: str, term: LogitTerm, index: int) -> "_LogitLoss":
        fn = get_loss(term.loss)
        return cls(name, term, index, fn, takes_temperatures(fn),
                   "logit_loss" if index == 0 else f"logit_terms[{index - 3}]")

    @property
    def what(self) -> str:
        """Its name in the errors: ``the logit loss 'kl_div'`` or ``logit_terms[1] ('kl_div')``."""
        return f"the logit loss {self.term.loss!r}" if self.index == 0 else f"{self.where} ({self.term.loss!r})"


class DistillStep(nn.Module):
    """``forward(batch, weights) -> OrderedDict`` of scalar loss terms (see the module doc).

    ``teachers``: one or more teacher modules; ``taps``: ``(student, teacher)``
    :class:`~.taps.FeatureTaps` (installed by the caller); ``matches``: the :class:`~.matches.Match` es;
    ``teacher_cache``: a :class:`~.teacher_cache.TeacherCache` (None: the teachers run on every batch).
    """

    def __init__(self, student: nn.Module, teachers: Sequence[nn.Module], config: DistillationConfig,
                 adaptors, taps: Sequence[FeatureTaps], matches: Sequence[Match]):
        super().__init__()
        self.student = student
        self.teachers = nn.ModuleList(list(teachers))
        self.matches = nn.ModuleList(list(matches))
        self.config = config
        self.adaptor_s, self.adaptor_t = adaptors
        self.taps_s, self.taps_t = taps
        #: each weighted logit loss (:meth:`~.config.DistillationConfig.weighted_logit_terms`)
        self.logit_terms = [_LogitLoss.of(name, term, index) for name, term, index in config.weighted_logit_terms()]
        self.teacher_cache = None
        #: The student's classes, once an eager forward (the probe) has checked the batch's labels against its
        #: logits: the loop then checks the class ids of each batch it feeds to a compiled step.
        self.label_classes: Optional[int] = None

    def _features(self, model: nn.Module, taps: Optional[FeatureTaps], adaptor, batch: Batch, who: str) -> Dict:
        if taps is not None:
            taps.clear()
        try:
            outputs = model(*batch.args, **batch.kwargs, **self.config.forward_kwargs)
        except (RuntimeError, TypeError) as error:
            side, given = who.split()[0], sorted(self.config.forward_kwargs)
            also = f" and that its forward takes DistillationConfig.forward_kwargs {given}" if given else ""
            raise type(error)(f"the {side} ({type(model).__name__}) failed on a batch of {describe(batch)}: "
                              f"{first_line(error)}; check that the batch fits the {side} (shapes, dtypes, "
                              f"device, argument names){also}") from None
        return check_features(adaptor(batch.raw, outputs), who)

    def _teacher_features(self, batch: Batch) -> List[Dict]:
        with flow.no_grad():
            return [self._features(teacher, self.taps_t if i == 0 else None, self.adaptor_t, batch,
                                   "teacher adaptor (adaptor_T)") for i, teacher in enumerate(self.teachers)]

    def teacher_reads(self, batch: Batch) -> "OrderedDict[str, flow.Tensor]":
        """The teachers' forwards on ``batch`` reduced to what the terms read (see the module doc); no forward when
        the terms read nothing from the teachers."""
        reads: "OrderedDict[str, flow.Tensor]" = OrderedDict()
        if not self.config.reads_teacher:
            return reads
        teachers = self._teacher_features(batch)
        if self.logit_terms:
            reads["logits"] = self._teacher_logits(teachers)
        for i, match in enumerate(self.matches):
            for j, tensor in enumerate(match.teacher_tensors(teachers[0], self.taps_t)):
                reads[f"match{i}.{j}"] = tensor
        return reads

    def cached_reads(self, batch: Batch):
        """``(batch without the row ids, teacher reads)`` through :attr:`teacher_cache` (the teacher runs only for
        a batch with a row not cached): computed eagerly, outside a compiled step, which gets them as inputs."""
        batch, ids = self.teacher_cache.take_ids(batch)
        return batch, self.teacher_cache.reads(ids, lambda: self.teacher_reads(batch))

    def _teacher_logits(self, teachers: List[Dict]) -> flow.Tensor:
        user = self.logit_terms[0].what
        logits = [require(features, "logits", "teacher", user) for features in teachers]
        if len(logits) == 1:
            return logits[0]
        for i, other in enumerate(logits[1:], start=1):
            if tuple(other.shape) != tuple(logits[0].shape):
                raise ValueError(f"teacher {i}'s logits have shape {tuple(other.shape)} but teacher 0's "
                                 f"{tuple(logits[0].shape)}; several teachers' logits are averaged class by class: "
                                 f"give teachers with the same classes")
        return average_logits(logits, self.config.teacher_weights)

    @staticmethod
    def _temperatures(term: LogitTerm, student: flow.Tensor, teacher: flow.Tensor):
        """``(T_S, T_T)`` of ``term``: its two numbers, or per-row temperatures ``[...]`` around them."""
        bases = term.student_temperature, term.teacher_temperature
        if term.temperature_scheduler == "none":
            return bases
        s, t = student.reshape(-1, student.shape[-1]), teacher.reshape(-1, teacher.shape[-1])
        rows = [flsw_temperature(s, t, base=base) if term.temperature_scheduler == "flsw" else
                cwsm_temperature(s, base=base) for base in bases]
        return tuple(r.reshape(student.shape[:-1]) for r in rows)

    def _logit_term(self, logit: "_LogitLoss", student: flow.Tensor, teacher: flow.Tensor) -> flow.Tensor:
        """The logit loss ``logit``; its errors say which logits (e.g. a teacher with another number of classes)."""
        term = logit.term
        if logit.temperatures and student.shape[-1] == 1:
            fix = ("logit_loss='hidden_mse' (the MSE of the two predictions) or logit_weight=0" if logit.index == 0
                   else f"'loss': 'hidden_mse' (the MSE of the two predictions) or 'weight': 0 in {logit.where}")
            raise ValueError(f"the student gives one logit per row (regression), where {logit.what}, a divergence "
                             f"of softmax distributions over the classes, is always 0; use {fix}")
        try:
            if not logit.temperatures:
                return logit.fn(student, teacher, **term.options)
            t_s, t_t = self._temperatures(term, student, teacher)
            return logit.fn(student, teacher, student_temperature=t_s, teacher_temperature=t_t,
                            temperature_scaling=term.temperature_scaling, **term.options)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{logit.what} of the student's logits {tuple(student.shape)} and the teacher's "
                              f"{tuple(teacher.shape)}: {error}") from None

    def _labels(self, features: Dict, batch: Batch) -> flow.Tensor:
        labels = features.get("labels", batch.labels)
        if labels is None:
            raise ValueError(f"hard_label_weight is {self.config.hard_label_weight} but the batch has no labels; "
                             f"yield (inputs..., labels) or put them under TrainingConfig.label_key, or set "
                             f"hard_label_weight=0")
        return labels

    @staticmethod
    def _extra(losses) -> Optional[flow.Tensor]:
        if losses is None:
            return None
        values = list(losses.values()) if isinstance(losses, dict) else (
            list(losses) if isinstance(losses, (list, tuple)) else [losses])
        for value in values:
            if not isinstance(value, flow.Tensor) or value.numel() != 1:
                raise TypeError(f"the student adaptor's 'losses' must be scalar tensors (one, a list or a dict), "
                                f"got {type(value).__name__}")
        total = values[0].reshape(())
        for value in values[1:]:
            total = total + value.reshape(())
        return total

    def forward(self, batch: Batch, weights: flow.Tensor,
                teacher: Optional[Dict[str, flow.Tensor]] = None) -> "OrderedDict[str, flow.Tensor]":
        """The terms of ``batch``; ``teacher``: the teacher reads, given (the teachers and the cache then unused)."""
        cache = self.teacher_cache if teacher is None else None
        if cache is not None:
            batch, ids = cache.take_ids(batch)
        student = self._features(self.student, self.taps_s, self.adaptor_s, batch, "student adaptor (adaptor_S)")
        s_logits = require(student, "logits", "student", self.logit_terms[0].what) if self.logit_terms else None
        s_matched = [match.student_tensors(student, self.taps_s) for match in self.matches]
        if teacher is None:
            teacher = (self.teacher_reads(batch) if cache is None
                       else cache.reads(ids, lambda: self.teacher_reads(batch)))
        terms: "OrderedDict[str, flow.Tensor]" = OrderedDict()
        parts = []
        for logit in self.logit_terms:
            terms[logit.name] = self._logit_term(logit, s_logits, teacher["logits"])
            parts.append(terms[logit.name] * weights[logit.index])
        if self.config.hard_label_weight > 0:
            s_logits = require(student, "logits", "student", "the hard-label loss (hard_label_weight > 0)")
            labels = self._labels(student, batch)
            check_labels(s_logits, labels)
            if labels is batch.labels and not labels.is_lazy and s_logits.shape[-1] > 1:
                self.label_classes = s_logits.shape[-1]
            terms["hard_label"] = hard_label_loss(s_logits, labels)
            parts.append(terms["hard_label"] * weights[1])
        mask = student.get("mask")
        for i, match in enumerate(self.matches):
            tensors = [value for key, value in teacher.items() if key.split(".")[0] == f"match{i}"]
            terms[match.name] = match(s_matched[i], tensors, mask=mask)
            part = terms[match.name] * match.weight
            parts.append(part if self.config.intermediate_weight_schedule == "constant" else part * weights[2])
        extra = self._extra(student.get("losses"))
        if extra is not None:
            terms["extra"] = extra
            parts.append(extra * self.config.extra_loss_weight)
        if not parts:
            raise ValueError("nothing to train: no logit loss has a weight (logit_weight, logit_terms), "
                             "hard_label_weight is 0, there are no intermediate_matches and the adaptor returns no "
                             "'losses'")
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return OrderedDict([("loss", total)] + list(terms.items()))
