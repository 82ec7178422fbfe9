"""Top-k teacher logits on disk: run the teacher once per data set, train from the cache.

:func:`cache_teacher_logits` runs ``teacher`` on every batch of ``data`` (split as the ``Distiller`` splits
them, :func:`knowledge_distill_util.engine.batches.split_batch`) and writes, for every row of its logits
``[..., V]`` (each token, or each example for sequence classification), the top-k values (float16), their
ids (int32) and the log-sum-exp of all V logits divided by ``temperature`` (float32, what the sparse losses'
``missing="uniform"`` needs): ``6 k + 4`` bytes per row. :class:`TopKLogits` reads it back per batch.

Layout of the cache directory ``path``::

    header.json                      format, version, top_k, vocab_size, temperature, dtypes, rows, shape,
                                     the leading shape of every batch, the chunks, the fingerprints, complete
    chunk-00000.values.bin           float16 little-endian [rows of chunk 0, k]   (raw, np.memmap-able)
    chunk-00000.ids.bin              int32   little-endian [rows of chunk 0, k]
    chunk-00000.logsumexp.bin        float32 little-endian [rows of chunk 0]
    chunk-00001.values.bin ...

No pickle anywhere: raw arrays and JSON. Every file is written atomically (beside, then renamed over, by
:mod:`knowledge_distill_util._io`) with the umask's permissions; a chunk's three files are written before
the header lists the chunk, so a killed build leaves a header naming only complete chunks, and the next call
with the same teacher and data skips them (re-hashing their inputs, without running the teacher) and
continues from the first missing chunk. A listed chunk whose file is shorter than the header says is
rebuilt by the builder from that chunk on and refused by the reader, each with one sentence.

Fingerprints (SHA-256): the teacher's is over its ``state_dict`` (names, dtypes, shapes, bytes); the data's
over the inputs of every batch (names, dtypes, shapes, bytes; labels excluded: the teacher does not see
them). A cache written for another teacher, another data set, another ``top_k`` or ``temperature`` is
refused with one sentence. One writer per cache directory.
"""
import hashlib
import logging
import os
import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import oneflow as flow

from ._checks import check_int, check_temperature
from ._io import atomic_write_file, atomic_write_json, read_json
from .engine.batches import split_batch

__all__ = ["cache_teacher_logits", "TopKLogits", "teacher_fingerprint", "data_fingerprint", "CACHE_FORMAT",
           "CACHE_VERSION"]

logger = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------------------------------
# the builder
# --------------------------------------------------------------------------------------------------

