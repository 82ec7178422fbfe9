"""The original toolkit's OFRecord data: read its parts into :class:`~.features.Features`, write parts in
its layout, and convert GLUE TSV files to it (as its ``src/glue_ofrecord/glue_process.py`` does).

Layout (read from yejinlei/Dubhe ``model_compress/model_compress/distil/src/glue_ofrecord/glue_process.py``,
``file_based_convert_examples_to_features`` and ``glue_process``; and the readers ``BertDecoder`` of the
``examples/*/task_*.py`` scripts):

- ``<out_dir>/train/train.of_record-0`` and ``<out_dir>/eval/eval.of_record-0`` (the original writes one
  part per split; ``--train_data_prefix`` defaults to ``train.of_record-``, ``--eval_data_prefix`` to
  ``eval.of_record-``). The BiLSTM data (``glue_process_lstm.py``) is the same layout in
  ``<task>_lstm_32/{train,eval}`` (word-level ids, ``segment_ids`` all 1): read it the same way.
- Part ``i`` of ``part_num`` is the file ``<prefix><i>`` (OneFlow's ``part_name_suffix_length=-1``);
  zero-padded names (``part-00000``) are recognised too.
- Each record: its size as an 8-byte little-endian signed integer (``struct.pack("q", size)``), then a
  serialised ``oneflow.core.record.record_pb2.OFRecord``.
- Features, all ``int32_list``: ``input_ids``, ``input_mask``, ``segment_ids`` (``seq_length`` values
  each), ``label_ids`` (1 value: the class index), ``is_real_example`` (1 value, always 1).

Reading goes through OneFlow's own reader (``flow.nn.OFRecordReader`` + ``flow.nn.OFRecordRawDecoder``),
every record once, in file order (part 0 first; no shuffle: shuffle the returned arrays when training).
Before that, every part is scanned in Python (framing, feature names, kinds and lengths), so a bad file
raises a ``ValueError`` naming the file and the fix instead of aborting the process in a C++ kernel.
"""
import logging
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from .._checks import check_int
from .features import Features
from .ofrecord_layout import (_SEQUENCE_FEATURES, _SIZE, EVAL_PREFIX, ORIGINAL_FEATURES,  # noqa: F401 - re-exported
                              REQUIRED_FEATURES, TRAIN_PREFIX, _check_path, _check_prefix, _record_pb2)
from .ofrecord_write import glue_to_ofrecord, write_ofrecord_parts  # noqa: F401 - re-exported

