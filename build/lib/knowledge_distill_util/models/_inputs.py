"""Validation of the ``(input_ids, input_mask, token_type_ids)`` triple shared by every model.

Only static facts (type, dtype, shape) are checked, so the checks also run inside ``nn.Graph``.
"""
from typing import Optional

import oneflow as flow

__all__ = [
    "INTEGER_DTYPES",
    "check_model_inputs",
    "extended_attention_mask",
    "check_positive_int",
    "check_probability",
]

INTEGER_DTYPES = (flow.int8, flow.int32, flow.int64, flow.uint8)
_MASK_DTYPES = INTEGER_DTYPES + (flow.bool, flow.float16, flow.float32, flow.float64)


def check_positive_int(name: str, value) -> int:
    """Require an ``int`` >= 1 (a constructor size or count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_probability(name: str, value) -> float:
    """Require a number in ``[0, 1)`` (a dropout probability)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


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


def extended_attention_mask(input_mask: flow.Tensor, dtype: flow.dtype) -> flow.Tensor:
    """``[B, L]`` mask (1 = token, 0 = padding) -> additive ``[B, 1, 1, L]`` mask: 0 or -10000."""
    mask = input_mask.to(dtype).unsqueeze(1).unsqueeze(2)
    return (1.0 - mask) * -10000.0
