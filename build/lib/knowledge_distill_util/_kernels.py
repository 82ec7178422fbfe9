"""Compute kernels behind :mod:`knowledge_distill_util.functional`.

Inputs arrive validated (same shape, device and floating dtype; teacher already detached). Each function
returns a scalar with the original reduction. Only OneFlow ops that have CPU and CUDA kernels are used:
no numpy, no host round trips, no data-dependent Python, so every path also runs inside ``nn.Graph`` and
on global tensors.

Design (numbers measured on the 2-core CPU machine, see ``scripts/benchmark.py``):

* **Soft cross entropy** is a custom ``autograd.Function``. Its backward needs only
  ``softmax(s / T_s) - softmax(t / T_t)``. On local tensors in eager mode the rows are processed in chunks
  of about :data:`DEFAULT_CHUNK_ELEMENTS` elements: the forward keeps only per-chunk temporaries (they stay
  in the CPU cache) and saves nothing but the inputs; the backward recomputes the two softmaxes chunk by
  chunk and writes the gradient into one preallocated tensor. The extra peak memory is therefore one
  logits-sized tensor (the gradient itself) plus a few chunks. Inside ``nn.Graph`` (where the compiler
  plans memory and in-place slice writes are not cheap), on global tensors, and when everything fits in
  one chunk, the forward computes and saves the gradient direction once and the backward only scales it.
* **MSE** is a custom ``autograd.Function`` that saves only the difference ``a - b`` (its squares are summed
  chunk by chunk while in the CPU cache, never stored whole); its backward is a single scaled copy of it
  (and its negation for ``b`` when ``b`` requires a gradient: ``mseloss`` is symmetric).
* **Attention MSE** replaces the original ``where(x <= threshold, 0, x)`` (a comparison, a ``zeros_like``
  and a select, about 50x slower than an element-wise op on CPU) with OneFlow's single-pass ``threshold``
  op, whose backward is the matching single-pass mask; the MSE kernel above follows.
"""
import functools
from typing import Iterable, List, Optional, Tuple

import oneflow as flow
import oneflow.nn.functional as F

__all__ = [
    "DEFAULT_CHUNK_ELEMENTS",
    "soft_cross_entropy_mean",
    "mse_mean",
    "sum_of_mse",
    "masked",
    "sum_of_masked_mse",
]

Pair = Tuple[flow.Tensor, flow.Tensor]

#: Elements per row chunk of the eager soft cross entropy (4 MiB of float32 per temporary, so the few
#: per-chunk temporaries stay in the CPU's last-level cache). 1024 x 30522 logits run in 31 chunks.
DEFAULT_CHUNK_ELEMENTS = 1 << 20


def _mean_scale(numel: int) -> float:
    """``1 / numel``; NaN for empty tensors (the mean of nothing, as numpy and PyTorch give)."""
    return 1.0 / numel if numel else float("nan")


def _sum_all(x: flow.Tensor) -> flow.Tensor:
    """Sum of every element (local: as one 1-D reduction, 12 ms instead of 15 ms for 31M floats on CPU)."""
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


