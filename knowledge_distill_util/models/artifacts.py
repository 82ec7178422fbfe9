"""A trained model on disk: a directory with ``model_config.json`` and ``weights/``.

``model_config.json`` holds the architecture (``"bert"`` or ``"lstm"``), the constructor arguments under
``"config"``, and the run's meta: recipe, task, labels, vocabulary file, sequence length, origin.
``weights/`` is written by :func:`~knowledge_distill_util.models.save_model` (``weights/model.safetensors``;
a ``weights/`` in OneFlow's old pickle layout is refused, naming ``convert-checkpoint``).
"""
import json
import os
from typing import Dict, Tuple

import oneflow.nn as nn

from . import BertForSequenceClassification, LSTMStudentForSequenceClassification, load_model, save_model
from .bert_config import check_bert_config
from .lstm import check_lstm_config
from .._io import atomic_write_text
from .._state import LegacyPickleError, legacy_error
from .._errors import ConfigError

__all__ = ["MODEL_CONFIG", "WEIGHTS", "ARCHITECTURES", "architecture_of", "save_trained", "read_meta",
           "load_trained"]

MODEL_CONFIG = "model_config.json"
WEIGHTS = "weights"
#: architecture name -> model class.
ARCHITECTURES = {"bert": BertForSequenceClassification, "lstm": LSTMStudentForSequenceClassification}


def architecture_of(model: nn.Module) -> str:
    """The :data:`ARCHITECTURES` name of ``model``'s class."""
    for name, cls in ARCHITECTURES.items():
        if isinstance(model, cls):
            return name
    raise TypeError(f"cannot save a {type(model).__name__}; expected one of "
                    f"{[c.__name__ for c in ARCHITECTURES.values()]}")


def save_trained(model: nn.Module, directory: str, meta: Dict) -> str:
    """Save ``model``'s weights and ``meta`` + its architecture and constructor config to ``directory``."""
    os.makedirs(directory, exist_ok=True)
    save_model(model, os.path.join(directory, WEIGHTS))
    info = dict(meta, architecture=architecture_of(model), config=dict(model.config))
    atomic_write_text(os.path.join(directory, MODEL_CONFIG), json.dumps(info, indent=2))
    return directory


def read_meta(directory: str, what: str = "model") -> Dict:
    """The ``model_config.json`` of a saved model; :class:`ConfigError` naming the problem otherwise."""
    if directory is None or not os.path.isdir(directory):
        raise ConfigError(f"{what} directory {directory!r} does not exist; pass a directory written by "
                          f"this package (train a teacher with kdu-train --recipe teacher)")
    path = os.path.join(directory, MODEL_CONFIG)
    if not os.path.isfile(path):
        if os.path.isfile(os.path.join(directory, "config.json")):
            raise ConfigError(
                f"{what} {directory} is a pretrained checkpoint without a fine-tuned classifier "
                f"({MODEL_CONFIG} is missing); fine-tune it first with kdu-train --recipe teacher "
                f"--teacher_model {directory} and pass the resulting --model_save_dir"
            )
        raise ConfigError(f"{what} {directory} has no {MODEL_CONFIG}; pass a directory written by this package")
    try:
        with open(path, encoding="utf-8") as stream:
            meta = json.load(stream)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not valid JSON ({error}); retrain the model or restore the file") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{path} holds a JSON {type(meta).__name__}, not an object; it was not written by this "
                          f"package")
    for key in ("architecture", "config"):
        if key not in meta:
            raise ConfigError(f"{path} has no {key!r} key; it was not written by this package")
    if meta["architecture"] not in ARCHITECTURES:
        raise ConfigError(f"{path}: unknown architecture {meta['architecture']!r}; expected one of "
                          f"{sorted(ARCHITECTURES)}")
    _check_model_config(meta, path)
    return meta


def _check_model_config(meta: Dict, path: str) -> None:
    """The ``"config"`` of ``meta`` typed and bounded as the model constructor checks it (sizes: positive
    integers within :data:`~knowledge_distill_util.models._sizes.SIZE_LIMITS`), naming ``path``."""
    config = meta["config"]
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: 'config' must be an object of constructor arguments, got a JSON "
                          f"{type(config).__name__}; retrain the model or restore the file")
    check = check_bert_config if meta["architecture"] == "bert" else check_lstm_config
    try:
        check(config, source=path)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{error}; retrain the model or restore the file") from None


def load_trained(directory: str, what: str = "model", **config_overrides) -> Tuple[nn.Module, Dict]:
    """``(model, meta)`` from a directory written by :func:`save_trained`; :class:`ConfigError` otherwise."""
    meta = read_meta(directory, what)
    try:
        model = ARCHITECTURES[meta["architecture"]](**dict(meta["config"], **config_overrides))
    except (TypeError, ValueError) as error:  # e.g. the model's memory, or an override out of range
        raise ConfigError(f"{what} {directory}: {error}") from None
    try:
        load_model(model, os.path.join(directory, WEIGHTS))
    except LegacyPickleError:
        raise ConfigError(str(legacy_error(what, directory, directory))) from None
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(f"{what} checkpoint {directory} does not fit its {MODEL_CONFIG}: {error}") from error
    return model, meta
