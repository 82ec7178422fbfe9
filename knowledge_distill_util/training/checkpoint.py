"""Atomic training checkpoints: a run killed at any moment resumes from the last complete one.

Layout of a checkpoint directory ``root``::

    root/LATEST                 name of the newest complete checkpoint (replaced atomically)
    root/step-00000120/         model/ (flow.save), optimizer/ (flow.save), state.json

A checkpoint is written to a temporary directory beside it, renamed into place (``os.replace``), and
only then named in ``LATEST`` (written to a temporary file and ``os.replace``-d); older checkpoints are
deleted afterwards. A crash at any point leaves ``LATEST`` naming a complete checkpoint (or absent).
"""
import json
import os
import shutil
import tempfile
from typing import Any, Dict, Optional

import oneflow as flow

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "atomic_write_text"]

LATEST = "LATEST"


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def save_checkpoint(root: str, step: int, model_state: Dict, optimizer_state: Optional[Dict],
                    state: Dict[str, Any]) -> str:
    """Write checkpoint ``step`` under ``root`` atomically; returns its directory."""
    os.makedirs(root, exist_ok=True)
    name = f"step-{step:08d}"
    final = os.path.join(root, name)
    staging = tempfile.mkdtemp(prefix=f".{name}.", dir=root)
    try:
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
    """Directory of the newest complete checkpoint under ``root``, or None."""
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
