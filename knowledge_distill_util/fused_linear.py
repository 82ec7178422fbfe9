r"""Fused linear + divergence: a logit loss of ``hidden @ weight.T + bias`` that never builds the logits whole.

A language-model head turns hidden states ``[N, H]`` into logits ``[N, V]``; at 4,096 tokens and a
vocabulary of 30,522 one float32 logits tensor is 500 MB, and the plain formula keeps several (the logits,
both softmaxes, their gradient). :func:`fused_linear_distill_loss` computes the student's logits (and,
with a teacher tuple, the teacher's) ``chunk_size`` rows at a time, in the forward **and** for the
gradients:

* scalar reductions (``"mean"``, ``"batchmean"``, ``"sum"``): the forward computes, per chunk, the logits,
  the chunk's loss (``reduction="sum"``) and its gradient for the logits ``G_c`` ``[n, V]``, then folds
  ``G_c`` into ``dL/dhidden = G @ W`` (rows of the chunk), ``dL/dW += G_c^T h_c`` and ``dL/db += sum G_c``
  and drops it. Only those three gradients (the sizes of the inputs) are saved; the backward multiplies
  them by the upstream gradient. Three matrix products per chunk, as the plain formula's forward+backward.
* ``reduction="none"``: the forward returns the per-row losses ``[N]``; the backward (whose upstream
  gradient is per row) recomputes each chunk's logits, one more matrix product per chunk.

The loss is any registered *logit loss* (:func:`logit_losses`: a registered loss taking ``predicts,
targets`` and the keywords ``student_temperature``, ``teacher_temperature``, ``reduction``,
``temperature_scaling`` and ``mask``, as ``functional.kl_div``), applied to each chunk unchanged; ``G_c``
comes from ``oneflow.autograd.grad`` of that chunk's loss, so a newly registered loss works without
change. Inside ``nn.Graph`` (where ``autograd.grad`` cannot run) ``G_c`` comes from a closed form,
known for ``kl_div`` and ``soft_cross_entropy`` (``w_n (softmax(s_n / T_s) - softmax(t_n / T_t)) / T_s``);
other losses inside ``nn.Graph``, and global tensors, take the plain formula (same value and gradients,
logits built whole).

Chunk size rule: ``chunk_size = max(1, FUSED_CHUNK_BYTES // (V * itemsize))`` rows, so that one chunk's
logits take about :data:`FUSED_CHUNK_BYTES` (64 MiB; 549 rows at ``V = 30,522`` in float32, 110 at
``V = 151,936``). ``dL/dW`` is accumulated in blocks of vocabulary rows of the same size, so no second
``[V, H]`` temporary is made. The extra peak memory is therefore about ``dL/dW + dL/dh + dL/db`` (the inputs'
sizes) plus a few chunk-sized temporaries, independent of ``N``. Each chunk also costs a few passes over
``W`` (the matrix products pack it), so smaller chunks are slower: on the 2-core CPU at ``N = 2048``,
``H = 384``, ``V = 30,522``, 32 MiB chunks took about 1.2x the plain formula's time and 128 MiB chunks
the same time (see docs/performance.md, "Fused linear + divergence").

This module checks the arguments and resolves the defaults; the chunk loop and the ``autograd.Function`` are
in :mod:`knowledge_distill_util._fused_kernel`.
"""
import inspect
from typing import Callable, List, Optional, Sequence, Union

import oneflow as flow

from ._checks import check_choice, check_float_tensor, check_mask, check_row_temperature, check_same_device
from ._fused_kernel import FUSED_CHUNK_BYTES, FusedPlan, fused_function
from ._fused_kernel import closed_forms as _closed_forms
from ._fused_kernel import linear as _linear
from ._fused_kernel import owned as _owned
from ._fused_kernel import part as _part

__all__ = ["fused_linear_distill_loss", "logit_losses", "default_chunk_size", "FUSED_CHUNK_BYTES",
           "LOGIT_LOSS_KEYWORDS"]

#: The keywords a registered loss must take to be used by :func:`fused_linear_distill_loss`.
LOGIT_LOSS_KEYWORDS = ("student_temperature", "teacher_temperature", "reduction", "temperature_scaling", "mask")

