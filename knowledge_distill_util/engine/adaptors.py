"""Adaptors: a model's outputs as named features (TextBrewer's adaptors).

An adaptor is ``adaptor(batch, outputs) -> dict`` where ``batch`` is the batch as the data gave it (moved to
the device) and ``outputs`` what the model returned. The keys it may return (:data:`ADAPTOR_KEYS`):

- ``logits``: ``[B, C]`` (or ``[B, L, C]``), for the logit loss, the hard labels and evaluation;
- ``hidden``, ``attention``, ``value``, ``query``, ``key``: per-layer lists of tensors, indexed by the
  integer ``layer_S``/``layer_T`` of the intermediate matches;
- ``mask``: ``[B, L]`` (1 = token), handed to every loss that takes one;
- ``labels``: overrides the batch's labels; ``losses``: extra loss terms the model computed (a tensor, a
  list or a dict of scalar tensors), added with ``DistillationConfig.extra_loss_weight``.

:func:`default_adaptor` needs no code for this package's models or any model returning a tensor.

    >>> import oneflow as flow
    >>> sorted(default_adaptor({"x": flow.ones(1)}, flow.zeros(1, 2)))
    ['logits']
    >>> check_features({"hidden": []}, "student adaptor")
    {'hidden': []}
    >>> require({"hidden": []}, "logits", "student", "the logit loss 'kl_div'")
    Traceback (most recent call last):
    ...
    ValueError: the logit loss 'kl_div' needs the student's 'logits', but its adaptor returned only 'hidden'; return {'logits': ...} from adaptor_S
"""
from typing import Any, Dict, Mapping

import oneflow as flow

__all__ = ["ADAPTOR_KEYS", "LIST_FEATURES", "default_adaptor", "check_features", "require"]

#: The keys an adaptor may return.
ADAPTOR_KEYS = ("logits", "hidden", "attention", "value", "query", "key", "mask", "labels", "losses")
#: The per-layer list features (indexed by integer layers).
LIST_FEATURES = ("hidden", "attention", "value", "query", "key")
_MASK_KEYS = ("attention_mask", "input_mask")
#: A dict output's entries that give each feature, the first present one.
_MAPPED = {"logits": ("logits",), "hidden": ("hidden_states", "reps"),
           "attention": ("attentions", "attention_scores", "atts"), "query": ("query",), "key": ("key",),
           "value": ("value",)}


def _is_tensor_list(value) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(x, flow.Tensor) for x in value)


def default_adaptor(batch, outputs) -> Dict[str, Any]:
    """The features of common outputs, so that most models need no adaptor.

    - a tensor: ``{"logits": outputs}`` (this package's LSTM student, any classifier);
    - ``(logits, reps, atts)`` with lists (this package's BERT models): ``logits``, ``hidden``,
      ``attention``, and the mask: the second input of a tuple batch;
    - a dict (Hugging Face style, this package's ``BertOutput``): ``logits``; ``hidden_states`` (else
      ``reps``) -> ``hidden``; ``attentions`` (else ``attention_scores``, else ``atts``) -> ``attention``;
      ``query``, ``key``, ``value``;
    - a tuple or list starting with a tensor: its first item as ``logits``.

    The mask also comes from a dict batch's ``attention_mask`` or ``input_mask``.
    """
    features: Dict[str, Any] = {}
    if isinstance(outputs, flow.Tensor):
        features["logits"] = outputs
    elif isinstance(outputs, Mapping):
        for key, sources in _MAPPED.items():
            source = next((name for name in sources if outputs.get(name) is not None), None)
            if source is not None:
                features[key] = outputs[source]
    elif isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], flow.Tensor):
        features["logits"] = outputs[0]
        if len(outputs) == 3 and _is_tensor_list(outputs[1]) and _is_tensor_list(outputs[2]):
            features["hidden"], features["attention"] = list(outputs[1]), list(outputs[2])
            if isinstance(batch, (tuple, list)) and len(batch) >= 3:
                features["mask"] = batch[1]
    if isinstance(batch, Mapping):
        for key in _MASK_KEYS:
            if isinstance(batch.get(key), flow.Tensor):
                features["mask"] = batch[key]
                break
    return features


def check_features(features, who: str) -> Dict[str, Any]:
    """``features`` if it is a dict with known keys; ``TypeError``/``ValueError`` otherwise."""
    if not isinstance(features, Mapping):
        raise TypeError(f"the {who} must return a dict with keys among {', '.join(ADAPTOR_KEYS)}, got "
                        f"{type(features).__name__}")
    unknown = sorted(set(features) - set(ADAPTOR_KEYS))
    if unknown:
        raise ValueError(f"the {who} returned unknown key(s) {', '.join(map(repr, unknown))}; the keys are "
                         f"{', '.join(ADAPTOR_KEYS)}")
    return dict(features)


def require(features: Mapping[str, Any], key: str, side: str, user: str):
    """``features[key]``; ``ValueError`` naming the key and the loss ``user`` when it is missing."""
    value = features.get(key)
    if value is None:
        have = ", ".join(map(repr, features)) or "nothing"
        which = "adaptor_S" if side == "student" else "adaptor_T"
        raise ValueError(f"{user} needs the {side}'s {key!r}, but its adaptor returned only {have}; return "
                         f"{{{key!r}: ...}} from {which}")
    return value
