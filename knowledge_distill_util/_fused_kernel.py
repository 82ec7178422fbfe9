"""The autograd kernel of :func:`~knowledge_distill_util.fused_linear.fused_linear_distill_loss`: the row-chunk
loop that computes the logits ``h_c @ W.T + b`` of ``chunk`` rows at a time, the chunk's loss and its logit
gradient ``G_c``, and folds ``G_c`` into ``dL/dh``, ``dL/dW`` and ``dL/db`` (the method, the memory and the
``nn.Graph`` closed forms are described in :mod:`knowledge_distill_util.fused_linear`, which checks the inputs
and calls :func:`fused_function`).

Shapes: ``h [N, H]``, ``W [V, H]``, ``b [V]``, logits and ``G_c [n, V]`` for a chunk of ``n`` rows.
"""
from typing import Callable, List, Optional, Tuple, Union

import oneflow as flow
import oneflow.nn.functional as F

__all__ = ["FUSED_CHUNK_BYTES", "FusedPlan", "fused_function", "closed_forms", "linear", "owned", "part"]

#: Bytes of one chunk's logits for the default chunk size, and of one block of ``dL/dW`` rows.
FUSED_CHUNK_BYTES = 64 << 20

Temperature = Union[float, flow.Tensor]


def spans(rows: int, chunk: int) -> List[Tuple[int, int]]:
    """``(start, length)`` of the chunks of ``chunk`` rows covering ``rows``."""
    return [(start, min(chunk, rows - start)) for start in range(0, rows, chunk)]


def owned(x):
    """``x``, or a copy of it when it is an eager view that starts inside its storage.

    OneFlow 0.9 drops the storage offset of a view when it is detached, and a view of the detached tensor
    (``narrow``, ``reshape``, ``unsqueeze``) then reads from the start of the storage:
    ``v.narrow(0, 3, 3).detach().unsqueeze(-1)`` holds ``v[0:3]``. The losses detach their targets,
    temperatures and masks, so every row chunk handed to them is such a copy.
    """
    if not isinstance(x, flow.Tensor) or x.is_lazy or x.is_global or x.storage_offset() == 0:
        return x
    return x.clone()


def part(x: Temperature, start: int, length: int, whole: int) -> Temperature:
    """Rows ``start:start+length`` of a per-row tensor, as a tensor of its own (numbers and ``None`` pass
    through)."""
    if not isinstance(x, flow.Tensor) or length == whole:
        return x
    return owned(x.narrow(0, start, length))


def linear(x: flow.Tensor, weight: flow.Tensor, bias: Optional[flow.Tensor]) -> flow.Tensor:
    """``x @ weight.T (+ bias)``: ``[n, H] x [V, H] -> [n, V]``."""
    out = flow.matmul(x, weight, transpose_b=True)
    if bias is None:
        return out
    # in place when nothing records it (about 2x faster on CPU than a new tensor)
    return out + bias if out.requires_grad or out.is_lazy else out.add_(bias)


def _column_sum(g: flow.Tensor) -> flow.Tensor:
    """``g.sum(dim=0)`` ``[n, V] -> [V]``; eager as ``ones [1, n] @ g`` (about 1.6x faster on CPU)."""
    if g.is_lazy:
        return g.sum(dim=0)
    return flow.matmul(flow.ones(1, g.shape[0], dtype=g.dtype, device=g.device), g).reshape(g.shape[1])


# --------------------------------------------------------------------------------------------------
# the closed-form logit gradients used inside nn.Graph
# --------------------------------------------------------------------------------------------------


def _softmax_difference(s, t, t_s: Temperature, t_t: Temperature, weights) -> flow.Tensor:
    """``d(sum_n w_n r_n)/ds`` of soft cross entropy and KL: ``w_n (softmax(s/T_s) - softmax(t/T_t)) / T_s``
    (``weights``: a number or ``[n]``)."""
    def divided(x, temperature):
        return x / temperature.unsqueeze(-1) if isinstance(temperature, flow.Tensor) else x / temperature

    g = F.softmax(divided(s, t_s), dim=-1) - F.softmax(divided(t, t_t), dim=-1)
    factor = weights / t_s
    return g * (factor.unsqueeze(-1) if isinstance(factor, flow.Tensor) else factor)