__all__ = [
    "REQUIRED_FEATURES",
    "ORIGINAL_FEATURES",
    "TRAIN_PREFIX",
    "EVAL_PREFIX",
    "OFRecordParts",
    "scan_ofrecord_parts",
    "read_ofrecord_features",
    "check_ofrecord_labels",
    "write_ofrecord_parts",
    "glue_to_ofrecord",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OFRecordParts:
    """What :func:`scan_ofrecord_parts` found: the part files in reading order, the number of records
    in each, and the common sequence length ``L``."""

    directory: str
    prefix: str
    paths: Tuple[str, ...]
    counts: Tuple[int, ...]
    seq_length: int
    suffix_length: int

    @property
    def total(self) -> int:
        """Records in all parts."""
        return int(sum(self.counts))


def _part_files(directory: str) -> Dict[str, List[Tuple[int, str]]]:
    """Files ``<something><digits>`` in ``directory`` grouped by the prefix before the digits."""
    groups: Dict[str, List[Tuple[int, str]]] = {}
    for name in sorted(os.listdir(directory)):
        match = re.fullmatch(r"(.*?)(\d+)", name)
        if match and os.path.isfile(os.path.join(directory, name)):
            groups.setdefault(match.group(1), []).append((int(match.group(2)), match.group(2)))
    return groups


def _locate_parts(directory: str, prefix: str, part_num: int) -> Tuple[List[str], int]:
    """Paths of parts ``0 .. part_num-1`` and OneFlow's ``part_name_suffix_length`` for them."""
    if not os.path.exists(directory):
        raise ValueError(f"OFRecord directory {directory} does not exist; pass the directory holding the parts "
                         f"(e.g. <glue_ofrecord>/<task>/train), or make it with scripts/glue_to_ofrecord.py")
    if not os.path.isdir(directory):
        raise ValueError(f"OFRecord directory {directory} is not a directory; pass the directory holding the "
                         f"{prefix}* part files, not a file")
    groups = _part_files(directory)
    found = groups.get(prefix, [])
    if not found:
        others = ", ".join(f"{p!r} ({len(v)} part(s))" for p, v in sorted(groups.items())) or "no part files"
        raise ValueError(f"{directory} holds no part {prefix}0 (no file named {prefix}<number>); it holds "
                         f"{others}; pass the matching prefix (--train_data_prefix/--eval_data_prefix) or the "
                         f"right directory")
    digits = {index: text for index, text in found}
    first = digits.get(0)
    suffix_length = -1 if first is None or len(first) == 1 else len(first)
    paths, missing = [], []
    for index in range(part_num):
        text = str(index) if suffix_length == -1 else str(index).zfill(suffix_length)
        path = os.path.join(directory, prefix + text)
        (paths if os.path.isfile(path) else missing).append(path)
    if missing:
        raise ValueError(f"{directory} holds {len(found)} part(s) named {prefix}<number> but part_num is "
                         f"{part_num}: missing {', '.join(os.path.basename(m) for m in missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}; pass --*_data_part_num={len(paths) or len(found)} "
                         f"or convert the data again with that many parts")
    extra = len(found) - part_num
    if extra > 0:
        logger.info("%s holds %d more part(s) named %s<number> than part_num=%d; they are not read (as in the "
                    "original)", directory, extra, prefix, part_num)
    return paths, suffix_length


def _feature_values(record, name: str, path: str, index: int):
    if name not in record.feature:
        raise ValueError(f"record {index} of {path} has no feature {name!r} (it has "
                         f"{sorted(record.feature)}); the original layout needs {list(REQUIRED_FEATURES)}: "
                         f"convert the data again with scripts/glue_to_ofrecord.py")
    feature = record.feature[name]
    kind = feature.WhichOneof("kind")
    if kind != "int32_list":
        raise ValueError(f"feature {name!r} of record {index} of {path} is a {kind}, expected an int32_list as "
                         f"the original writes; convert the data again with scripts/glue_to_ofrecord.py")
    return feature.int32_list.value


def _scan_part(path: str, seq_length: Optional[int]) -> Tuple[int, Optional[int]]:
    """Count the records of one part, checking framing, features and lengths; returns (count, L)."""
    record_pb2 = _record_pb2()
    with open(path, "rb") as handle:
        data = handle.read()
    offset, index = 0, 0
    while offset < len(data):
        if offset + _SIZE.size > len(data):
            raise ValueError(f"{path} ends inside the 8-byte size of record {index} (byte {offset} of "
                             f"{len(data)}); the file is truncated: convert the data again")
        (size,) = _SIZE.unpack_from(data, offset)
        start = offset + _SIZE.size
        if size < 0 or start + size > len(data):
            raise ValueError(f"record {index} of {path} claims {size} bytes at byte {start} but the file has "
                             f"{len(data)}; the file is truncated or not in the OFRecord layout (8-byte "
                             f"little-endian size, then the record): convert the data again")
        record = record_pb2.OFRecord()
        try:
            record.ParseFromString(data[start:start + size])
        except Exception as error:  # protobuf's DecodeError
            raise ValueError(f"record {index} of {path} is not an OFRecord message ({error}); convert the data "
                             f"again") from None
        for name in _SEQUENCE_FEATURES:
            length = len(_feature_values(record, name, path, index))
            if seq_length is None:
                seq_length = length
            if length != seq_length:
                raise ValueError(f"feature {name!r} of record {index} of {path} has {length} values, expected "
                                 f"seq_length={seq_length}; pass the --seq_length the data was converted with, "
                                 f"or convert it again")
        labels = _feature_values(record, "label_ids", path, index)
        if len(labels) != 1:
            raise ValueError(f"feature 'label_ids' of record {index} of {path} has {len(labels)} values, "
                             f"expected 1 (the class index); convert the data again")
        offset, index = start + size, index + 1
    return index, seq_length


def scan_ofrecord_parts(directory, prefix: str = "part-", part_num: int = 1,
                        seq_length: Optional[int] = None) -> OFRecordParts:
    """Find and check parts ``<directory>/<prefix>0 .. <prefix><part_num-1>`` (every record).

    ``seq_length`` (``L``), when given, is the length every ``input_ids``/``input_mask``/``segment_ids``
    must have; otherwise the first record's length is required of all. Raises ``ValueError`` naming the
    path and the fix for: a missing directory, no part with ``prefix``, fewer parts than ``part_num``,
    a truncated file, a record without one of :data:`REQUIRED_FEATURES`, a feature that is not an
    ``int32_list``, a wrong length, no record at all.

    >>> import tempfile
    >>> scan_ofrecord_parts(tempfile.mkdtemp(), prefix="train.of_record-")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ... holds no part train.of_record-0 ...
    """
    directory = _check_path("directory", directory)
    prefix = _check_prefix(prefix)
    part_num = check_int("part_num", part_num, hint=" (--*_data_part_num: how many part files to read)")
    seq_length = check_int("seq_length", seq_length, allow_none=True)
    paths, suffix_length = _locate_parts(directory, prefix, part_num)
    counts = []
    for path in paths:
        count, seq_length = _scan_part(path, seq_length)
        counts.append(count)
    if sum(counts) == 0:
        raise ValueError(f"the {part_num} part(s) {prefix}* in {directory} hold no record; convert the data again")
    return OFRecordParts(directory, prefix, tuple(paths), tuple(counts), int(seq_length), suffix_length)


def _decode_with_oneflow(parts: OFRecordParts, count: int, chunk_size: int) -> Dict[str, np.ndarray]:
    """The first ``count`` records through ``flow.nn.OFRecordReader`` (file order, no shuffle)."""
    import oneflow as flow

    batch = min(count, chunk_size)
    # Under OneFlow's launcher a reader without a placement splits the parts among the processes (and
    # aborts with fewer parts than processes); placed on this process alone, every process reads them all.
    alone = dict(placement=flow.placement("cpu", ranks=[flow.env.get_rank()]), sbp=flow.sbp.broadcast) \
        if flow.env.get_world_size() > 1 else {}
    reader = flow.nn.OFRecordReader(parts.directory, batch_size=batch, data_part_num=len(parts.paths),
                                    part_name_prefix=parts.prefix, part_name_suffix_length=parts.suffix_length,
                                    random_shuffle=False, shuffle_after_epoch=False, **alone)
    shapes = {name: (parts.seq_length,) for name in _SEQUENCE_FEATURES}
    shapes["label_ids"] = (1,)
    decoders = {name: flow.nn.OFRecordRawDecoder(name, shape=shape, dtype=flow.int32)
                for name, shape in shapes.items()}
    chunks: Dict[str, List[np.ndarray]] = {name: [] for name in shapes}
    done = 0
    while done < count:
        records = reader()
        keep = min(batch, count - done)  # the reader cycles: the last batch may wrap to the first records
        for name, decoder in decoders.items():
            values = decoder(records)
            chunks[name].append((values.to_local() if values.is_global else values).numpy()[:keep])
        done += keep
    return {name: np.concatenate(values).astype(np.int64) for name, values in chunks.items()}


def check_ofrecord_labels(labels: np.ndarray, parts: OFRecordParts, num_labels: int) -> None:
    """Every class id in ``labels`` (rows in reading order) must lie in ``[0, num_labels)``; ``ValueError``
    naming the part file, the record, the label and the valid range otherwise (as the TSV reader refuses
    an unknown label). A label outside the range would train with zero loss (a class the classifier does
    not have) or add a phantom class to the dev metrics."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_labels))
    if not len(bad):
        return
    row = int(bad[0])
    part = int(np.searchsorted(np.cumsum(parts.counts), row, side="right"))
    record = row - int(sum(parts.counts[:part]))
    raise ValueError(f"record {record} of {parts.paths[part]} has label_ids {int(labels[row])}, outside the "
                     f"{num_labels} classes of the task (0 .. {num_labels - 1}; {len(bad)} such record(s) in "
                     f"all); pass the right --task_name or convert the data again with scripts/glue_to_ofrecord.py")


def read_ofrecord_features(directory, prefix: str = "part-", part_num: int = 1,
                           example_num: Optional[int] = None, seq_length: Optional[int] = None,
                           chunk_size: int = 4096, num_labels: Optional[int] = None) -> Features:
    """Read the original's OFRecord parts into :class:`Features` (int64 arrays ``[N, L]``, labels ``[N]``).

    The arguments are the original's ``--*_data_dir``, ``--*_data_prefix``, ``--*_data_part_num``,
    ``--*_example_num`` and ``--seq_length`` (or ``--student_seq_length`` for the BiLSTM's ``*_lstm``
    data). Every record is read once, in file order. ``example_num`` keeps the first ``example_num``
    records (``None``: all); a larger value than the data holds reads all of them and logs a warning
    (the original's default ``--train_example_num=88614`` must keep working on smaller tasks).
    Everything is checked first (:func:`scan_ofrecord_parts`); ``chunk_size`` is the reader's batch.
    ``num_labels`` (a classification task's class count; ``None`` for regression) makes every label read
    a class id in ``[0, num_labels)`` (:func:`check_ofrecord_labels`).

    >>> import tempfile, numpy as np
    >>> folder = tempfile.mkdtemp()
    >>> ids = np.array([[101, 7, 102, 0], [101, 8, 9, 102]])
    >>> f = Features(ids, (ids > 0).astype(np.int64), np.zeros_like(ids), np.array([1, 0]))
    >>> write_ofrecord_parts(f, folder, part_num=2, prefix=TRAIN_PREFIX)
    >>> sorted(os.listdir(folder))
    ['train.of_record-0', 'train.of_record-1']
    >>> back = read_ofrecord_features(folder, TRAIN_PREFIX, part_num=2)
    >>> back.input_ids.tolist(), back.labels.tolist()
    ([[101, 7, 102, 0], [101, 8, 9, 102]], [1, 0])
    """
    example_num = check_int("example_num", example_num, allow_none=True,
                            hint=" (--*_example_num: how many records to read)")
    chunk_size = check_int("chunk_size", chunk_size)
    num_labels = check_int("num_labels", num_labels, allow_none=True)
    parts = scan_ofrecord_parts(directory, prefix, part_num, seq_length)
    count = parts.total
    if example_num is not None and example_num > count:
        logger.warning("example_num=%d but the %d part(s) %s* in %s hold %d records; reading all %d (pass "
                       "--*_example_num=%d)", example_num, len(parts.paths), parts.prefix, parts.directory,
                       count, count, count)
    elif example_num is not None:
        count = example_num
    arrays = _decode_with_oneflow(parts, count, chunk_size)
    if num_labels is not None:
        check_ofrecord_labels(arrays["label_ids"][:, 0], parts, num_labels)
    return Features(input_ids=arrays["input_ids"], input_mask=arrays["input_mask"],
                    segment_ids=arrays["segment_ids"], labels=arrays["label_ids"][:, 0])
