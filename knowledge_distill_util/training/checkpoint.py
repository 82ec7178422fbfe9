"""Atomic training checkpoints and the resume state they carry.

Layout of a stage's checkpoint directory ``root``::

    root/LATEST                 name of the newest complete checkpoint (replaced atomically)
    root/step-00000120/         model/ and optimizer/ (flow.save), state.json

A checkpoint is written to a temporary directory beside it, renamed into place (``os.replace``), and
only then named in ``LATEST``; older checkpoints are deleted afterwards. A crash at any point leaves
``LATEST`` naming a complete checkpoint (or absent). :class:`Checkpointer` owns everything a resumed
run needs to continue exactly: weights, optimizer (or ``nn.Graph``) state, the step, OneFlow's default
generator and the state of a model's own step-input generator.

Dropout: each ``nn.Dropout`` of OneFlow 0.9 draws from its own generator whose ``get_state()`` does not
change as it draws (it returns the seed only), so its position cannot be saved. In eager mode with
``--reseed_dropout`` the trainer seeds every dropout generator from ``(seed, step)`` before each step and a
resume with dropout is exact; without it (the default, which keeps the published numbers), and under
``nn.Graph`` (the compiled dropout keeps a state of its own that reseeding does not reach), a resumed run
with dropout draws other masks than the uninterrupted one (with dropout 0 every resume is exact).
"""
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import oneflow as flow
import oneflow.nn as nn

from .._io import atomic_write_text, directory_mode
from .config import ConfigError
from .distributed import is_distributed, to_local_state

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "Checkpointer",
           "Resumed"]

LATEST = "LATEST"
logger = logging.getLogger(__name__)


def save_checkpoint(root: str, step: int, model_state: Dict, optimizer_state: Optional[Dict],
                    state: Dict[str, Any]) -> str:
    """Write checkpoint ``step`` under ``root`` atomically; returns its directory."""
    os.makedirs(root, exist_ok=True)
    name = f"step-{step:08d}"
    final = os.path.join(root, name)
    staging = tempfile.mkdtemp(prefix=f".{name}.", dir=root)
    try:
        os.chmod(staging, directory_mode())  # mkdtemp makes 0o700: the umask's permissions, as every output
        flow.save(model_state, os.path.join(staging, "model"))
        if optimizer_state is not None:
            flow.save(optimizer_state, os.path.join(staging, "optimizer"))
        with open(os.path.join(staging, "state.json"), "w", encoding="utf-8") as stream:
            json.dump(dict(state, step=step), stream)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    atomic_write_text(os.path.join(root, LATEST), name)
    for entry in os.listdir(root):  # older checkpoints and leftovers of killed writes
        if entry not in (name, LATEST) and (entry.startswith("step-") or entry.startswith(".step-")):
            shutil.rmtree(os.path.join(root, entry), ignore_errors=True)
    return final


def latest_checkpoint(root: str) -> Optional[str]:
    """Directory of the checkpoint ``LATEST`` names under ``root`` if it is complete, else None."""
    pointer = os.path.join(root, LATEST)
    if not os.path.isfile(pointer):
        return None
    with open(pointer, encoding="utf-8") as stream:
        name = stream.read().strip()
    path = os.path.join(root, name)
    return path if os.path.isfile(os.path.join(path, "state.json")) else None


def load_checkpoint(path: str):
    """``(model_state, optimizer_state or None, state)`` of a checkpoint directory."""
    with open(os.path.join(path, "state.json"), encoding="utf-8") as stream:
        state = json.load(stream)
    optimizer_dir = os.path.join(path, "optimizer")
    optimizer_state = flow.load(optimizer_dir) if os.path.exists(optimizer_dir) else None
    return flow.load(os.path.join(path, "model")), optimizer_state, state


@dataclass
class Resumed:
    """What a checkpoint restores: the finished step count and the states to load."""

    path: str
    step: int
    model_state: Dict
    optimizer_state: Optional[Dict]
    state: Dict[str, Any]


class Checkpointer:
    """Saves the checkpoints of one training stage under ``root`` and restores the newest on resume.

    ``step_inputs``: the model's :class:`~knowledge_distill_util.training.trainer.StepInputs` (or None),
    whose generator state is saved too; ``epoch_end``: the stage's
    :class:`~knowledge_distill_util.training.trainer.EpochEnd` hook (or None), whose ``state()`` is saved
    (as ``"epoch_end"``) and restored.
    """

    def __init__(self, root: str, model: nn.Module, use_graph: bool, step_inputs=None, epoch_end=None):
        self.root = root
        self.model = model
        self.use_graph = use_graph
        self.step_inputs = step_inputs
        self.epoch_end = epoch_end

    def _candidates(self) -> List[str]:
        named = latest_checkpoint(self.root)
        others = sorted((os.path.join(self.root, e) for e in os.listdir(self.root) if e.startswith("step-")),
                        reverse=True) if os.path.isdir(self.root) else []
        return ([named] if named else []) + [p for p in others if p != named]

    def restore(self) -> Optional[Resumed]:
        """Load the newest readable checkpoint (falling back to older ones, saying so); None when there is none.

        Restores the random generators at once; the caller loads the model and optimizer states.
        Raises :class:`~.config.ConfigError` when checkpoints exist but none is readable (nothing is deleted).
        """
        candidates = self._candidates()
        for path in candidates:
            try:
                model_state, optimizer_state, state = load_checkpoint(path)
            except Exception as error:  # noqa: BLE001 - any unreadable file: try the next checkpoint
                logger.warning("checkpoint %s is unreadable (%s); trying an older one", path, error)
                continue
            if bool(state.get("use_graph")) != bool(self.use_graph):
                raise ConfigError(
                    f"checkpoint {path} was written with use_graph={state.get('use_graph')} but this run has "
                    f"use_graph={self.use_graph}; resume with the same --use_graph setting"
                )
            self._restore_rng(state)
            return Resumed(path, int(state["step"]), model_state, optimizer_state, state)
        if candidates:
            raise ConfigError(f"no readable checkpoint under {self.root} ({len(candidates)} found, all unreadable); "
                             f"nothing was deleted: restore them or move the directory away and train anew")
        return None

    def _restore_rng(self, state: Dict) -> None:
        flow.set_rng_state(flow.tensor(state["flow_rng"], dtype=flow.uint8))
        if self.step_inputs is not None and "step_inputs_rng" in state:
            self.step_inputs.set_rng_state(state["step_inputs_rng"])
        if self.epoch_end is not None:
            self.epoch_end.load_state(state.get("epoch_end"))

    def clear(self) -> None:
        """Delete this stage's checkpoints (a fresh, non-resumed run)."""
        if os.path.isdir(self.root):
            shutil.rmtree(self.root)

    def save(self, step: int, optimizer, graph=None) -> str:
        """Write checkpoint ``step``: weights, optimizer (or graph) state and the generators' states."""
        state = {"flow_rng": flow.get_rng_state().numpy().tolist(), "use_graph": graph is not None}
        if self.step_inputs is not None:
            state["step_inputs_rng"] = self.step_inputs.rng_state()
        if self.epoch_end is not None:
            state["epoch_end"] = self.epoch_end.state()
        optimizer_state = graph.state_dict() if graph is not None else optimizer.state_dict()
        model_state = self.model.state_dict()
        if is_distributed():  # global tensors (graph mode) are saved as their full local values
            model_state, optimizer_state = to_local_state(model_state), to_local_state(optimizer_state)
        return save_checkpoint(self.root, step, model_state, optimizer_state, state)
