"""The logit-loss Modules of :mod:`knowledge_distill_util.nn`: soft cross entropy, KL and the divergences
(the options of :func:`~knowledge_distill_util.functional.kl_div`, validated in the constructor)."""
from typing import Any, Dict, Optional

import oneflow as flow

from .. import functional
from .._checks import check_choice, check_temperature
from .._vocab import check_vocab_alignment
from ..divergences import check_mixture_weight


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
