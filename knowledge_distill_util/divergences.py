r"""The divergences of today's LLM distillers between softened student and teacher distributions.

With :math:`P = \operatorname{softmax}(t / T_t)` (teacher, no gradient) and
:math:`Q = \operatorname{softmax}(s / T_s)` (student) per row ``n`` of the leading dims of ``[..., C]``
logits, and :math:`0 \cdot \log 0 = 0`:

- ``reverse_kl``: :math:`\mathrm{KL}(Q \,\|\, P)` (MiniLLM, DistiLLM).
- ``js_divergence(beta=0.5)``: :math:`M = \beta P + (1 - \beta) Q`,
  :math:`\beta\,\mathrm{KL}(P \| M) + (1 - \beta)\,\mathrm{KL}(Q \| M)`; ``beta=0`` is exactly
  :math:`\mathrm{KL}(P \| Q)` and ``beta=1`` exactly :math:`\mathrm{KL}(Q \| P)` (TRL's generalized JSD).
- ``skew_kl(alpha=0.1)``: :math:`\mathrm{KL}(P \,\|\, \alpha P + (1 - \alpha) Q)` (DistiLLM).
- ``skew_reverse_kl(alpha=0.1)``: :math:`\mathrm{KL}(Q \,\|\, (1 - \alpha) P + \alpha Q)` (DistiLLM).
- ``tv_distance``: :math:`\tfrac12 \sum_c |P_c - Q_c|` (DistillKit's ``tvd``).
- ``uld_loss``: :math:`\sum_i |\operatorname{sort}_\downarrow(Q)_i - \operatorname{sort}_\downarrow(P)_i|`, the
  shorter zero-padded (universal logit distillation; any two vocabularies).

Every function takes the keywords of :func:`~knowledge_distill_util.functional.kl_div` (per-side
temperatures as numbers or per-row tensors, ``reduction`` ``"batchmean"`` (default), ``"mean"``,
``"sum"`` or ``"none"``, ``temperature_scaling``, ``mask``, ``vocab_alignment``) with the same meaning,
and returns float32 for float16/bfloat16 inputs. Everything is computed from ``log_softmax`` and the
mixtures with a log-sum-exp, :math:`\log M = \operatorname{lse}(\log\beta + \log P, \log(1-\beta) + \log Q)`,
so logits of +-1e4 give finite, exact values; a weight of 0 or 1 drops the mixture (no ``0 * inf``).

Student and teacher logits whose last dims (vocabularies) differ are refused with one sentence naming both
sizes unless ``vocab_alignment="truncate"`` (the shared first ``min(V_s, V_t)`` ids, each softmax taken over
them) or ``"uld"`` (the loss becomes :func:`uld_loss`) is passed; the same holds for ``soft_cross_entropy``
and ``kl_div``.
The functions are re-exported by :mod:`knowledge_distill_util.functional` and registered by name.
"""
import math
from numbers import Real
from typing import Callable, Optional

import oneflow as flow
import oneflow.nn.functional as F

from ._vocab import uld_rows
from ._soft_targets import Temperature, _prepare_soft_targets, _rows_loss

__all__ = ["reverse_kl", "js_divergence", "skew_kl", "skew_reverse_kl", "tv_distance", "uld_loss", "DIVERGENCES"]

#: Log-probabilities are floored here so that ``0 * log 0 = 0``: a class at ``-inf`` contributes 0 where
#: its own side's probability is 0, and a huge finite value (about ``1e30 * p``) where only the other side
#: has mass. Finite logits never reach it (``|logits / T| <= 1e8`` for logits of 1e4 and ``T >= 1e-4``), and
#: unlike float32's lowest value it leaves room for the gradient: ``1e30 * upstream gradient`` stays finite,
#: so the zero probability's factor gives 0, not ``inf * 0 = NaN``.
LOG_FLOOR = -1e30


def _log_probs(scaled: flow.Tensor) -> flow.Tensor:
    return flow.clamp(F.log_softmax(scaled, dim=-1), min=LOG_FLOOR)


def _kl(log_a: flow.Tensor, log_b: flow.Tensor) -> flow.Tensor:
    """Row ``KL(A || B) = sum_c A_c (log A_c - log B_c)`` ``[...]`` from floored log-probabilities."""
    return (flow.exp(log_a) * (log_a - log_b)).sum(dim=-1)