def _chunk_rows(num_classes: int, chunk_elements: int) -> int:
    return max(1, chunk_elements // max(1, num_classes))


def _use_chunks(student: flow.Tensor, chunk_rows: int) -> bool:
    """Chunk only local eager tensors with more rows than one chunk holds."""
    if student.is_global or student.is_lazy or student.ndim < 1:
        return False
    rows = student.numel() // max(1, student.shape[-1])
    return rows > chunk_rows


@functools.lru_cache(maxsize=64)
def _soft_cross_entropy_function(student_temperature: float, teacher_temperature: float, chunk_rows: int):
    """An ``autograd.Function`` class for one pair of temperatures and chunk size (cached per value).

    ``apply(s, t)`` returns ``-mean(softmax(t / T_t) * log_softmax(s / T_s))``; the gradient for ``s`` is
    ``(softmax(s / T_s) - softmax(t / T_t)) / (T_s * numel)``; ``t`` (detached) gets none.
    """
    t_s, t_t = student_temperature, teacher_temperature

    def loss_sum(s: flow.Tensor, t: flow.Tensor) -> flow.Tensor:
        """``sum(softmax(t / T_t) * log_softmax(s / T_s))`` over all elements of ``s``, ``t``."""
        return _sum_all(F.softmax(_scaled(t, t_t), dim=-1) * F.log_softmax(_scaled(s, t_s), dim=-1))

    def direction(s: flow.Tensor, t: flow.Tensor) -> flow.Tensor:
        """``softmax(s / T_s) - softmax(t / T_t)`` (a fresh tensor, safe to modify in place)."""
        q = F.softmax(_scaled(s, t_s), dim=-1)
        return q.sub_(F.softmax(_scaled(t, t_t), dim=-1))

    class SoftCrossEntropy(flow.autograd.Function):
        # The path taken is told to backward by what was saved (2 tensors: chunked, 1: not): reading a
        # Python attribute of ``ctx`` in backward corrupts memory at exit in OneFlow 0.9.
        @staticmethod
        def forward(ctx, s: flow.Tensor, t: flow.Tensor) -> flow.Tensor:
            if _use_chunks(s, chunk_rows):
                # Saves only the inputs; per-chunk temporaries die at once.
                rows_s, rows_t = s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1])
                parts = [loss_sum(a, b) for a, b in zip(rows_s.split(chunk_rows), rows_t.split(chunk_rows))]
                ctx.save_for_backward(s, t)
                total = flow.stack(parts).sum()
            else:
                p = F.softmax(_scaled(t, t_t), dim=-1)
                total = _sum_all(p * F.log_softmax(_scaled(s, t_s), dim=-1))
                ctx.save_for_backward(F.softmax(_scaled(s, t_s), dim=-1).sub_(p))
            return total * -_mean_scale(s.numel())

        @staticmethod
        def backward(ctx, dy: flow.Tensor):
            saved = ctx.saved_tensors
            if len(saved) == 1:
                (g,) = saved
                return g * (dy * (_mean_scale(g.numel()) / t_s)), None
            s, t = saved
            scale = dy * (_mean_scale(s.numel()) / t_s)
            rows_s, rows_t = s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1])
            grad = flow.empty_like(rows_s)
            for start in range(0, rows_s.shape[0], chunk_rows):
                stop = start + chunk_rows
                grad[start:stop] = direction(rows_s[start:stop], rows_t[start:stop]).mul_(scale)
            return grad.reshape(s.shape), None

    SoftCrossEntropy.__name__ = SoftCrossEntropy.__qualname__ = "SoftCrossEntropy"
    return SoftCrossEntropy


def soft_cross_entropy_mean(
    student_logits: flow.Tensor,
    teacher_logits: flow.Tensor,
    student_temperature: float,
    teacher_temperature: float,
    *,
    chunk_elements: Optional[int] = None,
) -> flow.Tensor:
    """``-mean(softmax(t / T_t) * log_softmax(s / T_s))`` over all elements (no ``T**2``).

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
    if chunk_elements is None:
        chunk_elements = DEFAULT_CHUNK_ELEMENTS
    if isinstance(chunk_elements, bool) or not isinstance(chunk_elements, int) or chunk_elements < 1:
        raise ValueError(
            f"chunk_elements must be a positive integer (elements per chunk) or None for the default "
            f"{DEFAULT_CHUNK_ELEMENTS}, got {chunk_elements!r}"
        )
    num_classes = student_logits.shape[-1] if student_logits.ndim else 1
    function = _soft_cross_entropy_function(
        float(student_temperature), float(teacher_temperature), _chunk_rows(num_classes, chunk_elements)
    )
    return function.apply(student_logits, teacher_logits)


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
