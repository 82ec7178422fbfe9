"""AdamW with linear warm-up and linear decay, identical in eager and ``nn.Graph`` training (optionally with
the original toolkit's epsilon and global-norm gradient clipping)."""
from typing import Any, Dict, List

import oneflow as flow
import oneflow.nn as nn

__all__ = ["NO_DECAY", "param_groups", "make_optimizer", "clip_gradients", "make_scheduler"]

#: Parameter-name fragments that get no weight decay (biases and LayerNorms, as in BERT).
NO_DECAY = ("bias", "LayerNorm", "layernorm", "layer_norm", "norm.weight")


def param_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """The trainable parameters of ``model`` (a module, or anything with ``named_parameters()`` such as a
    :class:`~.distiller.Distiller`) in two groups: with ``weight_decay`` and without (:data:`NO_DECAY`)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if any(key in name for key in NO_DECAY) else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def make_optimizer(model: nn.Module, learning_rate: float, weight_decay: float, eps: float = 1e-8,
                   max_grad_norm: float = 0.0) -> flow.optim.AdamW:
    """AdamW over :func:`param_groups` of ``model`` with epsilon ``eps``. ``max_grad_norm > 0``: each group
    carries OneFlow's clipping options, which ``nn.Graph`` applies (the eager step clips itself:
    :func:`clip_gradients`)."""
    groups = param_groups(model, weight_decay)
    if max_grad_norm > 0:
        for group in groups:
            group.update(clip_grad_max_norm=float(max_grad_norm), clip_grad_norm_type=2.0)
    return flow.optim.AdamW(groups, lr=learning_rate, eps=eps)


def clip_gradients(optimizer, max_grad_norm: float) -> None:
    """Scale every gradient the optimizer updates by ``min(1, max_grad_norm / global L2 norm)``, the norm
    taken over all of them together (the original's ``grad_clipping.by_global_norm``); nothing when
    ``max_grad_norm <= 0``."""
    if max_grad_norm > 0:
        params = [p for group in optimizer.param_groups for p in group.parameters if p.grad is not None]
        if params:
            flow.nn.utils.clip_grad_norm_(params, max_grad_norm, 2.0)


def make_scheduler(optimizer, total_steps: int, warmup_steps: int):
    """Linear warm-up then linear decay to 0, with schedulers that ``nn.Graph`` supports.

    The learning rate of step ``s`` (0-based) is ``lr * min(1, s / warmup) * (1 - max(s, warmup) / total)``
    (OneFlow's ``WarmupLR`` over ``PolynomialLR(power=1)``), identical in eager and graph mode.

    >>> import oneflow as flow
    >>> opt = flow.optim.AdamW([flow.nn.Parameter(flow.zeros(1))], lr=1.0)
    >>> sched, rates = make_scheduler(opt, 10, 2), []
    >>> for _ in range(4):
    ...     rates.append(round(opt.param_groups[0]["lr"], 3)); opt.step(); sched.step()
    >>> rates
    [0.0, 0.4, 0.8, 0.7]
    """
    decay = flow.optim.lr_scheduler.PolynomialLR(
        optimizer, decay_batch=max(1, total_steps), end_learning_rate=0.0, power=1.0
    )
    if warmup_steps <= 0:
        return decay
    return flow.optim.lr_scheduler.WarmupLR(decay, warmup_factor=0.0, warmup_iters=warmup_steps,
                                            warmup_method="linear")