def _log_mixture(log_a: flow.Tensor, log_b: flow.Tensor, weight: float) -> flow.Tensor:
    """``log(weight * A + (1 - weight) * B)`` by a two-term log-sum-exp; ``weight`` 1 or 0 returns
    ``log_a`` or ``log_b`` itself (their log-weights would be ``-inf``)."""
    if weight == 1.0:
        return log_a
    if weight == 0.0:
        return log_b
    x, y = log_a + math.log(weight), log_b + math.log1p(-weight)
    top = flow.maximum(x, y).detach()  # the derivative of lse w.r.t. the shift is 0
    return top + flow.log(flow.exp(x - top) + flow.exp(y - top))


def check_mixture_weight(name: str, value, meaning: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number in [0, 1] ({meaning}), got {value!r} ({type(value).__name__})")
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise ValueError(f"{name} must be a number in [0, 1] ({meaning}), got {value!r}")
    return float(value)


def _divergence(rows_of: Callable, predicts, targets, student_temperature, teacher_temperature, *,
                reduction, temperature_scaling, mask, vocab_alignment) -> flow.Tensor:
    """Validate as :func:`kl_div` does, then reduce ``rows_of(s / T_s, t / T_t)`` (ULD's rows with
    ``vocab_alignment="uld"``)."""
    s, t, t_s, t_t, mask = _prepare_soft_targets(
        predicts, targets, student_temperature, teacher_temperature, ("predicts", "targets"), reduction=reduction,
        temperature_scaling=temperature_scaling, mask=mask, vocab_alignment=vocab_alignment)
    return _rows_loss(uld_rows if vocab_alignment == "uld" else rows_of, s, t, t_s, t_t, reduction=reduction,
                      temperature_scaling=temperature_scaling, mask=mask)


def reverse_kl(
    predicts: flow.Tensor,
    targets: flow.Tensor,
    *,
    student_temperature: Temperature = 1.0,
    teacher_temperature: Temperature = 1.0,
    reduction: str = "batchmean",
    temperature_scaling: bool = False,
    mask: Optional[flow.Tensor] = None,
    vocab_alignment: Optional[str] = None,
) -> flow.Tensor:
    r"""Reverse KL divergence :math:`\mathrm{KL}(Q \,\|\, P) = \sum_c Q_c (\log Q_c - \log P_c)` per row
    (mode seeking: the student concentrates on the teacher's large classes).

    Args:
        predicts: student logits ``[..., C]``.
        targets: teacher logits, same shape, device and dtype (no gradient).
        student_temperature, teacher_temperature: numbers >= 1e-4 or per-row tensors of shape ``[...]``.
        reduction: ``"batchmean"`` (default), ``"mean"``, ``"sum"`` or ``"none"``, as :func:`kl_div`.
        temperature_scaling: multiply each row loss by ``T_s * T_t``.
        mask: optional 0/1 tensor of the leading shape ``[...]``.
        vocab_alignment: ``None``, ``"truncate"`` or ``"uld"`` for different vocabularies.

    Example::

        >>> import oneflow as flow
        >>> from knowledge_distill_util.functional import reverse_kl
        >>> round(reverse_kl(flow.tensor([[0.0, 1.0]]), flow.tensor([[0.0, 0.0]])).item(), 4)  # KL(Q || uniform)
        0.1109
    """
    return _divergence(lambda s, t: _kl(_log_probs(s), _log_probs(t)), predicts, targets, student_temperature,
                       teacher_temperature, reduction=reduction, temperature_scaling=temperature_scaling, mask=mask,
                       vocab_alignment=vocab_alignment)


def _jsd_rows(beta: float):
    def rows(s: flow.Tensor, t: flow.Tensor) -> flow.Tensor:
        log_q, log_p = _log_probs(s), _log_probs(t)
        if beta == 0.0:
            return _kl(log_p, log_q)
        if beta == 1.0:
            return _kl(log_q, log_p)
        log_m = _log_mixture(log_p, log_q, beta)
        return beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)
    return rows


