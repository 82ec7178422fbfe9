"""The constants of the original toolkit's OFRecord layout (described in :mod:`.ofrecord`'s docstring) and the
argument checks its reader (:mod:`.ofrecord`) and writer (:mod:`.ofrecord_write`) share.
"""
import os
import struct

__all__ = ["REQUIRED_FEATURES", "ORIGINAL_FEATURES", "TRAIN_PREFIX", "EVAL_PREFIX"]

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


def _check_path(name: str, value) -> str:
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {value!r} ({type(value).__name__})")
    return os.fspath(value)


def _check_prefix(prefix) -> str:
    if not isinstance(prefix, str) or not prefix or "/" in prefix or os.sep in prefix:
        raise ValueError(f"prefix must be a non-empty file-name prefix such as {TRAIN_PREFIX!r} or 'part-', "
                         f"got {prefix!r}")
    return prefix
