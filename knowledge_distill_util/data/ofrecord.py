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
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._checks import check_int
from .._io import replace_directory
from .features import Features, convert_examples, load_tokenizer
from .glue import get_task, read_examples

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

#: Features every record must hold (``label_ids`` becomes ``Features.labels``).
REQUIRED_FEATURES = ("input_ids", "input_mask", "segment_ids", "label_ids")
#: Features the original writes.
ORIGINAL_FEATURES = REQUIRED_FEATURES + ("is_real_example",)
#: The original's default part-name prefixes (``--train_data_prefix``, ``--eval_data_prefix``).
TRAIN_PREFIX = "train.of_record-"
EVAL_PREFIX = "eval.of_record-"

_SIZE = struct.Struct("<q")
_SEQUENCE_FEATURES = ("input_ids", "input_mask", "segment_ids")
_INT32 = (-(2 ** 31), 2 ** 31 - 1)


def _record_pb2():
    import oneflow.core.record.record_pb2 as record_pb2  # imports oneflow: only when needed

    return record_pb2


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


def _check_path(name: str, value) -> str:
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {value!r} ({type(value).__name__})")
    return os.fspath(value)


def _check_prefix(prefix) -> str:
    if not isinstance(prefix, str) or not prefix or "/" in prefix or os.sep in prefix:
        raise ValueError(f"prefix must be a non-empty file-name prefix such as {TRAIN_PREFIX!r} or 'part-', "
                         f"got {prefix!r}")
    return prefix


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