def closed_forms():
    """Registered loss function -> its closed-form logit gradient ``(s, t, T_s, T_t, weights) -> G``."""
    from . import functional

    return {functional.kl_div: _softmax_difference, functional.soft_cross_entropy: _softmax_difference}


# --------------------------------------------------------------------------------------------------
# one call's chunk loop
# --------------------------------------------------------------------------------------------------


class FusedPlan:
    """What one call fixes: the loss and its keywords, the teacher's chunks, mask and temperatures, the
    reduction, rows per chunk, which gradients are needed ``(dh, dW, db)``, the closed form (``nn.Graph``)
    or None (eager: the loss's own autograd) and whether the tensors are lazy."""

    def __init__(self, loss_fn: Callable, options: dict, teacher_chunk: Callable, mask, t_s, t_t, scaling: bool,
                 reduction: str, chunk: int, needs: Tuple[bool, bool, bool], closed_form: Optional[Callable],
                 lazy: bool):
        self.loss_fn, self.options, self.teacher_chunk = loss_fn, options, teacher_chunk
        self.mask, self.t_s, self.t_t, self.scaling = mask, t_s, t_t, scaling
        self.chunk, self.needs, self.closed_form, self.lazy = chunk, needs, closed_form, lazy
        self.per_row = reduction == "none"
        self.kind = "none" if self.per_row else "sum"

    def chunk_loss(self, s, start: int, length: int, whole: int, kind: str):
        """The loss of the student's chunk logits ``s`` against the teacher's rows ``start:start+length``."""
        return self.loss_fn(s, self.teacher_chunk(start, length),
                            student_temperature=part(self.t_s, start, length, whole),
                            teacher_temperature=part(self.t_t, start, length, whole), temperature_scaling=self.scaling,
                            mask=part(self.mask, start, length, whole), reduction=kind, **self.options)

    def value_and_logit_grad(self, logits, start: int, length: int, whole: int, dy):
        """The chunk's loss (sum, or rows) and ``G_c`` (``dy``: ``None`` or the rows' upstream gradient)."""
        if self.closed_form is None:  # eager: the registered loss's own autograd
            with flow.enable_grad():
                s = logits.detach().requires_grad_()
                value = self.chunk_loss(s, start, length, whole, self.kind)
                (g,) = flow.autograd.grad(value, [s], grad_outputs=None if dy is None else [dy])
            return value.detach(), g
        value = self.chunk_loss(logits, start, length, whole, self.kind)
        t_s, t_t = part(self.t_s, start, length, whole), part(self.t_t, start, length, whole)
        weights = part(self.mask, start, length, whole)
        weights = 1.0 if weights is None else weights
        if self.scaling:
            weights = weights * t_s * t_t
        if dy is not None:
            weights = weights * dy
        return value, self.closed_form(logits, self.teacher_chunk(start, length), t_s, t_t, weights)

    def gradients(self, h, w, b, dy):
        """Loop over the row chunks: ``(values, dh, dW, db)`` (each gradient ``None`` when not needed)."""
        need_h, need_w, need_b = self.needs
        rows = h.shape[0]
        block = max(1, FUSED_CHUNK_BYTES // max(1, w.shape[1] * w.element_size()))
        values, dh_parts, dw, db = [], [], None, None
        for start, length in spans(rows, self.chunk):
            h_c = h.narrow(0, start, length) if length != rows else h
            logits = linear(h_c, w, b)
            value, g = self.value_and_logit_grad(logits, start, length, rows, None if dy is None else
                                                 part(dy, start, length, rows))
            del logits
            values.append(value)
            if need_h:
                dh_parts.append(flow.matmul(g, w))
            if need_w:
                dw = _add_weight_grad(dw, g, h_c, block, self.lazy)
            if need_b:
                column = _column_sum(g)
                db = column if db is None else (db + column if self.lazy else db.add_(column))
        dh = None
        if need_h:
            dh = dh_parts[0] if len(dh_parts) == 1 else flow.cat(dh_parts, dim=0)
        return values, dh, dw, db

    def forward_values(self, h, w, b) -> list:
        """Per-chunk loss values without gradients."""
        rows = h.shape[0]
        return [self.chunk_loss(linear(h.narrow(0, start, length) if length != rows else h, w, b), start, length,
                                rows, self.kind)
                for start, length in spans(rows, self.chunk)]

    def joined(self, values):
        """The chunks' values as one: the row losses ``[N]`` concatenated, or the sum of the chunk sums."""
        if self.per_row:
            return values[0] if len(values) == 1 else flow.cat(values, dim=0)
        total = values[0]
        for value in values[1:]:
            total = total + value
        return total


def _add_weight_grad(dw, g, h_c, block: int, lazy: bool):
    """``dw + g^T h_c`` (``[V, H]``); eager: added in place in blocks of ``block`` vocabulary rows, so no
    second ``[V, H]`` temporary exists."""
    vocab = g.shape[1]
    if dw is None and (lazy or vocab <= block):
        return flow.matmul(g, h_c, transpose_a=True)
    if lazy:
        return dw + flow.matmul(g, h_c, transpose_a=True)
    if dw is None:
        dw = flow.zeros(vocab, h_c.shape[1], dtype=h_c.dtype, device=h_c.device)
    for start, length in spans(vocab, block):
        if length == vocab:
            dw.add_(flow.matmul(g, h_c, transpose_a=True))
        else:
            dw.narrow(0, start, length).add_(flow.matmul(g.narrow(1, start, length), h_c, transpose_a=True))
    return dw


# --------------------------------------------------------------------------------------------------
# the autograd.Function
# --------------------------------------------------------------------------------------------------


def fused_function(plan: FusedPlan, has_bias: bool):
    """An ``autograd.Function`` class for one call; ``apply(h, w[, b])`` returns the masked loss sum (a
    scalar) or, for ``reduction="none"``, the masked row losses ``[N]``.

    Everything but the differentiable inputs is captured here (OneFlow 0.9: backward must not read
    ``ctx`` attributes; which gradients were saved is told by ``plan.needs``). In eager mode the first
    backward scales the saved gradients in place and hands them over (no second ``[V, H]`` tensor); a second
    backward of a retained graph recomputes them.
    """
    needs = plan.needs

    class FusedLinearDistill(flow.autograd.Function):
        @staticmethod
        def forward(ctx, h, w, *maybe_b):
            b = maybe_b[0] if maybe_b else None
            if plan.per_row or not any(needs):
                if any(needs):
                    ctx.save_for_backward(h, w, *maybe_b)
                return plan.joined(plan.forward_values(h, w, b))
            values, dh, dw, db = plan.gradients(h, w, b, None)
            grads = [g for g in (dh, dw, db) if g is not None]
            if plan.lazy:
                ctx.save_for_backward(*grads)
            else:  # + the inputs (alive anyway) and a "handed over" flag: see backward
                ctx.save_for_backward(*grads, flow.zeros(1, dtype=flow.int8, device=h.device), h, w, *maybe_b)
            return plan.joined(values)

        @staticmethod
        def backward(ctx, dy):
            saved = list(ctx.saved_tensors)
            if plan.per_row:
                h, w = saved[0], saved[1]
                b = saved[2] if len(saved) > 2 else None
                _, dh, dw, db = plan.gradients(h, w, b, dy)
                return (dh, dw) + ((db,) if has_bias else ())
            count = sum(needs)
            grads, rest = saved[:count], saved[count:]
            if plan.lazy:
                grads = [g * dy for g in grads]
            elif not bool(rest[0].item()):  # the first backward scales the saved gradients in place, hands them over
                rest[0].fill_(1)
                grads = [g.mul_(dy) for g in grads]
            else:  # a second backward of a retained graph: they are gone, recompute
                _, dh, dw, db = plan.gradients(rest[1], rest[2], rest[3] if len(rest) > 3 else None, None)
                grads = [g * dy for g in (dh, dw, db) if g is not None]
            grads = iter(grads)
            dh, dw, db = (next(grads) if need else None for need in needs)
            return (dh, dw) + ((db,) if has_bias else ())

    FusedLinearDistill.__name__ = FusedLinearDistill.__qualname__ = "FusedLinearDistill"
    return FusedLinearDistill