#: The reductions (as ``functional.kl_div``'s).
_REDUCTIONS = ("mean", "batchmean", "sum", "none")

Temperature = Union[float, flow.Tensor]
Teacher = Union[flow.Tensor, Sequence[Optional[flow.Tensor]]]


def default_chunk_size(num_classes: int, itemsize: int = 4) -> int:
    """Rows per chunk so that ``[rows, num_classes]`` logits take about :data:`FUSED_CHUNK_BYTES`:
    ``max(1, FUSED_CHUNK_BYTES // (num_classes * itemsize))``.

    >>> default_chunk_size(30522), default_chunk_size(151936), default_chunk_size(2)
    (549, 110, 8388608)
    """
    return max(1, FUSED_CHUNK_BYTES // (max(1, num_classes) * itemsize))


def _is_logit_loss(fn: Callable) -> bool:
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return all(name in parameters for name in LOGIT_LOSS_KEYWORDS)


def logit_losses() -> List[str]:
    """The registered losses :func:`fused_linear_distill_loss` takes (those whose signature has every
    keyword of :data:`LOGIT_LOSS_KEYWORDS`), sorted.

    >>> {"kl_div", "soft_cross_entropy"} <= set(logit_losses()), "hidden_mse" in logit_losses()
    (True, False)
    """
    from .registry import available_losses, get_loss

    return [name for name in available_losses() if _is_logit_loss(get_loss(name))]


def _resolve_loss(loss) -> Callable:
    known = logit_losses()
    if not isinstance(loss, str) or loss not in known:
        raise ValueError(f"loss must be the name of a registered logit loss, got {loss!r}; known: {', '.join(known)}")
    from .registry import get_loss

    return get_loss(loss)


# --------------------------------------------------------------------------------------------------
# validation and the public function
# --------------------------------------------------------------------------------------------------


def _check_matrix(name: str, x, layout: str) -> None:
    check_float_tensor(name, x)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(x.shape)} ({x.ndim} dims)")


def _check_linear(prefix: str, hidden, weight, bias, hidden_name: str) -> None:
    """``hidden [N, H]``, ``weight [V, H]``, ``bias [V]`` or None: one device and dtype."""
    _check_matrix(hidden_name, hidden, "[N, H]")
    _check_matrix(f"{prefix}weight", weight, "[V, H]")
    if weight.shape[1] != hidden.shape[1]:
        raise ValueError(
            f"{prefix}weight has shape {tuple(weight.shape)}, so it expects hidden size {weight.shape[1]}, but "
            f"{hidden_name} has hidden size {hidden.shape[1]}; pass the output layer [V, H] of this model "
            f"(nn.Linear(H, V).weight)"
        )
    tensors = [(f"{prefix}weight", weight)]
    if bias is not None:
        check_float_tensor(f"{prefix}bias", bias)
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"{prefix}bias must have shape [V] = ({weight.shape[0]},) to match {prefix}weight, "
                             f"got {tuple(bias.shape)}")
        tensors.append((f"{prefix}bias", bias))
    for name, x in tensors:
        check_same_device(hidden_name, hidden, name, x)
        if x.dtype != hidden.dtype:
            raise TypeError(f"{name} has dtype {x.dtype} but {hidden_name} has dtype {hidden.dtype}; cast one "
                            f"to the other's dtype")