def js_divergence(
    predicts: flow.Tensor,
    targets: flow.Tensor,
    *,
    beta: float = 0.5,
    student_temperature: Temperature = 1.0,
    teacher_temperature: Temperature = 1.0,
    reduction: str = "batchmean",
    temperature_scaling: bool = False,
    mask: Optional[flow.Tensor] = None,
    vocab_alignment: Optional[str] = None,
) -> flow.Tensor:
    r"""Generalized Jensen-Shannon divergence (TRL's GKD) per row:

    .. math::
        M = \beta P + (1 - \beta) Q, \qquad
        r = \beta\,\mathrm{KL}(P \,\|\, M) + (1 - \beta)\,\mathrm{KL}(Q \,\|\, M)

    ``beta=0`` is exactly :math:`\mathrm{KL}(P \| Q)` (forward KL, :func:`kl_div`) and ``beta=1`` exactly
    :math:`\mathrm{KL}(Q \| P)` (:func:`reverse_kl`), as TRL defines them (the formula itself tends to 0
    at both ends); ``beta=0.5`` is the symmetric JSD, at most :math:`\log 2`.

    The other arguments are :func:`reverse_kl`'s.

    Args:
        beta: the teacher's weight in the mixture, a number in ``[0, 1]``.

    Example::

        >>> import oneflow as flow
        >>> from knowledge_distill_util.functional import js_divergence
        >>> s, t = flow.tensor([[0.0, 30.0]]), flow.tensor([[30.0, 0.0]])
        >>> round(js_divergence(s, t).item(), 4)  # disjoint distributions: log 2
        0.6931
        >>> round(js_divergence(s, t, beta=0.0).item(), 1)  # KL(P || Q)
        30.0
    """
    beta = check_mixture_weight("beta", beta, "0 = KL(P || Q), 1 = KL(Q || P)")
    return _divergence(_jsd_rows(beta), predicts, targets, student_temperature, teacher_temperature,
                       reduction=reduction, temperature_scaling=temperature_scaling, mask=mask,
                       vocab_alignment=vocab_alignment)


def skew_kl(
    predicts: flow.Tensor,
    targets: flow.Tensor,
    *,
    alpha: float = 0.1,
    student_temperature: Temperature = 1.0,
    teacher_temperature: Temperature = 1.0,
    reduction: str = "batchmean",
    temperature_scaling: bool = False,
    mask: Optional[flow.Tensor] = None,
    vocab_alignment: Optional[str] = None,
) -> flow.Tensor:
    r"""DistiLLM's skew KL divergence per row, :math:`\mathrm{KL}(P \,\|\, \alpha P + (1 - \alpha) Q)`.

    ``alpha=0`` is :func:`kl_div`'s :math:`\mathrm{KL}(P \| Q)`, ``alpha=1`` is 0. The mixture bounds
    the ratio :math:`P / M \le 1 / \alpha`, so the loss stays at most :math:`-\log\alpha`.

    The other arguments are :func:`reverse_kl`'s.

    Args:
        alpha: the teacher's weight in the mixture, a number in ``[0, 1]``.

    Example::

        >>> import oneflow as flow
        >>> from knowledge_distill_util.functional import skew_kl
        >>> s, t = flow.tensor([[0.0, 30.0]]), flow.tensor([[30.0, 0.0]])
        >>> round(skew_kl(s, t, alpha=0.1).item(), 4)  # -log 0.1 for disjoint distributions
        2.3026
    """
    alpha = check_mixture_weight("alpha", alpha, "0 = KL(P || Q), 1 = 0")
    return _divergence(lambda s, t: _skew_kl_rows(s, t, alpha), predicts, targets,
                       student_temperature, teacher_temperature, reduction=reduction,
                       temperature_scaling=temperature_scaling, mask=mask, vocab_alignment=vocab_alignment)


def _skew_kl_rows(s: flow.Tensor, t: flow.Tensor, alpha: float) -> flow.Tensor:
    """``KL(P || alpha P + (1 - alpha) Q)`` per row; at ``alpha=1`` it is 0 with a zero gradient (kept
    connected to the student, so ``backward()`` works as for any other weight)."""
    log_q = _log_probs(s)
    if alpha == 1.0:
        return (log_q * 0.0).sum(dim=-1)
    return _skew_rows(_log_probs(t), log_q, alpha)


def _skew_rows(log_a: flow.Tensor, log_b: flow.Tensor, alpha: float) -> flow.Tensor:
    """``KL(A || alpha A + (1 - alpha) B)`` per row."""
    return _kl(log_a, _log_mixture(log_a, log_b, alpha))


