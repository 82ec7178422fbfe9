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

This module builds a cache; :mod:`.topk_format` holds the header, chunk files and fingerprints, and
:mod:`.topk_reader` the reader :class:`TopKLogits` (both re-exported here).
"""
import hashlib
import logging
import os
import time
from typing import Callable, Dict, Iterable, List, Optional

import numpy as np
import oneflow as flow

from ._checks import check_int, check_temperature
from ._io import atomic_write_file, atomic_write_json
from .engine.batches import split_batch
from .topk_format import (ARRAYS, CACHE_FORMAT, CACHE_VERSION, HEADER, _batch_digest, _chunk_file, _damaged_chunk,
                          _new_header, _read_header, _refuse_other, _refuse_other_data, data_fingerprint,
                          teacher_fingerprint)
from .topk_reader import TopKLogits

__all__ = ["cache_teacher_logits", "TopKLogits", "teacher_fingerprint", "data_fingerprint", "CACHE_FORMAT",
           "CACHE_VERSION"]

logger = logging.getLogger(__name__)


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
    top_k, temperature, batches_per_chunk, teacher_id = _checked(teacher, data, path, top_k, temperature,
                                                                  batches_per_chunk, teacher_id)
    path = os.path.abspath(os.fspath(path))
    header = _open_header(path, top_k, temperature, teacher_id, batches_per_chunk)
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


def _checked(teacher, data, path, top_k, temperature, batches_per_chunk, teacher_id):
    """:func:`cache_teacher_logits`'s argument checks: ``(top_k, temperature, batches_per_chunk, teacher_id)``,
    the teacher's fingerprint computed when not given."""
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
    return top_k, temperature, batches_per_chunk, teacher_id


def _open_header(path: str, top_k: int, temperature: float, teacher_id: str, batches_per_chunk: int) -> Dict:
    """The header of the cache at ``path`` to continue (checked against the arguments, cut before its first
    damaged chunk), or a new one for a missing or empty directory."""
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
    return header


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
