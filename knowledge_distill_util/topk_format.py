"""The on-disk format of the top-k logits cache (see :mod:`knowledge_distill_util.topk_cache` for the layout):
the header, the chunk files' names and sizes, and the SHA-256 fingerprints of the teacher and the data that
a cache is refused by when they differ. Shared by the builder (:mod:`.topk_cache`) and the reader
(:mod:`.topk_reader`).
"""
import hashlib
import os
from typing import Dict, Iterable, Optional, Tuple

import numpy as np
import oneflow as flow

from ._io import read_json
from .engine.batches import split_batch

__all__ = ["CACHE_FORMAT", "CACHE_VERSION", "HEADER", "ARRAYS", "teacher_fingerprint", "data_fingerprint"]

CACHE_FORMAT = "kdu-topk-logits"
CACHE_VERSION = 1
HEADER = "header.json"
#: name -> (numpy dtype, values per row: "k" or 1) of the arrays of every chunk.
ARRAYS = {"values": ("<f2", "k"), "ids": ("<i4", "k"), "logsumexp": ("<f4", 1)}


# --------------------------------------------------------------------------------------------------
# fingerprints
# --------------------------------------------------------------------------------------------------

def _tensor_bytes(value) -> Tuple[str, Tuple[int, ...], bytes]:
    array = value.detach().cpu().numpy() if isinstance(value, flow.Tensor) else np.asarray(value)
    return str(array.dtype), tuple(array.shape), np.ascontiguousarray(array).tobytes()


def _update(digest, name: str, value) -> None:
    if isinstance(value, (flow.Tensor, np.ndarray)):
        dtype, shape, data = _tensor_bytes(value)
        digest.update(f"{name}|{dtype}|{shape}|{len(data)}|".encode())
        digest.update(data)
    else:  # a string, a list of tokens, a number: its repr
        text = repr(value).encode()
        digest.update(f"{name}|{type(value).__name__}|{len(text)}|".encode())
        digest.update(text)


def teacher_fingerprint(teacher) -> str:
    """SHA-256 (hex) of ``teacher.state_dict()``: every entry's name, dtype, shape and bytes, sorted by name."""
    state = teacher.state_dict()
    digest = hashlib.sha256(b"kdu-teacher-v1|")
    for name in sorted(state):
        _update(digest, name, state[name])
    return digest.hexdigest()


def _batch_digest(batch_inputs) -> bytes:
    """SHA-256 of one batch's inputs (positional and keyword, in order)."""
    digest = hashlib.sha256()
    for i, value in enumerate(batch_inputs.args):
        _update(digest, str(i), value)
    for key, value in batch_inputs.kwargs.items():
        _update(digest, str(key), value)
    return digest.digest()


# --------------------------------------------------------------------------------------------------
# the header and the chunk files
# --------------------------------------------------------------------------------------------------

def _chunk_file(path: str, index: int, name: str) -> str:
    return os.path.join(path, f"chunk-{index:05d}.{name}.bin")


def _expected_bytes(name: str, rows: int, top_k: int) -> int:
    dtype, per_row = ARRAYS[name]
    return rows * (top_k if per_row == "k" else 1) * np.dtype(dtype).itemsize


def _damaged_chunk(path: str, header: Dict) -> Optional[Tuple[int, str]]:
    """The first listed chunk whose file is missing or not of the header's size: (index, sentence); else None."""
    for index, chunk in enumerate(header["chunks"]):
        for name in ARRAYS:
            file = _chunk_file(path, index, name)
            expected = _expected_bytes(name, chunk["rows"], header["top_k"])
            size = os.path.getsize(file) if os.path.isfile(file) else None
            if size != expected:
                found = "is missing" if size is None else f"has {size} bytes"
                return index, (f"the top-k logits cache {path} is damaged: {os.path.basename(file)} {found} but its "
                               f"header says {expected} (a truncated copy or a disk error)")
    return None


def _read_header(path: str) -> Optional[Dict]:
    file = os.path.join(path, HEADER)
    if not os.path.exists(file):
        return None
    header = read_json(file, "top-k logits cache header")
    if not isinstance(header, dict) or header.get("format") != CACHE_FORMAT:
        raise ValueError(f"{file} is not the header of a top-k logits cache (no format {CACHE_FORMAT!r}); "
                         f"choose a new or empty directory for the cache")
    if header.get("version") != CACHE_VERSION:
        raise ValueError(f"the top-k logits cache {path} has format version {header.get('version')!r}, this package "
                         f"reads version {CACHE_VERSION}; rebuild it in a new directory")
    return header


def _new_header(top_k: int, temperature: float, teacher_id: str, batches_per_chunk: int) -> Dict:
    return {
        "format": CACHE_FORMAT, "version": CACHE_VERSION, "top_k": top_k, "vocab_size": None,
        "temperature": temperature, "dtype": {name: np.dtype(d).name for name, (d, _) in ARRAYS.items()},
        "byteorder": "little", "rows": 0, "shape": [0, top_k], "batches_per_chunk": batches_per_chunk,
        "batch_shapes": [], "chunks": [], "data_fingerprint": None, "teacher_fingerprint": teacher_id,
        "complete": False,
    }


def _refuse_other(path: str, header: Dict, top_k: int, temperature: float, teacher_id: str) -> None:
    """One sentence when the cache at ``path`` was written with another teacher, top_k or temperature."""
    fix = "choose another path for this cache, or delete the old one if nothing needs it"
    if header["teacher_fingerprint"] != teacher_id:
        raise ValueError(f"the top-k logits cache {path} was written for another teacher (fingerprint "
                         f"{header['teacher_fingerprint'][:12]}..., this teacher's is {teacher_id[:12]}...); {fix}")
    if header["top_k"] != top_k:
        raise ValueError(f"the top-k logits cache {path} holds top_k={header['top_k']}, not top_k={top_k}; {fix}")
    if float(header["temperature"]) != temperature:
        raise ValueError(f"the top-k logits cache {path} was written at temperature={header['temperature']}, not "
                         f"temperature={temperature}; {fix}")


def _refuse_other_data(path: str, batch_index: int) -> ValueError:
    return ValueError(f"the top-k logits cache {path} was written for another data set (batch {batch_index} "
                      f"differs from the one it was built from); choose another path for this data, or pass the "
                      f"data the cache was built from")


def data_fingerprint(data: Iterable, label_key: str = "labels") -> str:
    """The data fingerprint the cache stores: SHA-256 over every batch's input digest, in order."""
    total = hashlib.sha256()
    for raw in data:
        total.update(_batch_digest(split_batch(raw, label_key, "cpu")))
    return total.hexdigest()
