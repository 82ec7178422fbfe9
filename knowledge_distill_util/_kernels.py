"""Compute kernels behind :mod:`knowledge_distill_util.functional`.

Inputs arrive validated (same shape, device and floating dtype; teacher already detached). The loss
functions return a scalar with the original reduction; :func:`masked_row_kl` returns per-row values and
:func:`relation_scores` the scores. Only OneFlow ops that have CPU and CUDA kernels are used: no numpy and
no data-dependent Python on the paths taken inside ``nn.Graph`` and on global tensors (the eager local
soft-CE path reads two one-element tensors on the host: whether the loss is finite, and whether the
gradient buffer was already handed over).

Design (numbers measured on the 2-core CPU machine, see ``scripts/benchmark.py``):

* **Soft cross entropy** (and **KL divergence**, the same kernel with the row loss
  ``sum p_t (log p_t - log p_s)``) is a custom ``autograd.Function``. Its backward needs only
  ``softmax(s / T_s) - softmax(t / T_t)``. On local tensors in eager mode the forward computes the
  teacher's softmax ``P`` once, whole, and the loss from ``P`` and the student's ``log_softmax`` in row chunks
  of about :data:`DEFAULT_CHUNK_ELEMENTS` elements (each chunk's products summed while in the cache); the
  first backward turns ``P`` in place, chunk by chunk, into the gradient and hands it over: three softmax
  passes in all, and the extra peak memory is one logits-sized tensor plus a few chunks.
  Log-probabilities are floored at :data:`LOWEST_LOG_PROBABILITY` so that ``0 * log 0`` is 0, not NaN.
  Inside ``nn.Graph`` (where the compiler plans memory and in-place slice writes are not cheap), on global
  tensors, and when everything fits in one chunk, the forward computes and saves the gradient direction
  once and the backward only scales it.
* **Row KL of attention scores** (:func:`masked_row_kl`, behind ``attention_kl`` and ``relation_kl``) saves
  only its inputs and recomputes both softmaxes in the backward, chunk by chunk; per-row upstream
  gradients are applied with ``bmm`` (broadcasting a ``[R, 1]`` factor over ``[R, L]`` is ~100x slower in
  OneFlow 0.9's CPU kernels).
* **MSE** is a custom ``autograd.Function`` that saves only the difference ``a - b`` (its squares are summed
  chunk by chunk while in the CPU cache, never stored whole); its backward is a single scaled copy of it
  (and its negation for ``b`` when ``b`` requires a gradient: ``mseloss`` is symmetric).
* **Attention MSE** replaces the original ``where(x <= threshold, 0, x)`` (a comparison, a ``zeros_like``
  and a select, much slower than an element-wise op on CPU) with OneFlow's single-pass ``threshold``
  op, whose backward is the matching single-pass mask; the MSE kernel above follows.

One module, longer than the ~400-line guide (issue 17): the three kernels share the chunking helpers and the
one tunable :data:`DEFAULT_CHUNK_ELEMENTS`, which each reads at call time from this module (tests and users
set it here); split into modules, each would read its own copy and ignore the setting.
"""
import functools
from typing import Iterable, List, Optional, Tuple

import oneflow as flow
import oneflow.nn.functional as F

__all__ = [
    "DEFAULT_CHUNK_ELEMENTS",
    "soft_cross_entropy_mean",
    "kl_div_mean",
    "relation_scores",
    "mse_mean",
    "sum_of_mse",
    "masked",
    "sum_of_masked_mse",
    "masked_row_kl",
    "EXCLUDED_SCORE",
    "LOWEST_LOG_PROBABILITY",
]

Pair = Tuple[flow.Tensor, flow.Tensor]

#: Elements per row chunk of the eager soft cross entropy (4 MiB of float32 per temporary, so the few
#: per-chunk temporaries stay in the CPU's last-level cache). 1024 x 30522 logits run in 31 chunks.
DEFAULT_CHUNK_ELEMENTS = 1 << 20