def _check_teacher(teacher, hidden, vocab: int):
    """A function ``(start, length) -> teacher logits [length, V]`` (detached), and the whole logits or None."""
    rows = hidden.shape[0]
    if isinstance(teacher, flow.Tensor):
        _check_matrix("teacher", teacher, "[N, V]")
        if tuple(teacher.shape) != (rows, vocab):
            what = "vocabulary size" if teacher.shape[1] != vocab else "number of rows"
            raise ValueError(
                f"teacher logits have shape {tuple(teacher.shape)} but the student's logits would have shape "
                f"({rows}, {vocab}) (student_hidden rows, weight rows): the {what} differs; give the teacher "
                f"logits of the same tokens over the same vocabulary"
            )
        check_same_device("student_hidden", hidden, "teacher", teacher)
        if teacher.dtype != hidden.dtype:
            raise TypeError(f"teacher has dtype {teacher.dtype} but student_hidden has dtype {hidden.dtype}; "
                            f"cast one to the other's dtype")
        logits = _owned(teacher).detach()
        return (lambda start, length: _part(logits, start, length, rows)), logits
    if not isinstance(teacher, (tuple, list)) or len(teacher) not in (2, 3):
        raise TypeError(
            f"teacher must be the teacher's logits [N, V] or a tuple (hidden [N, H_t], weight [V, H_t], bias [V] "
            f"or None), got {type(teacher).__name__}" + (f" of length {len(teacher)}" if isinstance(
                teacher, (tuple, list)) else "")
        )
    t_hidden, t_weight = teacher[0], teacher[1]
    t_bias = teacher[2] if len(teacher) == 3 else None
    _check_linear("teacher ", t_hidden, t_weight, t_bias, "teacher hidden")
    if t_hidden.shape[0] != rows:
        raise ValueError(f"teacher hidden has {t_hidden.shape[0]} rows but student_hidden has {rows}; give the "
                         f"hidden states of the same tokens")
    if t_weight.shape[0] != vocab:
        raise ValueError(
            f"teacher weight has vocabulary size {t_weight.shape[0]} but the student's weight has {vocab}; "
            f"the teacher and the student must share one vocabulary"
        )
    check_same_device("student_hidden", hidden, "teacher hidden", t_hidden)
    if t_hidden.dtype != hidden.dtype:
        raise TypeError(f"teacher hidden has dtype {t_hidden.dtype} but student_hidden has dtype {hidden.dtype}; "
                        f"cast one to the other's dtype")
    t_hidden, t_weight = _owned(t_hidden).detach(), _owned(t_weight).detach()
    t_bias = None if t_bias is None else _owned(t_bias).detach()

    def teacher_chunk(start, length):
        with flow.no_grad():
            return _linear(t_hidden if length == rows else t_hidden.narrow(0, start, length), t_weight, t_bias)

    return teacher_chunk, None


def _check_chunk_size(chunk_size, vocab: int, itemsize: int) -> int:
    if chunk_size is None:
        return default_chunk_size(vocab, itemsize)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"chunk_size must be a positive integer (rows per chunk) or None for the default, got "
                        f"{chunk_size!r} ({type(chunk_size).__name__})")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive integer (rows per chunk) or None for the default "
                         f"{default_chunk_size(vocab, itemsize)} (about {FUSED_CHUNK_BYTES >> 20} MiB of logits), "
                         f"got {chunk_size}")
    return chunk_size


def _temperatures(temperature, student_temperature, teacher_temperature):
    if temperature is None:
        return (1.0 if student_temperature is None else student_temperature,
                1.0 if teacher_temperature is None else teacher_temperature)
    if student_temperature is not None or teacher_temperature is not None:
        raise ValueError("temperature sets both sides' temperatures: pass either temperature or "
                         "student_temperature/teacher_temperature, not both")
    return temperature, temperature


def _default_reduction(loss_fn: Callable) -> str:
    default = inspect.signature(loss_fn).parameters["reduction"].default
    return default if isinstance(default, str) else "mean"


def _reduced(total: flow.Tensor, mask, reduction: str, rows: int, vocab: int) -> flow.Tensor:
    """The masked loss sum rescaled as ``functional.kl_div`` defines the reductions."""
    if reduction == "sum":
        return total
    per_row = 1 if reduction == "batchmean" else vocab
    if mask is None:
        return total * (1.0 / (rows * per_row))
    return total / (flow.clamp(mask.sum(), min=1.0) * per_row)


