"""The batches of a recipe stage: the rows of a ``data.Features`` in a seeded order, as dicts of tensors.

Data order: epoch ``e`` visits the training rows in ``np.random.default_rng(seed + e).permutation(N)``
order, in batches of ``batch_size``; a last short batch is filled up with the epoch's first rows so
that every batch has the same shape (``nn.Graph`` compiles one shape). The order depends only on the
seed and the step, so a resumed run sees exactly the batches the uninterrupted run would have seen.
"""
from typing import List, Optional

import numpy as np
import oneflow as flow

from .teacher_outputs import TeacherOutputCache

__all__ = ["BATCH_KEYS", "DISTILLER_INPUTS", "batch_indices", "FeatureBatches"]

#: The keys of a ``data.Features`` row a batch carries (the model's three inputs, then the labels).
BATCH_KEYS = ("input_ids", "input_mask", "segment_ids", "labels")
#: The names of the three inputs in the batches of a configured stage: the models' keyword names.
DISTILLER_INPUTS = ("input_ids", "input_mask", "token_type_ids")
#: The key of the row ids (``row_ids=True``).
ROW_IDS = "index"


def batch_indices(num_rows: int, batch_size: int, seed: int, epoch: int) -> List[np.ndarray]:
    """The row indices of every batch of ``epoch`` (see the module doc), each of ``min(B, N)`` rows.

    >>> [b.tolist() for b in batch_indices(5, 2, seed=0, epoch=0)]
    [[2, 4], [3, 0], [1, 2]]
    """
    order = np.random.default_rng(seed + epoch).permutation(num_rows)
    size = min(batch_size, num_rows)
    batches = []
    for start in range(0, num_rows, size):
        index = order[start:start + size]
        if len(index) < size:
            index = np.concatenate([index, order[:size - len(index)]])
        batches.append(index)
    return batches



class FeatureBatches:
    """The batches of a ``data.Features`` in the order of :func:`batch_indices`, re-iterable: each
    iteration yields the epoch set by :meth:`set_epoch` (the Distiller sets it) as dicts of tensors on
    ``device``: the three inputs (named ``inputs``: ``input_ids``, ``input_mask``, ``segment_ids`` by default),
    ``teacher_logits`` (rows of the cached ``[N, C]`` logits, when given), the cached teacher outputs
    (``teacher_outputs``: the inputs of :meth:`~.teacher_outputs.TeacherOutputCache.batch`, when given), the row ids
    ``index`` (``row_ids``) and ``labels``. ``len()``: the batches per epoch."""

    def __init__(self, features, batch_size: int, seed: int, device, teacher_logits: Optional[np.ndarray] = None,
                 teacher_outputs: Optional[TeacherOutputCache] = None, row_ids: bool = False,
                 inputs=BATCH_KEYS[:3]):
        self.features, self.batch_size, self.seed, self.device = features, batch_size, seed, device
        self.teacher_logits, self.teacher_outputs = teacher_logits, teacher_outputs
        self.row_ids, self.inputs = row_ids, tuple(inputs)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        rows = len(self.features)
        return -(-rows // min(self.batch_size, rows))

    def __iter__(self):
        for index in batch_indices(len(self.features), self.batch_size, self.seed, self.epoch):
            arrays = self.features.as_dict(index)
            batch = {name: arrays[key] for name, key in zip(self.inputs, BATCH_KEYS[:3])}
            if self.row_ids:
                batch[ROW_IDS] = index.astype(np.int64)
            if self.teacher_logits is not None:
                batch["teacher_logits"] = self.teacher_logits[index]
            if self.teacher_outputs is not None:
                batch.update(self.teacher_outputs.batch(index))
            batch["labels"] = arrays["labels"]
            yield {key: flow.tensor(value, device=self.device) for key, value in batch.items()}
