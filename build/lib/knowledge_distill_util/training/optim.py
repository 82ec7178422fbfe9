"""AdamW with linear warm-up and linear decay, identical in eager and ``nn.Graph`` training."""
from typing import Any, Dict, List

import oneflow as flow
import oneflow.nn as nn

__all__ = ["NO_DECAY", "param_groups", "make_optimizer", "make_scheduler"]

#: Parameter-name fragments that get no weight decay (biases and LayerNorms, as in BERT).
NO_DECAY = ("bias", "LayerNorm", "layernorm", "layer_norm", "norm.weight")


def param_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """The trainable parameters of ``model`` in two groups: with ``weight_decay`` and without (:data:`NO_DECAY`)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if any(key in name for key in NO_DECAY) else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def make_optimizer(model: nn.Module, learning_rate: float, weight_decay: float) -> flow.optim.AdamW:
    """AdamW over :func:`param_groups` of ``model``."""
    return flow.optim.AdamW(param_groups(model, weight_decay), lr=learning_rate)


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