def fused_linear_distill_loss(
    student_hidden: flow.Tensor,
    weight: flow.Tensor,
    bias: Optional[flow.Tensor],
    teacher: Teacher,
    *,
    loss: str = "kl_div",
    temperature: Optional[Temperature] = None,
    student_temperature: Optional[Temperature] = None,
    teacher_temperature: Optional[Temperature] = None,
    mask: Optional[flow.Tensor] = None,
    reduction: Optional[str] = None,
    temperature_scaling: bool = False,
    chunk_size: Optional[int] = None,
    **loss_options,
) -> flow.Tensor:
    r"""``loss(student_hidden @ weight.T + bias, teacher_logits, ...)`` without the ``[N, V]`` logits.

    Equals the plain formula (value and the gradients of ``student_hidden``, ``weight`` and ``bias``, up to
    float rounding) for every registered logit loss, reduction, mask and temperature::

        get_loss(loss)(student_hidden @ weight.T + bias, teacher_logits, student_temperature=T_s,
                       teacher_temperature=T_t, mask=mask, reduction=reduction,
                       temperature_scaling=temperature_scaling, **loss_options)

    with ``teacher_logits = teacher`` or, for a teacher tuple ``(h_t, W_t, b_t)``,
    ``h_t @ W_t.T + b_t`` (also built chunk by chunk; the teacher gets no gradient). Reductions, with the
    row losses :math:`r_n` and the 0/1 mask :math:`m` (1 without one): ``"sum"`` :math:`\sum m r`,
    ``"batchmean"`` :math:`\sum m r / \sum m`, ``"mean"`` :math:`\sum m r / (V \sum m)`, ``"none"``
    :math:`m r` ``[N]``; a mask without any valid row gives 0.

    Chunk size rule: ``chunk_size=None`` takes ``max(1, FUSED_CHUNK_BYTES // (V * itemsize))`` rows
    (:data:`FUSED_CHUNK_BYTES` = 64 MiB of logits per chunk: 549 rows at V = 30,522 in float32). The extra
    peak memory is about the gradients of ``student_hidden``, ``weight`` and ``bias`` plus a few
    chunk-sized temporaries (see the module docstring for how, and for ``nn.Graph``).

    Args:
        student_hidden: ``[N, H]`` the student's last hidden states (flatten ``[B, L, H]`` first).
        weight: ``[V, H]`` the student's output layer (``nn.Linear(H, V).weight``, or tied embeddings).
        bias: ``[V]`` or None.
        teacher: the teacher's logits ``[N, V]``, or a tuple ``(hidden [N, H_t], weight [V, H_t], bias [V]
            or None)`` of the teacher's output layer.
        loss: a registered logit loss name (:func:`logit_losses`: ``kl_div``, ``soft_cross_entropy`` and
            any registered later with the same keywords).
        temperature: both sides' temperature; or ``student_temperature``/``teacher_temperature`` (numbers
            >= 1e-4 or per-row tensors ``[N]``; default 1).
        mask: optional 0/1 ``[N]`` (valid tokens).
        reduction: ``"mean"``, ``"batchmean"``, ``"sum"`` or ``"none"``; default: the loss's own default
            (``"batchmean"`` for ``kl_div``, ``"mean"`` for ``soft_cross_entropy``).
        temperature_scaling: multiply each row loss by ``T_s * T_t``.
        chunk_size: rows per chunk, a positive integer, or None for the rule above.
        **loss_options: further keywords of the loss (e.g. ``beta`` of a JS divergence).

    Returns:
        a scalar tensor, or ``[N]`` for ``reduction="none"``.

    Raises:
        ValueError: an unknown loss name (the message lists the logit losses), ``chunk_size <= 0``, a
            ``weight`` whose ``H`` differs from ``student_hidden``'s, a teacher of another vocabulary size
            or row count, a bad mask, temperature or reduction.
        TypeError: non-tensors, non-floating dtypes, mixed dtypes.

    Example::

        >>> import oneflow as flow
        >>> from knowledge_distill_util import fused_linear_distill_loss
        >>> from knowledge_distill_util.functional import kl_div
        >>> h, w, t = flow.ones(3, 2), flow.tensor([[1.0, 0.0], [0.0, 2.0]]), flow.zeros(3, 2)
        >>> plain = kl_div(flow.matmul(h, w, transpose_b=True), t)
        >>> fused = fused_linear_distill_loss(h, w, None, t, chunk_size=2)
        >>> round(fused.item(), 6) == round(plain.item(), 6)
        True
    """
    loss_fn, reduction, chunk, teacher_chunk, teacher_logits, t_s, t_t, mask = _checked(
        student_hidden, weight, bias, teacher, loss, temperature, student_temperature, teacher_temperature, mask,
        reduction, temperature_scaling, chunk_size)
    closed_form = None
    if student_hidden.is_lazy or student_hidden.is_global:
        closed_form = _closed_forms().get(loss_fn) if not student_hidden.is_global else None
        if closed_form is None:  # the plain formula (nn.Graph without a closed form, global tensors)
            options = dict(student_temperature=t_s, teacher_temperature=t_t, temperature_scaling=temperature_scaling,
                           mask=mask, **loss_options)
            logits_t = teacher_logits if teacher_logits is not None else teacher_chunk(0, student_hidden.shape[0])
            return loss_fn(_linear(student_hidden, weight, bias), logits_t, reduction=reduction, **options)
    plan = FusedPlan(loss_fn, loss_options, teacher_chunk, mask, t_s, t_t, temperature_scaling, reduction, chunk,
                     _needs_grad(student_hidden, weight, bias), closed_form, student_hidden.is_lazy)
    return _fused(plan, student_hidden, weight, bias, mask, reduction)


