"""The files of an original OneFlow snapshot directory (see :mod:`.snapshot`): list its variables, read one
(``out``: float32 in C order, checked against its ``meta`` file and the model's shape), write one.

Split from :mod:`.snapshot` (which maps the variables onto this package's models) by job: this module knows
the directory layout only, no model.
"""
import os
import re
from typing import Callable, Dict, Optional, Tuple

import numpy as np

__all__ = ["list_snapshot_variables", "read_snapshot_variable", "snapshot_variable_shapes"]

DATA_FILENAME, META_FILENAME, DONE_FILENAME = "out", "meta", "snapshot_done"
#: Adam's slots (``<variable>-m`` / ``-v``), skipped on load.
_OPTIMIZER_SLOT = re.compile(r".*-(m|v|adam_m|adam_v)")


def _check_directory(directory) -> str:
    if not isinstance(directory, (str, os.PathLike)) or isinstance(directory, bytes):
        raise TypeError(f"directory must be a path (str or os.PathLike), got {directory!r} "
                        f"({type(directory).__name__})")
    return os.fspath(directory)


def list_snapshot_variables(directory) -> Dict[str, str]:
    """``{variable name: its folder}`` of every folder of ``directory`` holding an ``out`` file.

    Raises ``ValueError`` when ``directory`` does not exist or is not a snapshot (naming a
    ``snapshot_*`` folder inside it when there is one, the usual mistake).
    """
    directory = _check_directory(directory)
    if not os.path.isdir(directory):
        raise ValueError(f"snapshot directory {directory} does not exist; pass a OneFlow snapshot directory "
                         f"such as <model_save_dir>/snapshot_best")
    found = {}
    for name in sorted(os.listdir(directory)):
        folder = os.path.join(directory, name)
        if os.path.isfile(os.path.join(folder, DATA_FILENAME)):
            found[name] = folder
    if not found:
        inner = sorted(n for n in os.listdir(directory)
                       if n.startswith("snapshot_") and os.path.isdir(os.path.join(directory, n)))
        hint = (f"; it holds {', '.join(inner)}: pass {os.path.join(directory, inner[0])}" if inner else
                "; save_model directories (model.safetensors) are read with models.load_model" if
                os.path.exists(os.path.join(directory, "model.safetensors")) else
                "; it is in OneFlow's old pickle layout (pickled_data), which this package no longer reads: "
                f"convert it once with python -m knowledge_distill_util convert-checkpoint {directory} --trust" if
                os.path.exists(os.path.join(directory, "pickled_data")) else
                "; a snapshot holds one folder per variable, each with an 'out' file")
        raise ValueError(f"{directory} is not a OneFlow snapshot (no <variable>/out file){hint}")
    return found


def _meta_shape(folder: str, name: str) -> Optional[Tuple[int, ...]]:
    path = os.path.join(folder, META_FILENAME)
    if not os.path.isfile(path):
        return None
    from google.protobuf import text_format
    import oneflow.core.common.data_type_pb2 as data_type_pb2
    import oneflow.core.framework.variable_meta_info_pb2 as meta_pb2

    meta = meta_pb2.VariableMetaInfo()
    try:
        with open(path, encoding="utf-8") as handle:
            text_format.Parse(handle.read(), meta)
    except Exception as error:  # text_format.ParseError, UnicodeDecodeError
        raise ValueError(f"{path} (the meta file of variable {name}) is not a VariableMetaInfo ({error}); "
                         f"delete it (the shape then comes from the model) or restore it") from None
    if meta.data_type != data_type_pb2.kFloat:
        raise ValueError(f"variable {name} in {folder} is {data_type_pb2.DataType.Name(meta.data_type)}, "
                         f"expected kFloat (float32) as the original writes")
    return tuple(int(d) for d in meta.shape.dim)


def read_snapshot_variable(directory, name: str, shape: Optional[Tuple[int, ...]] = None) -> np.ndarray:
    """The float32 values of variable ``name``, shaped ``shape`` (or as its ``meta`` file says, or flat).

    Raises ``ValueError`` naming the variable and both shapes when the ``meta`` shape or the number of
    values does not match ``shape``.
    """
    folder = os.path.join(_check_directory(directory), name)
    path = os.path.join(folder, DATA_FILENAME)
    if not os.path.isfile(path):
        raise ValueError(f"variable {name} is missing from snapshot {directory} (no {path})")
    meta = _meta_shape(folder, name)
    size = os.path.getsize(path)
    if size % 4:
        raise ValueError(f"variable {name} in {directory}: {path} has {size} bytes, not a whole number of "
                         f"float32 values; the file is truncated: restore the snapshot")
    values = np.fromfile(path, dtype="<f4")
    if meta is not None and int(np.prod(meta)) != values.size:
        raise ValueError(f"variable {name} in {directory}: meta says shape {meta} but {path} holds "
                         f"{values.size} float32 values; the snapshot is corrupt")
    if shape is None:
        return values.reshape(meta) if meta is not None else values
    shape = tuple(int(d) for d in shape)
    squeeze = lambda dims: tuple(dims[next((i for i, d in enumerate(dims) if d != 1), len(dims)):])  # noqa: E731
    if meta is not None and squeeze(meta) != squeeze(shape):
        raise ValueError(f"variable {name} in {directory} has shape {meta} but the model needs {shape}; "
                         f"build the model with the snapshot's sizes (read_snapshot_config)")
    if values.size != int(np.prod(shape)):
        raise ValueError(f"variable {name} in {directory} holds {values.size} float32 values but the model "
                         f"needs shape {shape} ({int(np.prod(shape))} values); build the model with the "
                         f"snapshot's sizes (read_snapshot_config)")
    return values.reshape(shape)


def snapshot_variable_shapes(directory) -> Dict[str, Tuple[int, ...]]:
    """``{name: shape}`` from the ``meta`` files, or ``(n,)`` (the number of values) without one."""
    shapes = {}
    for name, folder in list_snapshot_variables(directory).items():
        meta = _meta_shape(folder, name)
        shapes[name] = meta if meta is not None else (os.path.getsize(os.path.join(folder, DATA_FILENAME)) // 4,)
    return shapes



def _meta_text(shape: Tuple[int, ...]) -> str:
    """The text ``VariableMetaInfo`` of a float32 variable of ``shape`` (what OneFlow writes as ``meta``)."""
    from google.protobuf import text_format
    import oneflow.core.common.data_type_pb2 as data_type_pb2
    import oneflow.core.framework.variable_meta_info_pb2 as meta_pb2

    meta = meta_pb2.VariableMetaInfo()
    meta.shape.dim[:] = shape
    meta.data_type = data_type_pb2.kFloat
    return text_format.MessageToString(meta)


def _write_variable(root: str, name: str, value: np.ndarray, meta_text: Callable[[Tuple[int, ...]], str]) -> None:
    folder = os.path.join(root, name)
    os.makedirs(folder)
    np.ascontiguousarray(value, dtype="<f4").tofile(os.path.join(folder, DATA_FILENAME))
    with open(os.path.join(folder, META_FILENAME), "w", encoding="utf-8") as handle:
        handle.write(meta_text(tuple(value.shape)))


def _write_snapshot_files(staging: str, arrays: Dict[str, np.ndarray]) -> None:
    """Fill the empty directory ``staging``: a folder per variable (``out`` + ``meta``), then ``snapshot_done``."""
    for name, value in arrays.items():
        _write_variable(staging, name, value, _meta_text)
    open(os.path.join(staging, DONE_FILENAME), "w").close()
