"""What a :class:`~knowledge_distill_util.engine.Distiller` run calls besides the model: per-step inputs,
epoch-end hooks, and the checks that stop a run whose numbers stopped being finite.

- :class:`StepInputs`: extra forward inputs drawn at every step (BERT-of-Theseus's replacement coins, a
  weight schedule's factors), merged into the batch's keyword inputs after it is split (and sharded): in eager
  mode as given (NumPy arrays stay arrays), under ``nn.Graph`` as tensors (shared by every rank). The state
  of the generator they are drawn from is checkpointed.
- :class:`EpochEnd`: called after the last step of each epoch and of the run, before that step's
  checkpoint; its ``state()`` is checkpointed (JSON) and handed back to ``load_state`` on resume.
- :class:`NonFiniteLossError`, :func:`non_finite_weight`: a NaN/inf loss stops the run at its step; NaN/inf
  weights are never checkpointed.
"""
from typing import Any, Dict, Iterable, Optional, Protocol, Tuple, runtime_checkable

import numpy as np
import oneflow as flow

__all__ = ["StepInputs", "EpochEnd", "NonFiniteLossError", "non_finite_weight"]


@runtime_checkable
class StepInputs(Protocol):
    """``step_inputs(step, total) -> {name: array or tensor}`` for 0-based ``step`` of ``total``;
    ``rng_state()`` / ``set_rng_state(state)`` save and restore (JSON values) the generator they come from."""

    def step_inputs(self, step: int, total: int) -> Dict[str, Any]: ...

    def rng_state(self): ...

    def set_rng_state(self, state) -> None: ...


@runtime_checkable
class EpochEnd(Protocol):
    """``hook(epoch, step)`` (``epoch`` from 0, ``step`` the steps done) on every rank after the last step of
    each epoch (epochs need data with a ``len``) and after the run's last step, before that step's checkpoint;
    the student is put back in train mode afterwards. ``state()`` is stored in the checkpoints (JSON) and
    handed back to ``load_state`` (None when the checkpoint has none) when a run resumes."""

    def __call__(self, epoch: int, step: int) -> None: ...

    def state(self) -> Dict: ...

    def load_state(self, state: Optional[Dict]) -> None: ...


class NonFiniteLossError(FloatingPointError):
    """The loss (``weight`` None) or the weight ``weight`` became NaN or infinite at ``step`` (1-based):
    training stopped before anything of that step was saved. ``terms``: the step's loss terms (loss only:
    ``{}`` for a weight); ``lr``: the step's learning rate."""

    def __init__(self, message: str, step: int, terms: Dict[str, float], lr: float, weight: Optional[str] = None):
        super().__init__(message)
        self.step, self.terms, self.lr, self.weight = step, dict(terms), lr, weight


def non_finite_weight(named: Iterable[Tuple[str, flow.Tensor]]) -> Optional[str]:
    """The name of the first parameter holding a NaN or inf (None when all are finite; one device sync)."""
    with flow.no_grad():
        named = [(name, param.to_local() if param.is_global else param) for name, param in named]
        if not named:
            return None
        finite = flow.stack([flow.isfinite(param).all() for _, param in named]).numpy()
    return None if finite.all() else named[int(np.argmin(finite))][0]
