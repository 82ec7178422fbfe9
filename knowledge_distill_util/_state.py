"""State dicts (nested dicts/lists of tensors and plain values) as safetensors files: no pickle.

No file this package reads can run code. OneFlow's ``flow.save``/``flow.load`` store a state as a
pickle (``<dir>/pickled_data``), and unpickling a file can run any code it names; so every model,
optimizer and ``nn.Graph`` state is written and read here instead, as ONE ``.safetensors`` file:

- every tensor, under a flattened key: its path in the state joined by ``/`` (a model's
  ``"encoder.layer.0.attention.self.query.weight"``, an optimizer's ``"state/3/exp_avg"``; ``#1``,
  ``#2``, ... appended when two paths give the same key), stored bit for bit with its dtype and shape;
- the rest of the structure in the file's metadata (``__metadata__``): ``"format": "kdu-state/1"`` and
  ``"structure"``, a JSON document in which a tensor is ``{"__tensor__": key}``; ``int``, ``bool``,
  ``str``, ``None``, finite ``float`` and ``list`` are JSON values; a ``dict`` whose keys are all ``str``
  and none starts with ``__`` is a JSON object; other values are tagged: ``{"__tuple__": [...]}``,
  ``{"__dict__": [[key, value], ...]}`` (keys ``str``/``int``/``bool``/``None``),
  ``{"__ordered_dict__": [[key, value], ...]}``, ``{"__float__": "nan" | "inf" | "-inf"}``.

A round trip gives back the same Python types (``dict``, ``OrderedDict``, ``list``, ``tuple``, ``int``,
``float``, ...) and bit-identical tensors of the same dtype and shape, as CPU tensors (``Parameter``\\ s
come back as tensors; ``load_state_dict`` copies them to the module's device). A ``.safetensors`` file
without a ``"structure"`` (written by another tool) reads as a flat ``{key: tensor}`` dict. Reading
parses the safetensors header (JSON) and copies the raw bytes: nothing in the file is executed.

Directories in OneFlow's pickle layout are refused by the callers before anything is read
(:func:`legacy_error`); ``python -m knowledge_distill_util convert-checkpoint DIR --trust`` converts them
once (:mod:`knowledge_distill_util.convert`).
"""
import json
import math
import os
from collections import OrderedDict
from typing import Any, Dict, List, Tuple

import numpy as np
import oneflow as flow

from ._io import atomic_write_file

__all__ = ["FORMAT", "LEGACY_FILE", "CONVERT_COMMAND", "LegacyPickleError", "UnreadableStateError", "state_bytes", "write_state",
           "read_state", "is_legacy_directory", "legacy_error"]

FORMAT = "kdu-state/1"
#: The pickle OneFlow's ``flow.save`` writes into its directory (the old layout).
LEGACY_FILE = "pickled_data"
CONVERT_COMMAND = "python -m knowledge_distill_util convert-checkpoint"
_TAGS = ("__tensor__", "__tuple__", "__dict__", "__ordered_dict__", "__float__")
_KEY_TYPES = (str, int, bool, type(None))


class LegacyPickleError(ValueError):
    """A directory in OneFlow's pickle layout, refused before anything in it was read."""


class UnreadableStateError(ValueError):
    """A state file that is not a complete safetensors file of this format; ``reason`` says why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path} is unreadable ({reason}); it is truncated or corrupt")
        self.path, self.reason = path, reason


def legacy_error(what: str, directory: str, convert: str) -> LegacyPickleError:
    """The one-sentence refusal of ``directory`` (``what``: e.g. "saved model") naming the command that
    converts ``convert`` once."""
    return LegacyPickleError(
        f"{what} {directory} is in OneFlow's old pickle layout ({LEGACY_FILE}), which this package no longer "
        f"reads because unpickling a file can run code; if the files come from a trusted source, convert them "
        f"once with: {CONVERT_COMMAND} {convert}"
    )


def is_legacy_directory(directory: str, new_file: str) -> bool:
    """True when ``directory`` holds OneFlow's ``pickled_data`` and not the safetensors file ``new_file``."""
    return (os.path.lexists(os.path.join(directory, LEGACY_FILE))
            and not os.path.exists(os.path.join(directory, new_file)))


# ------------------------------------------------------------------------------------------- writing
def _to_numpy(tensor: flow.Tensor, key: str) -> np.ndarray:
    if tensor.is_global:
        raise TypeError(f"tensor {key!r} is a global tensor; make the state local first "
                        f"(engine.distributed.to_local_state)")
    try:
        array = tensor.detach().cpu().numpy()
    except Exception as err:  # noqa: BLE001 - e.g. bfloat16, which numpy cannot hold
        raise TypeError(f"tensor {key!r} of dtype {tensor.dtype} cannot be saved ({err})") from None
    return array if array.flags.c_contiguous else array.copy(order="C")  # ascontiguousarray makes 0-d 1-d


