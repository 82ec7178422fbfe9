"""The reader of a complete top-k logits cache (:class:`TopKLogits`, memory-mapped chunk files); the builder
and the layout are in :mod:`knowledge_distill_util.topk_cache`.
"""
import os
from typing import Dict, Iterable, Optional, Tuple

import numpy as np
import oneflow as flow

from .topk_format import (ARRAYS, HEADER, _chunk_file, _damaged_chunk, _read_header, data_fingerprint,
                          teacher_fingerprint)

__all__ = ["TopKLogits"]


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
