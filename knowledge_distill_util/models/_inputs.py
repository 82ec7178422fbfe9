"""Validation of the ``(input_ids, input_mask, token_type_ids)`` triple shared by every model.

Two levels:

- :func:`check_model_inputs`: static facts (type, dtype, shape, not empty), also inside ``nn.Graph``.
- :func:`check_id_range` / :func:`check_mask_values` / :func:`check_mask_order`: the values (token and
  segment ids within the embedding tables, a mask of 0/1 entries, of valid tokens then padding). Out-of-range ids otherwise reach OneFlow's
  gather kernel, which aborts the process (negative ids) or silently reads a zero embedding (ids past
  the table). Reading values needs the tensor's data on the host (a device synchronisation in eager
  mode); inside ``nn.Graph`` (lazy tensors) the data does not exist while the graph is built, so these
  checks are **skipped there**: validate the data before it reaches a graph (the models' ``check_inputs``
  option, default on, controls the eager checks).
"""
from typing import Optional

import numpy as np
import oneflow as flow

__all__ = [
    "INTEGER_DTYPES",
    "check_model_inputs",
    "check_id_range",
    "check_mask_order",
    "check_mask_values",
    "extended_attention_mask",
]

INTEGER_DTYPES = (flow.int8, flow.int32, flow.int64, flow.uint8)
_MASK_DTYPES = INTEGER_DTYPES + (flow.bool, flow.float16, flow.float32, flow.float64)


def _check_tensor(name: str, value, allowed, allowed_text: str) -> None:
    if not isinstance(value, flow.Tensor):
        raise TypeError(
            f"{name} must be a oneflow.Tensor, got {type(value).__name__}; "
            f"convert it with oneflow.tensor(..., dtype=oneflow.int64) first"
        )
    if value.dtype not in allowed:
        raise TypeError(
            f"{name} must have an {allowed_text} dtype, got {value.dtype}; "
            f"cast it with {name}.to(oneflow.int64)"
        )


def check_model_inputs(
    input_ids, input_mask, token_type_ids, max_length: Optional[int] = None
) -> None:
    """Check ``input_ids`` (integer ``[B, L]``) and that mask and segment ids have the same shape.

    ``max_length`` (the model's ``max_position_embeddings``) bounds ``L`` when given.
    """
    _check_tensor("input_ids", input_ids, INTEGER_DTYPES, "integer (int32/int64)")
    if input_ids.dim() != 2:
        raise ValueError(
            f"input_ids must have shape [batch, seq_length], got shape {tuple(input_ids.shape)}; "
            f"add a batch dimension with input_ids.unsqueeze(0) for a single sequence"
        )
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(
            f"input_ids is empty (shape {tuple(input_ids.shape)}); the model needs at least one sequence "
            f"of at least one token: skip empty batches"
        )
    if max_length is not None and input_ids.shape[1] > max_length:
        raise ValueError(
            f"input_ids has sequence length {input_ids.shape[1]} but max_position_embeddings is "
            f"{max_length}; truncate the inputs to at most {max_length} tokens"
        )
    for name, value, allowed, text in (
        ("input_mask", input_mask, _MASK_DTYPES, "integer, bool or floating-point"),
        ("token_type_ids", token_type_ids, INTEGER_DTYPES, "integer (int32/int64)"),
    ):
        _check_tensor(name, value, allowed, text)
        if tuple(value.shape) != tuple(input_ids.shape):
            raise ValueError(
                f"{name} has shape {tuple(value.shape)} but input_ids has shape "
                f"{tuple(input_ids.shape)}; they must be equal (one entry per token)"
            )


try:  # OneFlow 0.9: True while an nn.Graph's build() runs (every op then builds the graph, even on eager inputs)
    from oneflow.framework.graph_build_util import lazy_mode as _lazy_mode

    def _building_graph(tensor: flow.Tensor) -> bool:
        return tensor.is_lazy or _lazy_mode.is_enabled()
except ImportError:  # pragma: no cover - other OneFlow versions
    def _building_graph(tensor: flow.Tensor) -> bool:
        return tensor.is_lazy


def _host(tensor: flow.Tensor) -> np.ndarray:
    return (tensor.to_local() if tensor.is_global else tensor).numpy()


