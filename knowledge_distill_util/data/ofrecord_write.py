"""Write the original toolkit's OFRecord parts (:func:`write_ofrecord_parts`) and convert GLUE TSV files to
them (:func:`glue_to_ofrecord`, as its ``src/glue_ofrecord/glue_process.py``); the layout is described in
:mod:`.ofrecord`'s docstring, which re-exports both functions.
"""
import logging
import os
import re
from typing import Dict, Sequence

import numpy as np

from .._checks import check_int
from .._io import replace_directory
from .features import Features, convert_examples, load_tokenizer
from .glue import get_task, read_examples
from .ofrecord_layout import _INT32, _SIZE, EVAL_PREFIX, TRAIN_PREFIX, _check_path, _check_prefix, _record_pb2

__all__ = ["write_ofrecord_parts", "glue_to_ofrecord"]

logger = logging.getLogger("knowledge_distill_util.data.ofrecord")


def _int32_rows(name: str, array: np.ndarray) -> np.ndarray:
    if array.dtype.kind not in "iub":
        raise ValueError(f"features.{name} must hold integers to be written as an int32_list, got dtype "
                         f"{array.dtype}; regression scores (STS-B) have no place in the original layout")
    if array.size and (array.min() < _INT32[0] or array.max() > _INT32[1]):
        raise ValueError(f"features.{name} holds values outside int32 ({array.min()} .. {array.max()}); "
                         f"the original layout stores int32")
    return array.astype(np.int64)


def _serialise(features: Features, rows: range) -> bytes:
    record_pb2 = _record_pb2()
    ids, mask = _int32_rows("input_ids", features.input_ids), _int32_rows("input_mask", features.input_mask)
    segments, labels = _int32_rows("segment_ids", features.segment_ids), _int32_rows("labels", features.labels)
    out = []
    for row in rows:
        values = {"input_ids": ids[row], "input_mask": mask[row], "segment_ids": segments[row],
                  "label_ids": labels[row:row + 1], "is_real_example": (1,)}
        record = record_pb2.OFRecord(feature={
            name: record_pb2.Feature(int32_list=record_pb2.Int32List(value=[int(v) for v in value]))
            for name, value in values.items()})
        body = record.SerializeToString(deterministic=True)
        out.append(_SIZE.pack(len(body)))
        out.append(body)
    return b"".join(out)


def write_ofrecord_parts(features: Features, directory, part_num: int = 1, prefix: str = "part-") -> None:
    """Write ``features`` as ``part_num`` parts ``<directory>/<prefix>0 ..`` in the original's layout.

    Rows are split into ``part_num`` consecutive blocks (part ``i`` holds rows
    ``[i*N//part_num, (i+1)*N//part_num)``), so reading the parts in order gives the rows in order.
    Each record holds :data:`ORIGINAL_FEATURES` as ``int32_list`` (``is_real_example`` = 1). The
    directory is replaced atomically (``_io.replace_directory``); it must be new, empty, or hold only
    part files (an earlier output), so nothing else is ever deleted. Labels must be class indices.
    """
    if not isinstance(features, Features):
        raise TypeError(f"features must be a Features, got {type(features).__name__}")
    directory = os.path.abspath(_check_path("directory", directory))
    prefix = _check_prefix(prefix)
    part_num = check_int("part_num", part_num)
    if part_num > len(features):
        raise ValueError(f"part_num={part_num} is more than the {len(features)} rows to write to {directory}; "
                         f"every part needs at least one record: pass part_num <= {len(features)}")
    if os.path.isdir(directory):
        others = [n for n in sorted(os.listdir(directory)) if not re.fullmatch(r".*?\d+", n)
                  or not os.path.isfile(os.path.join(directory, n))]
        if others:
            raise ValueError(f"{directory} holds other files than OFRecord parts ({', '.join(others[:5])}); "
                             f"writing replaces the whole directory: choose a new or empty directory")
    bounds = [len(features) * i // part_num for i in range(part_num + 1)]

    def fill(staging: str) -> None:
        for part in range(part_num):
            data = _serialise(features, range(bounds[part], bounds[part + 1]))
            with open(os.path.join(staging, f"{prefix}{part}"), "wb") as handle:
                handle.write(data)

    replace_directory(directory, fill)


def glue_to_ofrecord(data_dir, task_name: str, out_dir, vocab_file, seq_length: int = 128,
                     part_num: int = 1, do_lower_case: bool = True,
                     splits: Sequence[str] = ("train", "eval")) -> Dict[str, int]:
    """Convert a GLUE task's TSV files to the original's OFRecord layout, as its ``glue_process.py``.

    Writes ``<out_dir>/train/train.of_record-<i>`` from ``train.tsv`` and ``<out_dir>/eval/
    eval.of_record-<i>`` from the dev file (``dev.tsv``; MNLI ``dev_matched.tsv``), ``i < part_num``; the split
    ``"train_aug"`` writes ``<out_dir>/train_aug/train.of_record-<i>`` from ``train_aug.tsv`` (TinyBERT's augmented
    set, where the original's ``--aug_train=True`` looks for it: ``train_data_dir`` with ``train`` -> ``train_aug``).
    Tokenisation: this package's WordPiece (:func:`~.features.convert_examples`: ``[CLS] a [SEP] b [SEP]``,
    BERT's pair truncation, ``[PAD]`` = id 0 padding), the same rules as the original's ``FullTokenizer``.
    Returns the number of records written per split. Regression tasks (STS-B) are refused: the original
    stores ``label_ids`` as int32 class indices.
    """
    spec = get_task(task_name)
    if spec.labels is None:
        raise ValueError(f"task {spec.name!r} is a regression task; the original OFRecord layout stores label_ids "
                         f"as int32 class indices, so it cannot hold its scores")
    data_dir = _check_path("data_dir", data_dir)
    out_dir = _check_path("out_dir", out_dir)
    if not os.path.isdir(data_dir):
        raise ValueError(f"GLUE data directory {data_dir} does not exist; pass the folder holding train.tsv and "
                         f"dev.tsv of task {spec.name!r}")
    for folder in (out_dir, *(os.path.join(out_dir, split) for split in ("train", "eval", "train_aug"))):
        if os.path.lexists(folder) and not os.path.isdir(folder):
            raise ValueError(f"output directory {folder} exists and is not a directory; pass another --output_dir "
                             f"or move that file away (it is left as it is)")
    seq_length = check_int("seq_length", seq_length)
    part_num = check_int("part_num", part_num)
    known = {"train": ("train", TRAIN_PREFIX), "eval": ("dev", EVAL_PREFIX), "train_aug": ("train_aug", TRAIN_PREFIX)}
    if isinstance(splits, str) or not splits or any(s not in known for s in splits):
        raise ValueError(f"splits must be a non-empty subset of {tuple(known)}, got {splits!r}")
    tokenizer = load_tokenizer(_check_path("vocab_file", vocab_file), lowercase=do_lower_case)
    written = {}
    for split in splits:
        tsv_split, prefix = known[split]
        features = convert_examples(read_examples(data_dir, spec, tsv_split), tokenizer, seq_length, spec)
        write_ofrecord_parts(features, os.path.join(out_dir, split), part_num=part_num, prefix=prefix)
        written[split] = len(features)
        logger.info("wrote %d %s records of %s to %s", len(features), split, spec.name, os.path.join(out_dir, split))
    return written