def _unique(key: str, taken: Dict[str, np.ndarray]) -> str:
    if key not in taken:
        return key
    count = 1
    while f"{key}#{count}" in taken:
        count += 1
    return f"{key}#{count}"


def _encode(value: Any, path: List[str], tensors: Dict[str, np.ndarray]) -> Any:
    kind = type(value)
    if isinstance(value, flow.Tensor):
        key = _unique("/".join(path) or "tensor", tensors)
        tensors[key] = _to_numpy(value, key)
        return {"__tensor__": key}
    if value is None or kind in (bool, int, str):
        return value
    if kind is float:
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if kind is list:
        return [_encode(v, path + [str(i)], tensors) for i, v in enumerate(value)]
    if kind is tuple:
        return {"__tuple__": [_encode(v, path + [str(i)], tensors) for i, v in enumerate(value)]}
    if kind in (dict, OrderedDict):
        for key in value:
            if type(key) not in _KEY_TYPES:
                raise TypeError(f"cannot save the state: key {key!r} at {'/'.join(path) or 'the top'} is a "
                                f"{type(key).__name__}; keys must be str, int, bool or None")
        items = [(k, _encode(v, path + [str(k)], tensors)) for k, v in value.items()]
        if kind is dict and all(type(k) is str and not k.startswith("__") for k in value):
            return dict(items)
        return {"__dict__" if kind is dict else "__ordered_dict__": [[k, v] for k, v in items]}
    raise TypeError(f"cannot save the state: {'/'.join(path) or 'the top'} is a {kind.__name__}; a state holds "
                    f"tensors, dicts, lists, tuples, str, int, float, bool and None only")


def state_bytes(state: Any) -> bytes:
    """The safetensors file of ``state`` (see the module doc); ``TypeError`` naming a value it cannot hold."""
    tensors: Dict[str, np.ndarray] = {}
    structure = _encode(state, [], tensors)
    metadata = {"format": FORMAT, "structure": json.dumps(structure, allow_nan=False)}
    from safetensors.numpy import save

    return save(tensors, metadata=metadata)


def write_state(path, state: Any) -> None:
    """Write ``state`` to the file ``path`` atomically (:func:`~knowledge_distill_util._io.atomic_write_file`)."""
    data = state_bytes(state)
    atomic_write_file(path, lambda stream: stream.write(data))


# ------------------------------------------------------------------------------------------- reading
def _decode(node: Any, tensors: Dict[str, np.ndarray], used: set) -> Any:
    if isinstance(node, list):
        return [_decode(v, tensors, used) for v in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1 and next(iter(node)) in _TAGS:
        tag, body = next(iter(node.items()))
        if tag == "__tensor__":
            if not isinstance(body, str) or body not in tensors:
                raise ValueError(f"its structure names a tensor {body!r} that the file does not hold")
            used.add(body)
            return flow.tensor(tensors[body])
        if tag == "__float__":
            if body not in ("nan", "inf", "-inf"):
                raise ValueError(f"its structure holds a float {body!r}")
            return float(body)
        if not isinstance(body, list):
            raise ValueError(f"its structure holds a malformed {tag}")
        if tag == "__tuple__":
            return tuple(_decode(v, tensors, used) for v in body)
        pairs = []
        for pair in body:
            if not (isinstance(pair, list) and len(pair) == 2 and type(pair[0]) in _KEY_TYPES):
                raise ValueError(f"its structure holds a malformed {tag} entry {pair!r}")
            pairs.append((pair[0], _decode(pair[1], tensors, used)))
        return dict(pairs) if tag == "__dict__" else OrderedDict(pairs)
    return {k: _decode(v, tensors, used) for k, v in node.items()}


def _read_file(path: str) -> Tuple[Dict[str, str], Dict[str, np.ndarray]]:
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as handle:
        metadata = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    return metadata, tensors


def read_state(path) -> Any:
    """The state in the safetensors file ``path`` (see the module doc).

    Raises ``FileNotFoundError`` when it is missing and :class:`UnreadableStateError` (a ``ValueError``)
    naming the file and the reason when it is not a complete safetensors file or its structure does not
    fit its tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist")
    try:
        metadata, tensors = _read_file(path)
        if "structure" not in metadata:
            return {key: flow.tensor(value) for key, value in tensors.items()}
        if metadata.get("format") != FORMAT:
            raise ValueError(f"its format is {metadata.get('format')!r}, not {FORMAT!r}")
        used: set = set()
        state = _decode(json.loads(metadata["structure"]), tensors, used)
        if used != set(tensors):
            raise ValueError(f"it holds tensors its structure does not name: {sorted(set(tensors) - used)[:5]}")
        return state
    except Exception as err:  # noqa: BLE001 - safetensors raises its own SafetensorError, JSON errors, ...
        detail = str(err).strip()[:200]
        reason = f"{type(err).__name__}: {detail}" if detail else type(err).__name__
        raise UnreadableStateError(path, reason) from None