def check_id_range(name: str, ids: flow.Tensor, size: int, size_name: str) -> None:
    """Require ``0 <= ids < size`` (an embedding table of ``size`` rows); skipped inside ``nn.Graph``.

    >>> check_id_range("input_ids", flow.tensor([[1, 30]]), 30, "vocab_size")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: input_ids holds 30 at [row 0, position 1] (1 id(s) out of range), outside [0, 29] ...
    """
    if _building_graph(ids):
        return
    if not bool(((ids < 0) | (ids >= size)).any().item()):
        return
    values = _host(ids)
    bad = (values < 0) | (values >= size)
    row, position = (int(i) for i in np.argwhere(bad)[0])
    fix = ("ids must index the embedding table: check that the tokenizer's vocabulary matches the model's "
           "vocab_size") if size_name == "vocab_size" else (
        "segment ids are 0 for the first text and 1 for the second")
    raise ValueError(
        f"{name} holds {values[row, position]} at [row {row}, position {position}] ({int(bad.sum())} id(s) "
        f"out of range), outside [0, {size - 1}] ({size_name}={size}); {fix}"
    )


def check_mask_values(input_mask: flow.Tensor) -> None:
    """Require every entry of the mask to be 0 (padding) or 1 (token); skipped inside ``nn.Graph``.

    A BERT mask of -3 would otherwise turn into an attention bias of +40000 (``(1 - mask) * -10000``).

    >>> check_mask_values(flow.tensor([[1, 1, -3]]))
    Traceback (most recent call last):
    ...
    ValueError: input_mask holds -3 at [row 0, position 2]; a mask holds 1 (token) or 0 (padding)
    """
    if _building_graph(input_mask) or input_mask.dtype == flow.bool:
        return
    if not bool(((input_mask != 0) & (input_mask != 1)).any().item()):
        return
    values = _host(input_mask)
    row, position = (int(i) for i in np.argwhere((values != 0) & (values != 1))[0])
    raise ValueError(f"input_mask holds {values[row, position]} at [row {row}, position {position}]; a mask holds 1 "
                     f"(token) or 0 (padding)")


def check_mask_order(input_mask: flow.Tensor) -> None:
    """Require every row of the ``[B, L]`` mask to be valid tokens then padding (``1 ... 1 0 ... 0``,
    entries 0 or 1); skipped inside ``nn.Graph``.

    >>> check_mask_order(flow.tensor([[1, 1, 0], [0, 1, 1]]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: input_mask row 1 is [0, 1, 1]: padding before or between tokens; ...
    """
    if _building_graph(input_mask):
        return
    valid = input_mask != 0
    binary = (input_mask == 0) | (input_mask == 1)
    problems = (~binary).any()
    if input_mask.shape[1] > 1:
        problems = problems | (valid[:, 1:] & ~valid[:, :-1]).any()
    if not bool(problems.item()):
        return
    values = _host(input_mask)
    nonbinary = np.argwhere((values != 0) & (values != 1))
    if len(nonbinary):
        row, position = (int(i) for i in nonbinary[0])
        raise ValueError(
            f"input_mask holds {values[row, position]} at [row {row}, position {position}]; a mask holds 1 "
            f"(token) or 0 (padding)"
        )
    on = values != 0
    row = int(np.argwhere(on[:, 1:] & ~on[:, :-1])[0][0])
    shown = values[row].astype(np.int64).tolist()
    text = str(shown) if len(shown) <= 24 else f"{str(shown[:24])[:-1]}, ...]"
    raise ValueError(
        f"input_mask row {row} is {text}: padding before or between tokens; the BiLSTM reads the valid "
        f"tokens first and the padding after them (1 ... 1 0 ... 0): pad on the right, or build the model "
        f"with ignore_padding=False"
    )


def extended_attention_mask(input_mask: flow.Tensor, dtype: flow.dtype) -> flow.Tensor:
    """``[B, L]`` mask (1 = token, 0 = padding) -> additive ``[B, 1, 1, L]`` mask: 0 or -10000."""
    mask = input_mask.to(dtype).unsqueeze(1).unsqueeze(2)
    return (1.0 - mask) * -10000.0
