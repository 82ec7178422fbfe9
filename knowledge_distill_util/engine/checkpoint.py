"""Atomic training checkpoints and the resume state they carry.

Layout of a stage's checkpoint directory ``root`` (no pickle: safetensors and JSON only)::

    root/LATEST                            name of the newest complete checkpoint (replaced atomically)
    root/step-00000120/model/model.safetensors          the model's state_dict
    root/step-00000120/optimizer/optimizer.safetensors  the optimizer's state_dict (eager) or the
                                                        nn.Graph's state_dict (graph mode)
    root/step-00000120/state.json          step, generator states, use_graph, the epoch-end hook's state

Each ``.safetensors`` file holds every tensor of its (nested) state under a flattened key and the rest of
the structure (ints, floats, lists, strings) in its metadata; a round trip is exact (see
:mod:`knowledge_distill_util._state`). A checkpoint written by earlier versions (``model/pickled_data``,
OneFlow's pickle) is refused before anything is read, naming the one-time conversion
``python -m knowledge_distill_util convert-checkpoint ROOT``.

A checkpoint is written to a temporary directory beside it and swapped into place
(:func:`~knowledge_distill_util._io.replace_directory`), and only then named in ``LATEST``; older
checkpoints are deleted afterwards. A crash at any point leaves ``LATEST`` naming a complete checkpoint (or
absent). ``LATEST`` is trusted only when it holds a plain ``step-NNNNNNNN`` name whose directory (symlinks
resolved) lies directly inside ``root``; otherwise it is ignored with a warning, as is a ``step-*`` entry
that resolves outside ``root``, and the newest checkpoint inside ``root`` is used: a run never resumes from
another run's files (:func:`resume_point`). A checkpoint holds everything a resumed run needs to continue
exactly (written by :mod:`knowledge_distill_util.engine.run`): weights, optimizer (or ``nn.Graph``) state,
the step, the data position, the global generators, the step inputs' generator and the epoch-end hook's
state.

Dropout: each ``nn.Dropout`` of OneFlow 0.9 draws from its own generator whose ``get_state()`` does not
change as it draws (it returns the seed only), so its position cannot be saved. In eager mode with
``--reseed_dropout`` (``TrainingConfig(reseed_dropout=True)``, the Distiller's default) the loop seeds every
dropout generator from ``(seed, step)`` before each step and a resume with dropout is exact; without it (the
recipes' default, which keeps the published numbers), and under
``nn.Graph`` (the compiled dropout keeps a state of its own that reseeding does not reach), a resumed run
with dropout draws other masks than the uninterrupted one (with dropout 0 every resume is exact).
"""
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from .._io import atomic_write_file, atomic_write_text, read_json, replace_directory
from .._state import LegacyPickleError, is_legacy_directory, legacy_error, read_state, state_bytes
from .._errors import ConfigError

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "checkpoint_candidates", "resume_point",
           "Resumed"]

LATEST = "LATEST"
#: A checkpoint's directory name.
STEP_NAME = re.compile(r"step-[0-9]{8}")
MODEL, OPTIMIZER, STATE = "model", "optimizer", "state.json"
logger = logging.getLogger(__name__)


def _file(part: str) -> str:
    return os.path.join(part, f"{part}.safetensors")


def save_checkpoint(root: str, step: int, model_state: Dict, optimizer_state: Optional[Dict],
                    state: Dict[str, Any]) -> str:
    """Write checkpoint ``step`` under ``root`` atomically; returns its directory.

    ``model_state``/``optimizer_state``: (nested) state dicts of local tensors and plain values (a
    ``TypeError`` names anything else before a file is written); ``state``: JSON values.
    """
    name = f"step-{step:08d}"
    final = os.path.join(root, name)
    parts = {MODEL: state_bytes(model_state)}
    if optimizer_state is not None:
        parts[OPTIMIZER] = state_bytes(optimizer_state)
    text = json.dumps(dict(state, step=step))

    def fill(directory: str) -> None:
        for part, data in parts.items():
            atomic_write_file(os.path.join(directory, _file(part)), lambda stream, data=data: stream.write(data))
        atomic_write_text(os.path.join(directory, STATE), text)

    os.makedirs(root, exist_ok=True)
    if os.path.islink(final):  # a link is not ours to write through; removing it deletes no data
        os.unlink(final)
    replace_directory(final, fill)
    atomic_write_text(os.path.join(root, LATEST), name)
    for entry in os.listdir(root):  # older checkpoints and leftovers of killed writes (links are left alone)
        path = os.path.join(root, entry)
        if entry not in (name, LATEST) and (entry.startswith("step-") or entry.startswith(".step-")) \
                and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
    return final


def _inside(root: str, path: str) -> bool:
    """True when ``path`` (symlinks resolved) is a direct child of ``root`` (symlinks resolved)."""
    return os.path.dirname(os.path.realpath(path)) == os.path.realpath(root)