def _logits_of(output, batch_index: int) -> flow.Tensor:
    """The logits tensor of a teacher's output: a tensor, the first item of a tuple/list, or ``["logits"]``."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    elif isinstance(output, dict) and "logits" in output:
        output = output["logits"]
    if not isinstance(output, flow.Tensor) or not output.dtype.is_floating_point or output.ndim == 0:
        raise TypeError(f"the teacher's output for batch {batch_index} must be floating-point logits [..., V] (a "
                        f"tensor, a tuple whose first item is one, or a dict with 'logits'), got "
                        f"{type(output).__name__}")
    return output


def _device_of(teacher, device):
    if device is not None:
        return device
    parameters = getattr(teacher, "parameters", None)
    if callable(parameters):
        for parameter in parameters():
            return parameter.device
    return "cpu"


class _ChunkBuffer:
    """Rows of the chunk being built, written (atomically, then listed in the header) by :meth:`flush`."""

    def __init__(self):
        self.parts: Dict[str, List[np.ndarray]] = {name: [] for name in ARRAYS}
        self.batches, self.rows, self.digest = 0, 0, hashlib.sha256()

    def add(self, values: np.ndarray, ids: np.ndarray, lse: np.ndarray, digest: bytes) -> None:
        self.parts["values"].append(values)
        self.parts["ids"].append(ids)
        self.parts["logsumexp"].append(lse)
        self.batches += 1
        self.rows += int(lse.shape[0])
        self.digest.update(digest)

    def flush(self, path: str, header: Dict) -> None:
        index = len(header["chunks"])
        for name, (dtype, _) in ARRAYS.items():
            array = np.ascontiguousarray(np.concatenate(self.parts[name]).astype(dtype, copy=False))
            data = array.tobytes()
            atomic_write_file(_chunk_file(path, index, name), lambda stream, d=data: stream.write(d), size=len(data))
        header["chunks"].append({"batches": self.batches, "rows": self.rows, "data_sha256": self.digest.hexdigest()})
        header["rows"] += self.rows
        header["shape"] = [header["rows"], header["top_k"]]
        atomic_write_json(os.path.join(path, HEADER), header)
        self.__init__()


def _top_k_rows(logits: flow.Tensor, top_k: int, temperature: float, batch_index: int):
    """(values float16 [R, k], ids int32 [R, k], logsumexp float32 [R]) of logits [..., V]."""
    vocab = int(logits.shape[-1])
    if top_k > vocab:
        raise ValueError(f"top_k is {top_k} but the teacher's logits of batch {batch_index} have only V = {vocab} "
                         f"classes; choose top_k between 1 and {vocab}")
    rows = logits.detach().float().reshape(-1, vocab)
    values, ids = flow.topk(rows, top_k, dim=-1)
    # logsumexp(x) = x_max - log_softmax(x)_argmax, precise (the second term is in [-log V, 0]) and much faster
    # on CPU than flow.logsumexp over V in OneFlow 0.9
    scaled = rows if temperature == 1.0 else rows / temperature
    top = ids[:, :1]
    lse = (flow.gather(scaled, -1, top) - flow.gather(flow.nn.functional.log_softmax(scaled, dim=-1), -1, top))[:, 0]
    return (values.cpu().numpy().astype(np.float16), ids.cpu().numpy().astype(np.int32),
            lse.cpu().numpy().astype(np.float32))


def cache_teacher_logits(
    teacher: Callable,
    data: Iterable,
    path,
    *,
    top_k: int,
    temperature: float = 1.0,
    label_key: str = "labels",
    device=None,
    batches_per_chunk: int = 16,
    teacher_id: Optional[str] = None,
) -> "TopKLogits":
    """Run ``teacher`` on every batch of ``data`` and write its top-k logits to the directory ``path``.

    Args:
        teacher: an ``nn.Module`` (or any callable) mapping a batch to logits ``[..., V]`` (or a tuple whose
            first item they are, or a dict with ``"logits"``); an ``nn.Module`` runs in eval mode (every
            submodule's mode is restored after), without gradient.
        data: any iterable of batches (dicts or ``(inputs..., labels)`` tuples, as the ``Distiller`` takes);
            it must give the same batches in the same order on every call (no shuffling).
        path: the cache directory (created; a complete cache for the same teacher and data is returned as it
            is, an interrupted one is resumed).
        top_k: ids kept per row, 1 <= top_k <= V.
        temperature: the log-sum-exp stored per row is that of ``logits / temperature`` (the sparse losses'
            ``missing="uniform"`` needs it at their temperature); the values are the raw logits.
        label_key: a dict batch's labels key (not passed to the teacher).
        device: where the teacher runs (default: its parameters' device, else CPU).
        batches_per_chunk: batches per chunk file (the unit of resumption).
        teacher_id: the teacher's fingerprint for a callable without ``state_dict`` (e.g. a function calling
            a served model); default: :func:`teacher_fingerprint`.

    Returns:
        a :class:`TopKLogits` reading the cache.

    Raises:
        ValueError/TypeError: one sentence naming the argument, or the cache written for another teacher,
        data set, ``top_k`` or ``temperature``.
    """
    if not callable(teacher):
        raise TypeError(f"teacher must be a callable (an nn.Module) mapping a batch to logits, got "
                        f"{type(teacher).__name__}")
    top_k = check_int("top_k", top_k, minimum=1)
    temperature = check_temperature("temperature", temperature)
    batches_per_chunk = check_int("batches_per_chunk", batches_per_chunk, minimum=1)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a directory path (str or os.PathLike), got {type(path).__name__}")
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise TypeError(f"data must be an iterable of batches, got {type(data).__name__}")
    if teacher_id is None:
        if not callable(getattr(teacher, "state_dict", None)):
            raise TypeError(f"teacher is a {type(teacher).__name__} without state_dict, so it cannot be fingerprinted; "
                            f"pass teacher_id='<a string naming its weights>'")
        teacher_id = teacher_fingerprint(teacher)
    elif not isinstance(teacher_id, str) or not teacher_id:
        raise TypeError(f"teacher_id must be a non-empty string, got {teacher_id!r}")
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"path {path} exists and is not a directory; choose a directory for the cache")
    header = _read_header(path) if os.path.isdir(path) else None
    if header is None and os.path.isdir(path) and os.listdir(path):
        raise ValueError(f"path {path} is a non-empty directory without a top-k logits cache header; choose a new "
                         f"or empty directory for the cache")
    if header is None:
        header = _new_header(top_k, temperature, teacher_id, batches_per_chunk)
    else:
        _refuse_other(path, header, top_k, temperature, teacher_id)
        damaged = _damaged_chunk(path, header)
        if damaged is not None:
            index, sentence = damaged
            logger.warning("%s; rebuilding it from chunk %d", sentence, index)
            _truncate_header(header, index)
    os.makedirs(path, exist_ok=True)
    modes = [(module, module.training) for module in teacher.modules()] if isinstance(teacher, flow.nn.Module) else []
    if modes:
        teacher.eval()
    try:
        _build(teacher, data, path, header, top_k, temperature, label_key, _device_of(teacher, device))
    finally:
        for module, training in modes:  # each submodule's own mode back (a frozen part may stay in eval)
            module.training = training
    return TopKLogits(path)


def _truncate_header(header: Dict, keep_chunks: int) -> None:
    """Keep the first ``keep_chunks`` chunks of ``header`` (in memory; written with the next chunk)."""
    kept = header["chunks"][:keep_chunks]
    batches = sum(c["batches"] for c in kept)
    header.update(chunks=kept, batch_shapes=header["batch_shapes"][:batches], rows=sum(c["rows"] for c in kept),
                  complete=False, data_fingerprint=None)
    header["shape"] = [header["rows"], header["top_k"]]


def _build(teacher, data, path: str, header: Dict, top_k: int, temperature: float, label_key: str, device) -> None:
    """Skip (verifying) the batches of the header's chunks, run the teacher on the rest, write chunk by chunk."""
    done_chunks = list(header["chunks"])
    bounds = np.cumsum([c["batches"] for c in done_chunks]).tolist()  # batches after each complete chunk
    done_batches = bounds[-1] if bounds else 0
    total, chunk_digest, buffer = hashlib.sha256(), hashlib.sha256(), _ChunkBuffer()
    chunk_of_skipped, started, new_rows, index = 0, time.perf_counter(), 0, -1
    for index, raw in enumerate(data):
        batch = split_batch(raw, label_key, device)
        digest = _batch_digest(batch)
        total.update(digest)
        if index < done_batches:  # already cached: check that it is the same data, do not run the teacher
            chunk_digest.update(digest)
            if index + 1 == bounds[chunk_of_skipped]:
                if chunk_digest.hexdigest() != done_chunks[chunk_of_skipped]["data_sha256"]:
                    raise _refuse_other_data(path, index)
                chunk_digest, chunk_of_skipped = hashlib.sha256(), chunk_of_skipped + 1
            continue
        if header["complete"]:  # more batches than the complete cache holds
            raise _refuse_other_data(path, index)
        with flow.no_grad():
            logits = _logits_of(teacher(*batch.args, **batch.kwargs), index)
        vocab = int(logits.shape[-1])
        if header["vocab_size"] is None:
            header["vocab_size"] = vocab
        elif vocab != header["vocab_size"]:
            raise ValueError(f"the teacher's logits of batch {index} have V = {vocab} classes but those before had "
                             f"{header['vocab_size']}; the cache needs one vocabulary size")
        values, ids, lse = _top_k_rows(logits, top_k, temperature, index)
        header["batch_shapes"].append([int(n) for n in logits.shape[:-1]])
        buffer.add(values, ids, lse, digest)
        new_rows += int(lse.shape[0])
        if buffer.batches == header["batches_per_chunk"]:
            buffer.flush(path, header)
    if index + 1 < done_batches:
        raise ValueError(f"the top-k logits cache {path} holds {done_batches} batches but data has only {index + 1}; "
                         f"it was written for another data set: choose another path or pass that data")
    if buffer.batches:
        buffer.flush(path, header)
    fingerprint = total.hexdigest()
    if header["complete"]:
        if header["data_fingerprint"] != fingerprint:
            raise _refuse_other_data(path, index)
        return
    if not header["chunks"]:
        raise ValueError("data gave no batch; the cache needs at least one")
    header.update(complete=True, data_fingerprint=fingerprint)
    atomic_write_json(os.path.join(path, HEADER), header)
    seconds = time.perf_counter() - started
    logger.info("cached the top-%d logits of %d rows in %.1f s (%.0f rows/s) to %s", top_k, new_rows, seconds,
                new_rows / seconds if seconds > 0 else float("inf"), path)


# --------------------------------------------------------------------------------------------------
# the reader
# --------------------------------------------------------------------------------------------------

def data_fingerprint(data: Iterable, label_key: str = "labels") -> str:
    """The data fingerprint the cache stores: SHA-256 over every batch's input digest, in order."""
    total = hashlib.sha256()
    for raw in data:
        total.update(_batch_digest(split_batch(raw, label_key, "cpu")))
    return total.hexdigest()


class TopKLogits:
    """A complete top-k logits cache, memory-mapped; ``reader[i]`` is batch ``i``'s ``(values, ids)``.

    ``values`` is float16 and ``ids`` int32, both ``[..., k]`` with the leading shape of the teacher's logits
    for that batch; :meth:`logsumexp` gives the float32 ``[...]`` log-sum-exp for ``missing="uniform"``.
    ``data``/``teacher`` (optional) are checked against the fingerprints: a cache of another data set or
    teacher, an unfinished build or a truncated file is refused with one sentence.

    Example::

        >>> import tempfile, numpy as np, oneflow as flow
        >>> from knowledge_distill_util import cache_teacher_logits, TopKLogits
        >>> teacher = flow.nn.Linear(3, 5)
        >>> data = [(np.ones((2, 3), np.float32), np.zeros(2))]
        >>> cache = cache_teacher_logits(teacher, data, tempfile.mkdtemp() + "/cache", top_k=2)
        >>> values, ids = cache[0]
        >>> tuple(values.shape), values.dtype, ids.dtype, len(cache)
        ((2, 2), oneflow.float16, oneflow.int32, 1)
    """

    def __init__(self, path, *, data: Optional[Iterable] = None, teacher=None, label_key: str = "labels",
                 device="cpu"):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a directory path (str or os.PathLike), got {type(path).__name__}")
        self.path = os.path.abspath(os.fspath(path))
        if not os.path.isdir(self.path):
            raise FileNotFoundError(f"the top-k logits cache {self.path} does not exist; build it with "
                                    f"cache_teacher_logits(teacher, data, path, top_k=...)")
        header = _read_header(self.path)
        if header is None:
            raise ValueError(f"{self.path} has no {HEADER}: it is not a top-k logits cache")
        if not header["complete"]:
            raise ValueError(f"the top-k logits cache {self.path} is incomplete ({len(header['batch_shapes'])} batches "
                             f"written, the build was interrupted); run cache_teacher_logits again with the same "
                             f"teacher and data to resume it")
        damaged = _damaged_chunk(self.path, header)
        if damaged is not None:
            raise ValueError(f"{damaged[1]}; run cache_teacher_logits again with the same teacher and data to "
                             f"rebuild it")
        if teacher is not None and teacher_fingerprint(teacher) != header["teacher_fingerprint"]:
            raise ValueError(f"the top-k logits cache {self.path} was written for another teacher; build a cache for "
                             f"this teacher in another directory")
        if data is not None and data_fingerprint(data, label_key) != header["data_fingerprint"]:
            raise ValueError(f"the top-k logits cache {self.path} was written for another data set; build a cache "
                             f"for this data in another directory")
        self.header, self.device = header, device
        self._arrays = [self._open_chunk(i, c["rows"]) for i, c in enumerate(header["chunks"])]
        self._where = []  # batch -> (chunk, first row, leading shape)
        shapes = iter(header["batch_shapes"])
        for chunk, entry in enumerate(header["chunks"]):
            start = 0
            for _ in range(entry["batches"]):
                shape = tuple(next(shapes))
                self._where.append((chunk, start, shape))
                start += int(np.prod(shape, dtype=np.int64))

    def _open_chunk(self, index: int, rows: int) -> Dict[str, np.ndarray]:
        arrays = {}
        for name, (dtype, per_row) in ARRAYS.items():
            shape = (rows, self.top_k) if per_row == "k" else (rows,)
            if rows == 0:
                arrays[name] = np.zeros(shape, dtype)
            else:
                arrays[name] = np.memmap(_chunk_file(self.path, index, name), dtype=dtype, mode="r", shape=shape)
        return arrays

    @property
    def top_k(self) -> int:
        return int(self.header["top_k"])

    @property
    def vocab_size(self) -> int:
        return int(self.header["vocab_size"])

    @property
    def temperature(self) -> float:
        """The temperature of the stored log-sum-exp."""
        return float(self.header["temperature"])

    @property
    def rows(self) -> int:
        return int(self.header["rows"])

    def __len__(self) -> int:
        return len(self._where)

    def _rows(self, index: int, name: str) -> Tuple[np.ndarray, Tuple[int, ...]]:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"a batch index must be an int, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"batch index {index} is out of range: the cache holds {len(self)} batches")
        chunk, start, shape = self._where[index]
        count = int(np.prod(shape, dtype=np.int64))
        return np.array(self._arrays[chunk][name][start:start + count]), shape

    def __getitem__(self, index: int) -> Tuple[flow.Tensor, flow.Tensor]:
        values, shape = self._rows(index, "values")
        ids, _ = self._rows(index, "ids")
        return (flow.tensor(values.reshape(shape + (self.top_k,)), device=self.device),
                flow.tensor(ids.reshape(shape + (self.top_k,)), device=self.device))

    def logsumexp(self, index: int) -> flow.Tensor:
        """Batch ``index``'s float32 ``[...]`` log-sum-exp of the teacher's logits / :attr:`temperature`."""
        values, shape = self._rows(index, "logsumexp")
        return flow.tensor(values.reshape(shape), device=self.device)

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]

    def __repr__(self) -> str:
        return (f"TopKLogits({self.path!r}, batches={len(self)}, rows={self.rows}, top_k={self.top_k}, "
                f"V={self.vocab_size})")