def _mean_scale(numel: int) -> float:
    """``1 / numel``; NaN for empty tensors (the mean of nothing, as numpy and PyTorch give)."""
    return 1.0 / numel if numel else float("nan")


def _sum_all(x: flow.Tensor) -> flow.Tensor:
    """Sum of every element (local tensors: as one 1-D reduction, faster on CPU than a multi-axis sum)."""
    return x.sum() if x.is_global else x.reshape(-1).sum()


def _sum_of_squares(d: flow.Tensor) -> flow.Tensor:
    """``sum(d ** 2)``; local eager tensors in chunks of :data:`DEFAULT_CHUNK_ELEMENTS` so that each
    squared chunk is summed while still in the CPU cache (about 25% less forward time for BERT-sized
    hidden states)."""
    if d.is_global or d.is_lazy or d.numel() <= DEFAULT_CHUNK_ELEMENTS:
        return _sum_all(flow.square(d))
    return flow.stack([flow.square(c).sum() for c in d.reshape(-1).split(DEFAULT_CHUNK_ELEMENTS)]).sum()


def _scaled(x: flow.Tensor, temperature: float) -> flow.Tensor:
    """``x / temperature``; dividing by exactly 1.0 changes nothing, so that pass is skipped."""
    return x if temperature == 1.0 else x / temperature


# --------------------------------------------------------------------------------------------------
# soft cross entropy
# --------------------------------------------------------------------------------------------------

#: Log-probabilities are floored here before they are weighted by the teacher's probabilities, so that a
#: class with teacher probability 0 contributes exactly 0 (``0 * log 0 = 0``) even when the student puts it
#: at ``-inf`` too, instead of ``0 * -inf = NaN``. (A class the student rules out at ``-inf`` while the
#: teacher gives it mass ``p > 0`` contributes the huge but finite ``3.4e38 * p``.) NaN stays NaN.
LOWEST_LOG_PROBABILITY = -3.4028234663852886e38


