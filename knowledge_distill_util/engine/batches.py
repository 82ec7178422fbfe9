"""Batches of any data: split into the model's inputs and the labels, moved to the model's device.

- A **dict** batch: the model is called as ``model(**inputs)``; the labels are ``batch[label_key]`` (popped
  from the inputs; None when absent).
- A **tuple/list** batch: ``model(*batch[:-1])``, the labels ``batch[-1]``.

Values may be OneFlow tensors or NumPy arrays (``float64`` arrays become ``float32`` tensors, as
``nn.Linear`` expects); anything else (a string, a list of tokens) is handed to the model unchanged.

    >>> import numpy as np
    >>> batch = split_batch({"x": np.zeros((2, 3)), "labels": np.array([0, 1])}, "labels", "cpu")
    >>> batch.args, sorted(batch.kwargs), batch.kwargs["x"].dtype, batch.labels.tolist()
    ((), ['x'], oneflow.float32, [0, 1])
"""
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import oneflow as flow

__all__ = ["Batch", "split_batch", "to_device", "flatten", "unflatten", "describe", "first_line"]


@dataclass
class Batch:
    """One batch on the device: ``model(*args, **kwargs)``, ``labels`` (or None), ``raw`` (as given, moved)."""

    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]
    labels: Optional[flow.Tensor]
    raw: Any = field(repr=False, default=None)

    def rows(self) -> int:
        """The batch size: the first dimension of the first tensor."""
        for value in list(self.args) + list(self.kwargs.values()) + [self.labels]:
            if isinstance(value, flow.Tensor) and value.ndim > 0:
                return int(value.shape[0])
        return 0


def to_device(value, device):
    """``value`` as a tensor on ``device`` (NumPy arrays converted, float64 to float32); others unchanged."""
    if isinstance(value, np.ndarray):
        if value.dtype == np.float64:
            value = value.astype(np.float32)
        return flow.tensor(value, device=device)
    if isinstance(value, flow.Tensor):
        device = device if isinstance(device, flow.device) else flow.device(device)
        return value if value.device == device else value.to(device)
    return value


def split_batch(batch, label_key: str, device) -> Batch:
    """Split ``batch`` (see the module doc) and move its values to ``device``."""
    if isinstance(batch, Mapping):
        moved = {key: to_device(value, device) for key, value in batch.items()}
        inputs = {key: value for key, value in moved.items() if key != label_key}
        if not inputs:
            raise ValueError(f"a dict batch holds only the labels {label_key!r}: it needs the model's inputs too, "
                             f"e.g. {{'input': x, {label_key!r}: y}}")
        return Batch((), inputs, moved.get(label_key), moved)
    if isinstance(batch, (tuple, list)):
        if len(batch) < 2:
            raise ValueError(f"a {type(batch).__name__} batch must be (inputs..., labels) with at least 2 items, got "
                             f"{len(batch)}; yield (x, y) tuples or dicts with the labels under {label_key!r}")
        moved = tuple(to_device(value, device) for value in batch)
        return Batch(moved[:-1], {}, moved[-1], moved)
    raise TypeError(f"cannot split a batch of type {type(batch).__name__} into inputs and labels; yield (inputs..., "
                    f"labels) tuples or dicts with the labels under {label_key!r}")


def flatten(batch: Batch, label_key: str = "labels") -> Tuple[Tuple[flow.Tensor, ...], Tuple]:
    """The batch's tensors in a fixed order and the layout to rebuild it (:func:`unflatten`): for ``nn.Graph``,
    whose inputs must be tensors. Raises ``TypeError`` for a value that is not a tensor."""
    names = tuple(range(len(batch.args))) + tuple(batch.kwargs)
    values = list(batch.args) + list(batch.kwargs.values())
    has_labels = batch.labels is not None
    if has_labels:
        values.append(batch.labels)
    for name, value in zip(names + ("labels",), values):
        if not isinstance(value, flow.Tensor):
            raise TypeError(f"use_graph=True needs every batch value to be a tensor or NumPy array, but input "
                            f"{name!r} is a {type(value).__name__}; convert it in the data loader or train eagerly")
    return tuple(values), (len(batch.args), tuple(batch.kwargs), has_labels, label_key)


def unflatten(values: Sequence[flow.Tensor], layout: Tuple) -> Batch:
    """Inverse of :func:`flatten`."""
    num_args, keys, has_labels, label_key = layout
    args = tuple(values[:num_args])
    kwargs = dict(zip(keys, values[num_args:num_args + len(keys)]))
    labels = values[-1] if has_labels else None
    raw = dict(kwargs, **{label_key: labels}) if keys else args + ((labels,) if has_labels else ())
    return Batch(args, kwargs, labels, raw)


def _describe_value(value) -> str:
    if isinstance(value, flow.Tensor):
        return f"{str(value.dtype).replace('oneflow.', '')} {list(value.shape)}"
    return type(value).__name__


def describe(batch: Batch) -> str:
    """The model inputs of ``batch``, one short item each: ``input 0 float32 [32, 9]``, ``x int64 [32]``.

    >>> describe(Batch((flow.zeros(2, 3),), {"mask": flow.ones(2, dtype=flow.int64), "name": "a"}, None))
    'input 0 float32 [2, 3], mask int64 [2], name str'
    """
    items = [f"input {i} {_describe_value(v)}" for i, v in enumerate(batch.args)]
    items += [f"{name} {_describe_value(v)}" for name, v in batch.kwargs.items()]
    return ", ".join(items) or "no inputs"


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message without a final period; for OneFlow's errors, whose message goes on
    with its C++ stack, with the innermost C++ function, where the check failed.

    >>> first_line(RuntimeError('(9 vs 8) \\n  File "matmul_op.cpp", line 54, in InferTensorDesc4Matmul\\n    \\nError'))
    '(9 vs 8) in InferTensorDesc4Matmul'
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = (lines[0] if lines else type(error).__name__).rstrip(".")
    frames = [line.rsplit(", in ", 1)[1] for line in lines[1:] if line.startswith("File ") and ", in " in line]
    return f"{text} in {frames[-1]}" if frames else text
