"""The BERT configuration check shared by :mod:`.bert` (the models) and :mod:`.pretrained` (Hugging Face
directories): the activations, the attention outputs and :func:`check_bert_config`. Its own module so that
``pretrained`` need not import ``bert``, which imports ``pretrained`` in ``from_pretrained``."""

import math
from typing import Any, Callable, Dict, Mapping, Optional

import oneflow as flow
import oneflow.nn.functional as F

from .._checks import check_bool, check_positive_real, check_probability
from ._sizes import check_size

ATTENTION_OUTPUTS = ("probs", "scores")
_SQRT_HALF = 1.0 / math.sqrt(2.0)


def _gelu(x: flow.Tensor) -> flow.Tensor:
    """Exact GELU ``x * (1 + erf(x / sqrt(2))) / 2``.

    With a gradient to compute, the composed form is used (the fused kernel's backward re-evaluates
    erf); without one the fused kernel. Timings: docs/performance.md.
    """
    if x.requires_grad:
        return x * 0.5 * (1.0 + flow.erf(x * _SQRT_HALF))
    return F.gelu(x)


def _gelu_tanh(x: flow.Tensor) -> flow.Tensor:
    return F.gelu(x, approximate="tanh")


HIDDEN_ACTS: Dict[str, Callable[[flow.Tensor], flow.Tensor]] = {
    "gelu": _gelu,  # exact (erf) GELU, as BERT and the original
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "relu": F.relu,
    "tanh": flow.tanh,
}


_BERT_INTS = ("vocab_size", "seq_length", "hidden_size", "num_hidden_layers", "num_attention_heads",
              "intermediate_size", "max_position_embeddings", "type_vocab_size", "label_num", "fit_size")
_BERT_PROBABILITIES = ("hidden_dropout_prob", "attention_probs_dropout_prob")
_BERT_REALS = ("initializer_range", "layer_norm_eps")
_BERT_CHOICES = {"hidden_act": tuple(HIDDEN_ACTS), "attention_output": ATTENTION_OUTPUTS}
_BERT_BOOLS = ("is_student",)
BERT_CONFIG_KEYS = _BERT_INTS + _BERT_PROBABILITIES + _BERT_REALS + tuple(_BERT_CHOICES) + _BERT_BOOLS


def check_bert_config(config: Mapping[str, Any], source: Optional[str] = None) -> Dict[str, Any]:
    """Check the types and ranges of (some of) the constructor's configuration values.

    ``config`` may hold any subset of the constructor's keys (``source``, a file name, goes into every
    message). Returns a copy with probabilities and reals as ``float``. Raises ``TypeError`` for a
    wrong type or an unknown key, ``ValueError`` for a value out of range, naming the key.

    >>> check_bert_config({"layer_norm_eps": "1e-12"}, source="config.json")
    Traceback (most recent call last):
    ...
    TypeError: layer_norm_eps in config.json must be a finite number > 0, got '1e-12' (str)
    """
    where = f" in {source}" if source else ""
    unknown = sorted(str(k) for k in config if k not in BERT_CONFIG_KEYS)
    if unknown:
        raise TypeError(f"unknown BERT configuration keys {unknown}{where}; valid keys: {', '.join(BERT_CONFIG_KEYS)}")
    checked = dict(config)
    for key, value in config.items():
        if key in _BERT_INTS:
            checked[key] = check_size(key, value, source=source)
        elif key in _BERT_PROBABILITIES:
            checked[key] = check_probability(key, value, source=source)
        elif key in _BERT_REALS:
            checked[key] = check_positive_real(key, value, source=source)
        elif key in _BERT_BOOLS:
            checked[key] = check_bool(key, value, source=source)
        else:
            choices = _BERT_CHOICES[key]
            if not isinstance(value, str):
                raise TypeError(f"{key}{where} must be one of {sorted(choices) if key == 'hidden_act' else choices}, "
                                f"got {value!r} ({type(value).__name__})")
    if "hidden_act" in config and config["hidden_act"] not in HIDDEN_ACTS:
        raise ValueError(f"hidden_act{where} must be one of {sorted(HIDDEN_ACTS)}, got {config['hidden_act']!r}")
    if "attention_output" in config and config["attention_output"] not in ATTENTION_OUTPUTS:
        raise ValueError(
            f"attention_output{where} must be one of {ATTENTION_OUTPUTS}, got {config['attention_output']!r}: "
            f"'probs' = softmax probabilities (original), 'scores' = masked raw scores (TinyBERT)"
        )
    if "hidden_size" in config and "num_attention_heads" in config:
        if config["hidden_size"] % config["num_attention_heads"] != 0:
            raise ValueError(
                f"hidden_size ({config['hidden_size']}) must be a multiple of num_attention_heads "
                f"({config['num_attention_heads']}){where}"
            )
    return checked