def latest_checkpoint(root: str) -> Optional[str]:
    """Directory of the checkpoint ``LATEST`` names under ``root`` if it is complete, else None.

    ``LATEST`` must hold a ``step-NNNNNNNN`` name whose directory lies inside ``root`` (symlinks resolved);
    any other content (an absolute path, ``../other/step-...``, a link leading out of ``root``) is ignored
    with a warning and None is returned.
    """
    pointer = os.path.join(root, LATEST)
    if not os.path.isfile(pointer):
        return None
    with open(pointer, encoding="utf-8") as stream:
        name = stream.read().strip()
    path = os.path.join(root, name)
    if not STEP_NAME.fullmatch(name) or not _inside(root, path):
        logger.warning("%s names %r, not a step-NNNNNNNN checkpoint inside %s; ignoring it (a run resumes only "
                       "from its own checkpoints)", pointer, name, root)
        return None
    return path if os.path.isfile(os.path.join(path, STATE)) else None


def _refuse_legacy(path: str) -> None:
    for part in (MODEL, OPTIMIZER):
        if is_legacy_directory(os.path.join(path, part), f"{part}.safetensors"):
            raise legacy_error("checkpoint", path, os.path.dirname(os.path.abspath(path)))


def load_checkpoint(path: str):
    """``(model_state, optimizer_state or None, state)`` of a checkpoint directory.

    Reads JSON and safetensors only. Raises :class:`~knowledge_distill_util._state.LegacyPickleError`
    (before reading anything) for a checkpoint in OneFlow's pickle layout; ``FileNotFoundError`` /
    ``ValueError`` naming the file when a part is missing, unreadable or a link leading outside ``path``.
    """
    _refuse_legacy(path)
    for name in (STATE, _file(MODEL), _file(OPTIMIZER)):  # a part linked to another run's files is not read
        real, top = os.path.realpath(os.path.join(path, name)), os.path.realpath(path)
        if os.path.lexists(os.path.join(path, name)) and os.path.commonpath([real, top]) != top:
            raise ValueError(f"{os.path.join(path, name)} leads outside the checkpoint (to {real})")
    state = read_json(os.path.join(path, STATE), "checkpoint state")
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint state {os.path.join(path, STATE)} holds a {type(state).__name__}, not an object")
    optimizer_file = os.path.join(path, _file(OPTIMIZER))
    optimizer_state = read_state(optimizer_file) if os.path.exists(optimizer_file) else None
    return read_state(os.path.join(path, _file(MODEL))), optimizer_state, state


def checkpoint_candidates(root: str) -> List[str]:
    """The checkpoint ``LATEST`` names, then every ``step-NNNNNNNN`` inside ``root``, newest first (an entry
    leading outside ``root`` is ignored with a warning)."""
    named = latest_checkpoint(root)
    others = []
    for entry in sorted(os.listdir(root), reverse=True) if os.path.isdir(root) else []:
        path = os.path.join(root, entry)
        if not STEP_NAME.fullmatch(entry):
            continue
        if not _inside(root, path):
            logger.warning("%s leads outside %s (to %s); ignoring it (a run resumes only from its own "
                           "checkpoints)", path, root, os.path.realpath(path))
            continue
        others.append(path)
    return ([named] if named else []) + [p for p in others if p != named]


@dataclass
class Resumed:
    """What a checkpoint restores: the finished step count and the states to load."""

    path: str
    step: int
    model_state: Dict
    optimizer_state: Optional[Dict]
    state: Dict[str, Any]


def resume_point(root: str, use_graph: bool) -> Optional[Resumed]:
    """The newest readable checkpoint under ``root`` (an unreadable newer one is skipped with a warning and
    kept), or None when there is none. Raises :class:`~.._errors.ConfigError` for a checkpoint in the old
    pickle layout (naming the conversion), one written with another ``use_graph``, or when checkpoints exist
    but none is readable (nothing is deleted)."""
    candidates, first_error = checkpoint_candidates(root), None
    for path in candidates:
        try:
            model_state, optimizer_state, state = load_checkpoint(path)
        except LegacyPickleError as error:  # a run of an earlier version: convert it, do not skip it
            raise ConfigError(str(error)) from None
        except Exception as error:  # noqa: BLE001 - any unreadable file: try the next, older checkpoint
            logger.warning("checkpoint %s is unreadable (%s); trying an older one", path, error)
            first_error = first_error or (path, error)
            continue
        if bool(state.get("use_graph")) != use_graph:
            raise ConfigError(f"checkpoint {path} was written with use_graph={state.get('use_graph')} but this run "
                              f"has use_graph={use_graph}; resume with the same setting")
        return Resumed(path, int(state["step"]), model_state, optimizer_state, state)
    if first_error is not None:
        raise ConfigError(f"no readable checkpoint under {root} ({len(candidates)} found; the newest, "
                          f"{first_error[0]}, is unreadable ({first_error[1]})); nothing was deleted: restore "
                          f"them, or move {os.path.dirname(root)} away and train anew")
    return None