def skew_reverse_kl(
    predicts: flow.Tensor,
    targets: flow.Tensor,
    *,
    alpha: float = 0.1,
    student_temperature: Temperature = 1.0,
    teacher_temperature: Temperature = 1.0,
    reduction: str = "batchmean",
    temperature_scaling: bool = False,
    mask: Optional[flow.Tensor] = None,
    vocab_alignment: Optional[str] = None,
) -> flow.Tensor:
    r"""DistiLLM's skew reverse KL divergence per row, :math:`\mathrm{KL}(Q \,\|\, (1 - \alpha) P + \alpha Q)`.

    ``alpha=0`` is :func:`reverse_kl`'s :math:`\mathrm{KL}(Q \| P)`, ``alpha=1`` is 0.

    The other arguments are :func:`reverse_kl`'s.

    Args:
        alpha: the student's weight in the mixture, a number in ``[0, 1]``.

    Example::

        >>> import oneflow as flow
        >>> from knowledge_distill_util.functional import skew_reverse_kl
        >>> s, t = flow.tensor([[0.0, 30.0]]), flow.tensor([[30.0, 0.0]])
        >>> round(skew_reverse_kl(s, t, alpha=0.1).item(), 4)
        2.3026
    """
    alpha = check_mixture_weight("alpha", alpha, "0 = KL(Q || P), 1 = 0")
    return _divergence(lambda s, t: _skew_rows(_log_probs(s), _log_probs(t), alpha), predicts, targets,
                       student_temperature, teacher_temperature, reduction=reduction,
                       temperature_scaling=temperature_scaling, mask=mask, vocab_alignment=vocab_alignment)


def _tv_rows(s: flow.Tensor, t: flow.Tensor) -> flow.Tensor:
    return 0.5 * flow.abs(F.softmax(t, dim=-1) - F.softmax(s, dim=-1)).sum(dim=-1)


def tv_distance(
    predicts: flow.Tensor,
    targets: flow.Tensor,
    *,
    student_temperature: Temperature = 1.0,
    teacher_temperature: Temperature = 1.0,
    reduction: str = "batchmean",
    temperature_scaling: bool = False,
    mask: Optional[flow.Tensor] = None,
    vocab_alignment: Optional[str] = None,
) -> flow.Tensor:
    r"""Total variation distance per row, :math:`\tfrac12 \sum_c |P_c - Q_c|` (in ``[0, 1]``; DistillKit's
    ``tvd``). Where :math:`P_c = Q_c` the gradient of :math:`|\cdot|` is taken as 0. The arguments are
    :func:`reverse_kl`'s.

    Example::

        >>> import oneflow as flow
        >>> from knowledge_distill_util.functional import tv_distance
        >>> tv_distance(flow.tensor([[0.0, 30.0]]), flow.tensor([[30.0, 0.0]])).item()
        1.0
    """
    return _divergence(_tv_rows, predicts, targets, student_temperature, teacher_temperature,
                       reduction=reduction, temperature_scaling=temperature_scaling, mask=mask,
                       vocab_alignment=vocab_alignment)


def uld_loss(
    predicts: flow.Tensor,
    targets: flow.Tensor,
    *,
    student_temperature: Temperature = 1.0,
    teacher_temperature: Temperature = 1.0,
    reduction: str = "batchmean",
    temperature_scaling: bool = False,
    mask: Optional[flow.Tensor] = None,
) -> flow.Tensor:
    r"""Universal logit distillation (Boizard et al. 2024; TRL's ``ULDLoss``) for any two vocabularies:

    .. math::
        r_n = \sum_{i=1}^{\max(V_s, V_t)} \big|\operatorname{sort}_\downarrow(Q_n)_i
              - \operatorname{sort}_\downarrow(P_n)_i\big|

    the shorter sorted vector padded with zeros; ``reduction="batchmean"`` is TRL's mean over the rows.
    Equal to any logit loss called with ``vocab_alignment="uld"``.

    Args:
        predicts: student logits ``[..., V_s]``.
        targets: teacher logits ``[..., V_t]``, the same leading dims, device and dtype (no gradient).
        student_temperature: a number >= 1e-4 or a per-row tensor ``[...]``.
        teacher_temperature: the same for the teacher.
        reduction: ``"batchmean"`` (default), ``"mean"`` (divides by ``max(V_s, V_t)``), ``"sum"`` or ``"none"``.
        temperature_scaling: multiply each row loss by ``T_s * T_t``.
        mask: optional 0/1 tensor of the leading shape ``[...]``.

    Example::

        >>> import oneflow as flow
        >>> from knowledge_distill_util.functional import uld_loss
        >>> uld_loss(flow.tensor([[0.0, 0.0]]), flow.tensor([[0.0, 0.0, 0.0, 0.0]])).item()  # |1/2-1/4| * 2 + 1/4 * 2
        1.0
    """
    return _divergence(uld_rows, predicts, targets, student_temperature, teacher_temperature, reduction=reduction,
                       temperature_scaling=temperature_scaling, mask=mask, vocab_alignment="uld")


#: The functions of this module, in the order of the documentation.
DIVERGENCES = (reverse_kl, js_divergence, skew_kl, skew_reverse_kl, tv_distance, uld_loss)
