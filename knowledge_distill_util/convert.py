"""``python -m knowledge_distill_util convert-checkpoint DIR --trust``: OneFlow pickle layout -> safetensors.

Models and checkpoints written by earlier versions of this package hold OneFlow's ``flow.save`` layout:
a directory with ``pickled_data`` (a pickle) and one folder per tensor. Unpickling a file can run any code
it names, so the package no longer reads them (no file this package reads can run code); this command
converts them once, in place, to the layout the package reads (see :mod:`knowledge_distill_util._state`):

- a saved model's ``weights/`` -> ``weights/model.safetensors``;
- a checkpoint ``step-NNNNNNNN/`` -> ``model/model.safetensors`` and ``optimizer/optimizer.safetensors``
  (``state.json`` and any other file are kept as they are).

``DIR`` may be a ``weights/`` directory, a model directory holding ``weights/`` (a run's
``--model_save_dir``, a teacher), a checkpoint folder (``checkpoints/<stage>``), ``checkpoints/`` itself or
a ``step-NNNNNNNN`` directory: every old-layout directory within three levels below ``DIR`` is converted
(hidden entries and symbolic links are not followed). Converting means unpickling, so the command refuses
without ``--trust`` (exit 2): pass it only for files from a trusted source, such as your own earlier runs.

Each directory is converted atomically: the old state is loaded (``flow.load``, the one place the package
unpickles, on CPU), written as safetensors into a fresh directory beside it, read back and compared bit for
bit, and only then swapped in for the old directory
(:func:`~knowledge_distill_util._io.replace_directory`); a killed conversion leaves the old or the new
directory, complete, and a second run converts what is left. Exit status 0 when done (or nothing was left
to convert), 2 with one sentence on stderr otherwise.
"""
import logging
import os
import shutil
import sys
from typing import Any, List, Tuple

from ._state import LEGACY_FILE, is_legacy_directory, read_state, state_bytes
from ._io import atomic_write_file, replace_directory

__all__ = ["USAGE", "find_legacy", "convert_model_directory", "convert_checkpoint_directory", "main"]

USAGE = "usage: python -m knowledge_distill_util convert-checkpoint DIR [--trust]"
MAX_DEPTH = 3
WEIGHTS_FILE = "model.safetensors"  # as models.init.WEIGHTS_FILE (not imported: keeps --help light)
PARTS = ("model", "optimizer")
logger = logging.getLogger(__name__)


def _is_step(path: str) -> bool:
    from .engine.checkpoint import STATE, STEP_NAME

    return bool(STEP_NAME.fullmatch(os.path.basename(os.path.normpath(path)))) and \
        os.path.isfile(os.path.join(path, STATE))


def _legacy_step(path: str) -> bool:
    return any(is_legacy_directory(os.path.join(path, part), f"{part}.safetensors") for part in PARTS)


def find_legacy(directory: str) -> Tuple[List[Tuple[str, str]], int]:
    """``([(kind, path), ...], count of directories already converted)`` within :data:`MAX_DEPTH` levels
    below ``directory``; ``kind`` is ``"model"`` (a ``weights/`` directory) or ``"checkpoint"`` (a step)."""
    directory = os.path.abspath(directory)
    parent = os.path.dirname(directory)
    if os.path.basename(directory) in PARTS and _is_step(parent):  # step-N/model or step-N/optimizer
        directory = parent
    jobs, done = [], 0
    for current, folders, _ in os.walk(directory):
        depth = os.path.relpath(current, directory).count(os.sep) + (current != directory)
        if _is_step(current):
            if _legacy_step(current):
                jobs.append(("checkpoint", current))
            else:
                done += 1
            folders[:] = []
        elif os.path.lexists(os.path.join(current, LEGACY_FILE)) or os.path.isfile(os.path.join(current, WEIGHTS_FILE)):
            if is_legacy_directory(current, WEIGHTS_FILE):
                jobs.append(("model", current))
            else:
                done += 1
            folders[:] = []
        else:
            folders[:] = sorted(f for f in folders if not f.startswith(".")) if depth < MAX_DEPTH else []
    return jobs, done


def _trusted_load(path: str) -> Any:
    """The object OneFlow's ``flow.load`` reads from ``path``: this UNPICKLES (``--trust`` only)."""
    import oneflow as flow

    return flow.load(path, map_location="cpu")