def _needs_grad(student_hidden: flow.Tensor, weight: flow.Tensor, bias: Optional[flow.Tensor]):
    """Which of ``(student_hidden, weight, bias)`` get a gradient: grad mode on and ``requires_grad``."""
    recording = flow.is_grad_enabled()
    return (recording and student_hidden.requires_grad, recording and weight.requires_grad,
            recording and bias is not None and bias.requires_grad)


def _fused(plan: FusedPlan, student_hidden: flow.Tensor, weight: flow.Tensor, bias: Optional[flow.Tensor], mask,
           reduction: str) -> flow.Tensor:
    """The chunked loss of ``plan`` (:func:`~._fused_kernel.fused_function`): the per-row losses ``[N]`` for
    ``reduction="none"``, else the chunks' sum reduced by :func:`_reduced` (``mask``: the checked ``[N]`` or
    None)."""
    has_bias = bias is not None
    inputs = [_owned(x) for x in (student_hidden, weight) + ((bias,) if has_bias else ())]
    out = fused_function(plan, has_bias).apply(*inputs)
    if reduction == "none":
        return out
    return _reduced(out, mask, reduction, student_hidden.shape[0], weight.shape[0])


def _checked(student_hidden, weight, bias, teacher, loss, temperature, student_temperature, teacher_temperature,
             mask, reduction, temperature_scaling, chunk_size):
    """Every check of :func:`fused_linear_distill_loss`'s arguments; returns ``(loss_fn, reduction, chunk,
    teacher_chunk, teacher_logits or None, T_s, T_t, mask)`` with the defaults resolved and the per-row
    tensors in storage of their own."""
    loss_fn = _resolve_loss(loss)
    reduction = _default_reduction(loss_fn) if reduction is None else reduction
    check_choice("reduction", reduction, _REDUCTIONS)
    if not isinstance(temperature_scaling, bool):
        raise TypeError(f"temperature_scaling must be True or False, got {temperature_scaling!r}")
    _check_linear("", student_hidden, weight, bias, "student_hidden")
    rows, vocab = student_hidden.shape[0], weight.shape[0]
    if rows == 0 or vocab == 0 or student_hidden.shape[1] == 0:
        raise ValueError(f"student_hidden {tuple(student_hidden.shape)} and weight {tuple(weight.shape)} must not "
                         f"be empty")
    teacher_chunk, teacher_logits = _check_teacher(teacher, student_hidden, vocab)
    t_s, t_t = _temperatures(temperature, student_temperature, teacher_temperature)
    t_s = check_row_temperature("student_temperature", _owned(t_s), (rows,), student_hidden, "student_hidden")
    t_t = check_row_temperature("teacher_temperature", _owned(t_t), (rows,), student_hidden, "student_hidden")
    if mask is not None:
        mask = check_mask("mask", _owned(mask), (rows,), student_hidden, "student_hidden")
    chunk = _check_chunk_size(chunk_size, vocab, student_hidden.element_size())
    return loss_fn, reduction, chunk, teacher_chunk, teacher_logits, t_s, t_t, mask