def _chunk_rows(num_classes: int, chunk_elements: int) -> int:
    return max(1, chunk_elements // max(1, num_classes))


def _use_chunks(student: flow.Tensor, chunk_rows: int) -> bool:
    """Chunk only local eager tensors with more rows than one chunk holds."""
    if student.is_global or student.is_lazy or student.ndim < 1:
        return False
    rows = student.numel() // max(1, student.shape[-1])
    return rows > chunk_rows


def _row_spans(rows: int, chunk_rows: int) -> List[Tuple[int, int]]:
    """``(start, length)`` of consecutive row chunks covering ``rows``."""
    return [(start, min(chunk_rows, rows - start)) for start in range(0, rows, chunk_rows)]


def _floored(log_probabilities: flow.Tensor) -> flow.Tensor:
    return flow.clamp(log_probabilities, min=LOWEST_LOG_PROBABILITY)


def _is_finite(total: flow.Tensor) -> bool:
    """Host read of a scalar's finiteness (eager local tensors only)."""
    return bool(flow.isfinite(total).item())


class _SoftTargets:
    """The softmaxes, the loss sums and the chunked gradient of :func:`_soft_cross_entropy_function` for one
    pair of temperatures, chunk size and kind (``kl``)."""

    def __init__(self, student_temperature: float, teacher_temperature: float, chunk_rows: int, kl: bool):
        self.t_s, self.t_t, self.chunk_rows, self.kl = student_temperature, teacher_temperature, chunk_rows, kl

    def student_log_probs(self, s: flow.Tensor) -> flow.Tensor:
        return F.log_softmax(_scaled(s, self.t_s), dim=-1)

    def teacher_probs(self, t: flow.Tensor) -> flow.Tensor:
        return F.softmax(_scaled(t, self.t_t), dim=-1)

    def log_ratio(self, s: flow.Tensor, t: flow.Tensor, floor: bool) -> flow.Tensor:
        """``log q`` (cross entropy) or ``log p - log q`` (KL), optionally floored (a fresh tensor)."""
        log_q = self.student_log_probs(s)
        if floor:
            log_q = _floored(log_q)
        if not self.kl:
            return log_q
        log_p = F.log_softmax(_scaled(t, self.t_t), dim=-1)
        return (_floored(log_p) if floor else log_p).sub_(log_q)

    def chunked_loss_sum(self, rows_s: flow.Tensor, rows_t: flow.Tensor, rows_p: flow.Tensor, spans,
                         floor: bool) -> flow.Tensor:
        """``sum(P * log_ratio)``: each chunk's products (``log_ratio`` multiplied in place by ``P``'s rows)
        are summed while still in the CPU cache, then the per-chunk sums. (Adding every chunk element-wise
        into the first and summing once costs the thread that runs OneFlow's kernels 7-21 ms more at
        ``[1024, 30522]``: OneFlow's CPU reduction runs partly on helper threads, its in-place add does not.)"""
        sums = [
            _sum_all(self.log_ratio(rows_s.narrow(0, start, length), rows_t.narrow(0, start, length), floor)
                     .mul_(rows_p.narrow(0, start, length)))
            for start, length in spans
        ]
        return flow.stack(sums).sum()

    def chunked_forward(self, s: flow.Tensor, t: flow.Tensor) -> Tuple[flow.Tensor, flow.Tensor]:
        """The eager chunked path: ``(sum(P * log_ratio), P)``, floored only when the plain sum is not finite."""
        p = self.teacher_probs(t)  # whole: no copy; becomes the gradient in backward
        classes = s.shape[-1]
        rows_s, rows_t, rows_p = s.reshape(-1, classes), t.reshape(-1, classes), p.view(-1, classes)
        spans = _row_spans(rows_s.shape[0], self.chunk_rows)
        total = self.chunked_loss_sum(rows_s, rows_t, rows_p, spans, floor=False)
        if not _is_finite(total):  # 0 * -inf somewhere (or a genuine NaN/inf): floor, recompute
            total = self.chunked_loss_sum(rows_s, rows_t, rows_p, spans, floor=True)
        return total, p

    def gradient_in_place(self, s: flow.Tensor, p: flow.Tensor, dy: flow.Tensor) -> flow.Tensor:
        """The first backward of the chunked path: ``P`` turned, chunk by chunk, into
        ``(softmax(s / T_s) - P) * dy / (T_s * numel)`` and returned."""
        classes = s.shape[-1]
        rows_s, rows_p = s.reshape(-1, classes), p.view(-1, classes)
        factor = dy * (-_mean_scale(s.numel()) / self.t_s)  # (P - q) * -c = (q - P) * c
        for start, length in _row_spans(rows_s.shape[0], self.chunk_rows):
            chunk = rows_p.narrow(0, start, length)
            chunk.sub_(F.softmax(_scaled(rows_s.narrow(0, start, length), self.t_s), dim=-1)).mul_(factor)
        return p

    def gradient_recomputed(self, s: flow.Tensor, t: flow.Tensor, dy: flow.Tensor) -> flow.Tensor:
        """A second backward of a retained graph (``P`` is gone): both softmaxes recomputed into a fresh tensor."""
        classes = s.shape[-1]
        rows_s, rows_t = s.reshape(-1, classes), t.reshape(-1, classes)
        scale = dy * (_mean_scale(s.numel()) / self.t_s)
        grad = flow.empty_like(rows_s)
        for start, length in _row_spans(rows_s.shape[0], self.chunk_rows):
            q = F.softmax(_scaled(rows_s.narrow(0, start, length), self.t_s), dim=-1)
            q.sub_(self.teacher_probs(rows_t.narrow(0, start, length)))
            grad.narrow(0, start, length).copy_(q.mul_(scale))
        return grad.reshape(s.shape)


@functools.lru_cache(maxsize=64)
def _soft_cross_entropy_function(student_temperature: float, teacher_temperature: float, chunk_rows: int,
                                 kl: bool = False):
    """An ``autograd.Function`` class for one pair of temperatures, chunk size and kind (cached per value).

    ``apply(s, t)`` returns ``-mean(softmax(t / T_t) * max(log_softmax(s / T_s), LOWEST_LOG_PROBABILITY))``
    (with ``kl``: ``mean(p_t * (max(log p_t, LOWEST) - max(log p_s, LOWEST)))``, the KL divergence's element
    mean); the gradient for ``s`` is ``(softmax(s / T_s) - softmax(t / T_t)) / (T_s * numel)`` either way
    (the teacher's entropy is a constant); ``t`` (detached) gets none.

    Eager local tensors with more rows than ``chunk_rows`` (the fast, lean path): the forward computes the
    teacher's softmax ``P`` once, whole, and the loss chunk by chunk from ``P`` and the student's
    ``log_softmax`` (the clamp to :data:`LOWEST_LOG_PROBABILITY` is applied only when the sum is not finite,
    i.e. only where it changes something); it saves ``s``, ``t``, ``P`` and a one-element "``P`` is
    consumed" flag. The first backward turns ``P`` in place, chunk by chunk, into the gradient
    ``(softmax(s / T_s) - P) * dy / (T_s * numel)`` and returns it: one softmax pass, no new logits-sized
    tensor. A second backward of the same graph (``retain_graph=True``) sees the flag and recomputes both
    softmaxes into a fresh tensor. Every other case saves the gradient direction once.
    """
    targets = _SoftTargets(student_temperature, teacher_temperature, chunk_rows, kl)
    t_s = student_temperature

    class SoftCrossEntropy(flow.autograd.Function):
        # The path taken is told to backward by what was saved (4 tensors: chunked, 1: not): reading a
        # Python attribute of ``ctx`` in backward corrupts memory at exit in OneFlow 0.9.
        @staticmethod
        def forward(ctx, s: flow.Tensor, t: flow.Tensor) -> flow.Tensor:
            if _use_chunks(s, chunk_rows):
                total, p = targets.chunked_forward(s, t)
                ctx.save_for_backward(s, t, p, flow.zeros(1, dtype=flow.int8, device=s.device))
            else:
                p = targets.teacher_probs(t)
                total = _sum_all(p * targets.log_ratio(s, t, floor=True))
                ctx.save_for_backward(F.softmax(_scaled(s, t_s), dim=-1).sub_(p))
            return total * ((1.0 if kl else -1.0) * _mean_scale(s.numel()))

        @staticmethod
        def backward(ctx, dy: flow.Tensor):
            saved = ctx.saved_tensors
            if len(saved) == 1:
                (g,) = saved
                return g * (dy * (_mean_scale(g.numel()) / t_s)), None
            s, t, p, consumed = saved
            if not bool(consumed.item()):
                consumed.fill_(1)
                return targets.gradient_in_place(s, p, dy), None
            return targets.gradient_recomputed(s, t, dy), None

    SoftCrossEntropy.__name__ = SoftCrossEntropy.__qualname__ = "SoftCrossEntropy"
    return SoftCrossEntropy


def _checked_chunk_elements(chunk_elements: Optional[int]) -> int:
    if chunk_elements is None:
        return DEFAULT_CHUNK_ELEMENTS
    if isinstance(chunk_elements, bool) or not isinstance(chunk_elements, int) or chunk_elements < 1:
        raise ValueError(
            f"chunk_elements must be a positive integer (elements per chunk) or None for the default "
            f"{DEFAULT_CHUNK_ELEMENTS}, got {chunk_elements!r}"
        )
    return chunk_elements


def _soft_target_mean(student_logits, teacher_logits, student_temperature, teacher_temperature,
                      chunk_elements, kl: bool) -> flow.Tensor:
    chunk_elements = _checked_chunk_elements(chunk_elements)
    num_classes = student_logits.shape[-1] if student_logits.ndim else 1
    function = _soft_cross_entropy_function(
        float(student_temperature), float(teacher_temperature), _chunk_rows(num_classes, chunk_elements), kl
    )
    return function.apply(student_logits, teacher_logits)


def soft_cross_entropy_mean(
    student_logits: flow.Tensor,
    teacher_logits: flow.Tensor,
    student_temperature: float,
    teacher_temperature: float,
    *,
    chunk_elements: Optional[int] = None,
) -> flow.Tensor:
    """``-mean(softmax(t / T_t) * log_softmax(s / T_s))`` over all elements (no ``T**2``).

    Log-probabilities are floored at :data:`LOWEST_LOG_PROBABILITY`, so a class at ``-inf`` in both inputs
    contributes 0 (not NaN).

    Args:
        student_logits, teacher_logits: ``[..., C]`` of equal shape; the teacher must be detached.
        student_temperature, teacher_temperature: positive Python floats.
        chunk_elements: elements per row chunk of the eager path (default :data:`DEFAULT_CHUNK_ELEMENTS`;
            tests pass a tiny value to exercise the chunked path). The value never changes the result
            beyond float rounding.

    Returns:
        scalar tensor; the backward gives ``student_logits`` the gradient
        ``(softmax(s / T_s) - softmax(t / T_t)) / (T_s * numel)`` times the upstream gradient.
    """
    return _soft_target_mean(student_logits, teacher_logits, student_temperature, teacher_temperature,
                             chunk_elements, kl=False)


def kl_div_mean(
    student_logits: flow.Tensor,
    teacher_logits: flow.Tensor,
    student_temperature: float,
    teacher_temperature: float,
    *,
    chunk_elements: Optional[int] = None,
) -> flow.Tensor:
    """``mean(p_t * (log p_t - log p_s))`` over all elements, ``p = softmax(x / T)``, ``0 * log 0 = 0``.

    The same memory-lean kernel as :func:`soft_cross_entropy_mean` (same arguments, same gradient
    ``(p_s - p_t) / (T_s * numel)``), with the row loss computed as ``sum p_t (log p_t - log p_s)`` directly
    (not as cross entropy minus entropy, which cancels badly in float32). Multiply by ``C`` for
    ``batchmean`` or by ``numel`` for ``sum``.

    Example::

        >>> import oneflow as flow
        >>> t = flow.tensor([[0.0, 0.0]])
        >>> kl_div_mean(t, t, 1.0, 1.0).item()
        0.0
        >>> round(kl_div_mean(flow.tensor([[0.0, 1.0]]), t, 1.0, 1.0).item() * 2, 4)  # batchmean
        0.1201
    """
    return _soft_target_mean(student_logits, teacher_logits, student_temperature, teacher_temperature,
                             chunk_elements, kl=True)


# --------------------------------------------------------------------------------------------------
# mean squared error
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _mse_function(grad_a: bool, grad_b: bool):
    """An ``autograd.Function`` class for ``mean((a - b) ** 2)`` returning gradients only where needed."""

    class MeanSquaredError(flow.autograd.Function):
        @staticmethod
        def forward(ctx, a: flow.Tensor, b: flow.Tensor) -> flow.Tensor:
            d = a - b
            ctx.save_for_backward(d)
            return _sum_of_squares(d) * _mean_scale(d.numel())

        @staticmethod
        def backward(ctx, dy: flow.Tensor):
            (d,) = ctx.saved_tensors
            g = d * (dy * (2.0 * _mean_scale(d.numel())))
            return (g if grad_a else None), (-g if grad_b else None)

    return MeanSquaredError


def mse_mean(a: flow.Tensor, b: flow.Tensor) -> flow.Tensor:
    """``mean((a - b) ** 2)`` over all elements; both sides get gradients when they require them."""
    return _mse_function(bool(a.requires_grad), bool(b.requires_grad)).apply(a, b)


def _total(losses: Iterable[flow.Tensor]) -> flow.Tensor:
    """Sum of scalar losses, consumed one at a time so that each pair's temporaries die before the next."""
    total = None
    for loss in losses:
        total = loss if total is None else total + loss
    return total


def sum_of_mse(pairs: List[Pair]) -> flow.Tensor:
    """Sum over pairs of :func:`mse_mean`."""
    return _total(mse_mean(a, b) for a, b in pairs)


def masked(x: flow.Tensor, threshold: float) -> flow.Tensor:
    """``x`` with every entry ``<= threshold`` (``-inf`` included) replaced by 0; NaN stays NaN.

    One pass (OneFlow's ``threshold`` op); its gradient is 0 at the replaced entries.
    """
    return flow._C.threshold(x, threshold=float(threshold), value=0.0)


def sum_of_masked_mse(pairs: List[Pair], threshold: float) -> flow.Tensor:
    """Sum over pairs of the MSE after replacing entries ``<= threshold`` by 0 in both tensors."""
    return _total(mse_mean(masked(a, threshold), masked(b, threshold)) for a, b in pairs)


# --------------------------------------------------------------------------------------------------
# row KL of attention scores (attention_kl, relation_kl)
# --------------------------------------------------------------------------------------------------

#: Scores are floored here (``-inf`` included) and excluded keys are pushed down to it before the
#: softmaxes: their probability underflows to exactly 0 next to any valid key, and a row without a valid
#: key becomes uniform in both inputs (its KL and gradient are exactly 0) instead of NaN.
EXCLUDED_SCORE = -1e30


def _row_kl_layout(scores: flow.Tensor, key_mask: Optional[flow.Tensor]) -> Tuple[int, int, int]:
    """``(items, rows_per_item, L_k)``: the scores seen as ``[items, rows_per_item, L_k]``, chunked along
    ``items`` (the batch when there is a key mask, single rows otherwise)."""
    keys = scores.shape[-1]
    rows = scores.numel() // max(1, keys)
    if key_mask is None:
        return rows, 1, keys
    items = scores.shape[0]
    return items, rows // max(1, items), keys


def _check_key_mask(scores: flow.Tensor, key_mask: flow.Tensor) -> None:
    expected = (scores.shape[0],) + (1,) * (scores.ndim - 2) + (scores.shape[-1],)
    if scores.ndim < 3 or tuple(key_mask.shape) != expected:
        raise ValueError(
            f"key_mask must have shape {expected} ([B, 1, ..., 1, L_k] for scores [B, ..., L_q, L_k] with at "
            f"least 3 dims), got {tuple(key_mask.shape)} for scores {tuple(scores.shape)}; reshape a [B, L] "
            f"mask with mask.reshape(B, 1, 1, L)"
        )


def _prepared(x: flow.Tensor, excluded: Optional[flow.Tensor]) -> flow.Tensor:
    """``max(x, EXCLUDED_SCORE)`` with the excluded keys set to ``EXCLUDED_SCORE``."""
    x = flow.clamp(x, min=EXCLUDED_SCORE)
    # replaced, not added: whatever an excluded key holds (+inf, NaN) does not matter
    return x if excluded is None else flow.masked_fill(x, excluded, EXCLUDED_SCORE)


def _rows_kl(s: flow.Tensor, t: flow.Tensor, excluded: Optional[flow.Tensor]) -> flow.Tensor:
    """``sum_k p_t (log p_t - log p_s)`` over the last dim of one chunk."""
    s, t = _prepared(s, excluded), _prepared(t, excluded)
    return F.log_softmax(t, dim=-1).sub_(F.log_softmax(s, dim=-1)).mul_(F.softmax(t, dim=-1)).sum(dim=-1)


def _rows_kl_grad(s: flow.Tensor, t: flow.Tensor, excluded: Optional[flow.Tensor], dr: flow.Tensor) -> flow.Tensor:
    """``(softmax(s') - softmax(t')) * dr`` for one chunk (``dr`` ``[items, rows]``)."""
    keys = s.shape[-1]
    direction = F.softmax(_prepared(s, excluded), dim=-1).sub_(F.softmax(_prepared(t, excluded), dim=-1))
    # a per-row factor as a batch of 1x1 @ 1xL products: broadcasting [R, 1] over [R, L] is ~100x
    # slower in OneFlow 0.9's CPU kernels
    scaled = flow.bmm(dr.reshape(-1, 1, 1), direction.reshape(-1, 1, keys))
    return scaled.reshape(direction.shape)


def _item_part(x: Optional[flow.Tensor], start: int, length: int, whole: int) -> Optional[flow.Tensor]:
    return x if x is None or length == whole else x.narrow(0, start, length)


@functools.lru_cache(maxsize=64)
def _row_kl_function(masked: bool, chunk_items: int):
    """An ``autograd.Function`` class computing per-row ``KL(softmax(t') || softmax(s'))`` where
    ``x' = max(x, EXCLUDED_SCORE)`` on valid keys and ``EXCLUDED_SCORE`` on excluded ones.
    ``apply(s, t[, excluded])`` on ``[items, rows, L_k]`` tensors (``excluded``: bool ``[items, 1, L_k]``)
    returns ``[items, rows]``; the gradient for ``s`` is ``(softmax(s') - softmax(t')) * dr`` row by row.

    Saves only the inputs: the forward and the backward work on chunks of ``chunk_items`` items (about
    :data:`DEFAULT_CHUNK_ELEMENTS` elements, cache-resident), the backward recomputes both softmaxes and
    writes each chunk of the gradient into one preallocated tensor.
    """

    def spans(s: flow.Tensor):
        """The item chunks of ``s``: chunked only for local eager tensors of more than ``chunk_items`` items."""
        items = s.shape[0]
        chunked = not (s.is_global or s.is_lazy) and items > chunk_items
        return _row_spans(items, chunk_items) if chunked else [(0, items)]

    class RowKL(flow.autograd.Function):
        @staticmethod
        def forward(ctx, s: flow.Tensor, t: flow.Tensor, *excluded_arg: flow.Tensor) -> flow.Tensor:
            excluded = excluded_arg[0] if masked else None
            items = s.shape[0]
            ctx.save_for_backward(s, t, *excluded_arg)
            parts = [_rows_kl(_item_part(s, a, n, items), _item_part(t, a, n, items),
                              _item_part(excluded, a, n, items))
                     for a, n in spans(s)]
            return parts[0] if len(parts) == 1 else flow.cat(parts, dim=0)

        @staticmethod
        def backward(ctx, dr: flow.Tensor):
            saved = ctx.saved_tensors
            s, t = saved[0], saved[1]
            excluded = saved[2] if masked else None
            items = s.shape[0]
            chunks = spans(s)
            if len(chunks) == 1:
                grad = _rows_kl_grad(s, t, excluded, dr)
            else:
                grad = flow.empty_like(s)
                for a, n in chunks:
                    grad.narrow(0, a, n).copy_(_rows_kl_grad(s.narrow(0, a, n), t.narrow(0, a, n),
                                                             _item_part(excluded, a, n, items), dr.narrow(0, a, n)))
            return (grad, None) + ((None,) if masked else ())

    RowKL.__name__ = RowKL.__qualname__ = "RowKL"
    return RowKL


def masked_row_kl(
    student_scores: flow.Tensor,
    teacher_scores: flow.Tensor,
    key_mask: Optional[flow.Tensor] = None,
    *,
    chunk_elements: Optional[int] = None,
) -> flow.Tensor:
    """Per-row ``KL(softmax(t) || softmax(s))`` over the last (key) dim, memory-lean.

    Args:
        student_scores: ``[..., L_q, L_k]`` scores before the softmax (attention or relation scores).
        teacher_scores: same shape, device and floating dtype; must be detached (gets no gradient).
        key_mask: None, or a 0/1 tensor (any numeric or bool dtype) of shape ``[B, 1, ..., 1, L_k]`` for
            scores ``[B, ..., L_q, L_k]`` (``[B, 1, 1, L_k]`` for attention: ``mask.reshape(B, 1, 1, L)``);
            keys with 0 are excluded from both softmaxes.
        chunk_elements: elements per chunk of the eager path (default :data:`DEFAULT_CHUNK_ELEMENTS`);
            it never changes the result beyond float rounding.

    Returns:
        ``[..., L_q]``: ``sum_k p_t (log p_t - log p_s)`` with ``p = softmax(x')``, ``x' = max(x, -1e30)``
        for valid keys and ``-1e30`` for excluded ones (:data:`EXCLUDED_SCORE`; what an excluded key holds,
        even inf or NaN, does not matter). So a key at ``-inf`` (or excluded) in both inputs contributes
        exactly 0, a row without any valid key gives 0 with a zero gradient, a valid key at ``-inf`` only
        in the student gives a huge finite ``~1e30 * p_t`` instead of inf, and NaN on valid keys propagates. The gradient for ``student_scores`` is
        ``(softmax(s') - softmax(t')) * dr`` per row; only the inputs are saved for backward.

    Example::

        >>> import oneflow as flow
        >>> s = flow.tensor([[[[0.0, 0.0], [0.0, 5.0]]]])
        >>> t = flow.tensor([[[[0.0, 0.0], [0.0, 0.0]]]])
        >>> [round(v, 4) for v in masked_row_kl(s, t).flatten().tolist()]  # KL(uniform || softmax(0, 5))
        [0.0, 1.8136]
        >>> masked_row_kl(s, t, flow.tensor([[[[1.0, 0.0]]]])).flatten().tolist()  # one valid key left
        [0.0, 0.0]
    """
    chunk_elements = _checked_chunk_elements(chunk_elements)
    if student_scores.ndim < 2:
        raise ValueError(f"student_scores must have shape [..., L_q, L_k], got {tuple(student_scores.shape)}")
    if key_mask is not None:
        _check_key_mask(student_scores, key_mask)
    items, rows, keys = _row_kl_layout(student_scores, key_mask)
    s = student_scores.reshape(items, rows, keys)
    t = teacher_scores.reshape(items, rows, keys)
    function = _row_kl_function(key_mask is not None, max(1, chunk_elements // max(1, rows * keys)))
    if key_mask is None:
        out = function.apply(s, t)
    else:
        out = function.apply(s, t, key_mask.reshape(items, 1, keys) == 0)
    return out.reshape(student_scores.shape[:-1])


def relation_scores(x: flow.Tensor, heads: int) -> flow.Tensor:
    """``[B, L, H] -> [B, R, L, L]``: the scores ``x_r x_r^T / sqrt(d)`` of ``R = heads`` heads of size
    ``d = H / R`` (head ``r`` is the column block ``r*d:(r+1)*d``).

    ``x`` is scaled once by ``d ** -0.25`` and made contiguous per head, then multiplied by itself with
    ``transpose_b`` (about 2x faster than ``matmul(x, x.transpose(-1, -2)) / sqrt(d)`` on strided heads on
    CPU, forward and backward). ``H`` must be divisible by ``heads`` (the caller validates).

    Example::

        >>> import oneflow as flow
        >>> scores = relation_scores(flow.tensor([[[1.0, 2.0], [3.0, 4.0]]]), 1)  # x x^T / sqrt(2)
        >>> [round(v, 4) for v in scores.flatten().tolist()]
        [3.5355, 7.7782, 7.7782, 17.6777]
    """
    batch, length, width = x.shape
    d = width // heads
    x = (x * (d ** -0.25)).reshape(batch, length, heads, d).permute(0, 2, 1, 3).contiguous()
    return flow.matmul(x, x, transpose_b=True)