def _same(a: Any, b: Any) -> bool:
    import oneflow as flow

    if isinstance(a, flow.Tensor) or isinstance(b, flow.Tensor):
        return (isinstance(a, flow.Tensor) and isinstance(b, flow.Tensor) and a.dtype == b.dtype
                and tuple(a.shape) == tuple(b.shape) and a.numpy().tobytes() == b.numpy().tobytes())
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)  # NaN


def _write_checked(file: str, state: Any) -> None:
    """Write ``state`` to ``file`` and read it back: ``RuntimeError`` unless it is the same, bit for bit."""
    data = state_bytes(state)
    atomic_write_file(file, lambda stream: stream.write(data))
    if not _same(state, read_state(file)):
        raise RuntimeError(f"{file} does not read back as the state it was written from")


def convert_model_directory(path: str) -> None:
    """Convert the ``flow.save`` directory ``path`` (a model's ``weights/``) to ``path/model.safetensors``."""
    import oneflow as flow

    state = _trusted_load(path)
    if not isinstance(state, dict) or not all(isinstance(v, flow.Tensor) for v in state.values()):
        raise ValueError(f"it holds a {type(state).__name__}, not a model's state dict of tensors")
    replace_directory(path, lambda staging: _write_checked(os.path.join(staging, WEIGHTS_FILE), state))


def convert_checkpoint_directory(path: str) -> None:
    """Convert the checkpoint ``path`` (``step-NNNNNNNN``): its ``model/`` and ``optimizer/`` parts in the
    pickle layout become safetensors; every other entry is copied unchanged."""
    states = {part: _trusted_load(os.path.join(path, part)) for part in PARTS
              if is_legacy_directory(os.path.join(path, part), f"{part}.safetensors")}

    def fill(staging: str) -> None:
        for part, state in states.items():
            _write_checked(os.path.join(staging, part, f"{part}.safetensors"), state)
        for entry in os.listdir(path):
            if entry in states:
                continue
            source, target = os.path.join(path, entry), os.path.join(staging, entry)
            if os.path.isdir(source) and not os.path.islink(source):
                shutil.copytree(source, target, symlinks=True)
            else:
                shutil.copy2(source, target, follow_symlinks=False)

    replace_directory(path, fill)


def _fail(sentence: str) -> int:
    print(f"error: {sentence}", file=sys.stderr, flush=True)
    return 2


def main(argv: List[str]) -> int:
    """The ``convert-checkpoint`` command (see the module doc); returns the exit status."""
    args = list(argv)
    if any(a in ("-h", "--help") for a in args):
        print(f"{USAGE}\n\n{__doc__.split(chr(10) * 2, 1)[1]}")
        return 0
    trust = "--trust" in args
    rest = [a for a in args if a != "--trust"]
    if len(rest) != 1 or rest[0].startswith("-"):
        return _fail(f"convert-checkpoint takes one directory and optionally --trust, got {args}; {USAGE}")
    directory = rest[0]
    if not os.path.isdir(directory):
        return _fail(f"{directory} is not a directory; pass a model directory (holding weights/), a weights/ "
                     f"directory, a checkpoint folder or a step-NNNNNNNN directory")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    jobs, done = find_legacy(directory)
    if not jobs:
        if done:
            logger.info("nothing to convert: %s is already in the safetensors layout", directory)
            return 0
        return _fail(f"{directory} holds no saved model or checkpoint in OneFlow's pickle layout ({LEGACY_FILE}) "
                     f"within {MAX_DEPTH} levels; pass a model directory (holding weights/), a weights/ "
                     f"directory, a checkpoint folder or a step-NNNNNNNN directory")
    if not trust:
        return _fail(f"converting {directory} means unpickling {len(jobs)} {LEGACY_FILE} file(s), and loading a "
                     f"pickle can run any code it contains; pass --trust only if the files come from a trusted "
                     f"source (such as your own earlier runs)")
    for kind, path in jobs:
        try:
            (convert_model_directory if kind == "model" else convert_checkpoint_directory)(path)
        except Exception as error:  # noqa: BLE001 - one sentence per failed directory, never a traceback
            return _fail(f"could not convert {path} ({type(error).__name__}: {str(error).strip()[:300]}); it is "
                         f"left unchanged (directories converted before it stay converted)")
        logger.info("converted %s", path)
    return 0
