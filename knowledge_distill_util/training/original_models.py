"""The original toolkit's OneFlow snapshots in a run: teachers, students and evaluated models read from
them, and the trained model written as one (``snapshot_best``, ``snapshot_last_snapshot``).

A directory is taken as an original snapshot when it has no ``model_config.json`` (this package's
format) and either holds ``<variable>/out`` folders itself or a ``snapshot_best`` folder that does (so
a teacher's ``--model_save_dir`` can be passed as well as its ``snapshot_best``). Snapshots store no
head count: the ``*_num_attention_heads`` setting of the model being read gives it. See
:mod:`knowledge_distill_util.models.snapshot` for the variable names and shapes.
"""
import logging
import os
from typing import Dict, Optional, Tuple

import oneflow.nn as nn

from ..models.snapshot import build_from_snapshot, list_snapshot_variables, load_snapshot, save_snapshot
from .artifacts import MODEL_CONFIG
from .config import ConfigError, TrainConfig

__all__ = ["BEST_SNAPSHOT", "LAST_SNAPSHOT", "snapshot_directory", "load_snapshot_model", "load_snapshot_weights",
           "write_snapshots", "load_successor_snapshot"]

logger = logging.getLogger(__name__)
BEST_SNAPSHOT = "snapshot_best"
#: The original's ``Snapshot.save("last_snapshot")`` folder name.
LAST_SNAPSHOT = "snapshot_last_snapshot"


def _is_snapshot(path: str) -> bool:
    try:
        return bool(list_snapshot_variables(path))
    except ValueError:
        return False


def snapshot_directory(path: Optional[str]) -> Optional[str]:
    """The original snapshot directory ``path`` designates (itself or its ``snapshot_best``), else None."""
    if not path or not os.path.isdir(path) or os.path.isfile(os.path.join(path, MODEL_CONFIG)):
        return None
    if _is_snapshot(path):
        return path
    best = os.path.join(path, BEST_SNAPSHOT)
    return best if _is_snapshot(best) else None


def _scope(directory: str, prefer: str) -> str:
    """``prefer`` ("teacher"/"student"/"theseus") when the snapshot holds that BERT, else "auto"."""
    names = list_snapshot_variables(directory)
    marker = {"teacher": "bert-embeddings-LayerNorm-gamma", "student": "student-bert-embeddings-LayerNorm-gamma",
              "theseus": "bert-encoder-student-layer_0-output-LayerNorm-gamma"}[prefer]
    return prefer if marker in names else "auto"


def load_snapshot_model(path: str, what: str, num_attention_heads: Optional[int], prefer: str = "teacher",
                        **overrides) -> Tuple[nn.Module, Dict]:
    """``(model, meta)`` built from the original snapshot ``path`` (``overrides``: e.g. ``label_num``,
    dropout, ``attention_output``); ``meta`` as :func:`~.artifacts.read_meta` returns it, without the task
    keys (a snapshot does not store them). :class:`ConfigError` naming the problem otherwise."""
    directory = snapshot_directory(path)
    if directory is None:
        raise ConfigError(f"{what} {path!r} is neither a directory written by this package nor an original "
                          f"OneFlow snapshot (<variable>/out folders); check the path")
    try:
        model, report = build_from_snapshot(directory, _scope(directory, prefer), num_attention_heads=num_attention_heads,
                                            student=prefer == "student", **overrides)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{what} snapshot {directory} cannot be read: {error}") from None
    architecture = "lstm" if report.scope == "student" and not hasattr(model, "encoder") else "bert"
    meta = {"architecture": architecture, "config": dict(model.config), "snapshot": directory,
            "origin": f"original snapshot {directory}", "task_name": None, "labels": None, "vocab_file": None}
    logger.info("%s: read the original snapshot %s (%d variables, scope %s)", what, directory,
                len(report.loaded), report.scope)
    return model, meta


def load_snapshot_weights(model: nn.Module, path: str, what: str = "student") -> bool:
    """Copy the original snapshot ``path`` into ``model`` when it is one; False when it is not a snapshot."""
    directory = snapshot_directory(path)
    if directory is None:
        return False
    prefer = "student" if getattr(model, "fit_dense", None) is not None else "teacher"
    scope = _scope(directory, "student") if _scope(directory, "student") != "auto" else _scope(directory, prefer)
    try:
        load_snapshot(model, directory, scope if hasattr(model, "encoder") else "auto")
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{what} snapshot {directory} does not fit the configured {what}: {error}; pass the "
                          f"sizes it was trained with") from None
    return True


def load_successor_snapshot(successor: nn.Module, path: Optional[str]) -> bool:
    """Load BERT-of-Theseus's successor from the original snapshot ``path`` when it holds successor layers
    (``bert-encoder-student-layer_<i>``, written by ``init_stu.py``); False otherwise."""
    directory = snapshot_directory(path)
    if directory is None or _scope(directory, "theseus") != "theseus":
        return False
    try:
        load_snapshot(successor, directory, "theseus")
    except ValueError as error:
        raise ConfigError(f"successor layers of snapshot {directory} do not fit: {error}; pass --compress_ratio "
                          f"so that num_hidden_layers / compress_ratio is its successor depth") from None
    return True


def write_snapshots(model: nn.Module, cfg: TrainConfig) -> Dict[str, str]:
    """Write ``model`` as ``<model_save_dir>/snapshot_best`` (``--save_snapshot``) and
    ``snapshot_last_snapshot`` (``--save_last_snapshot``) in the original's layout; returns name -> path.
    Both hold the final model: this package does not keep a best-epoch copy."""
    written = {}
    scope = None if not hasattr(model, "encoder") else {"teacher": "teacher", "theseus": "theseus"}.get(cfg.recipe,
                                                                                                          "student")
    for flag, name in ((cfg.save_snapshot, BEST_SNAPSHOT), (cfg.save_last_snapshot, LAST_SNAPSHOT)):
        if flag:
            written[name] = save_snapshot(model, os.path.join(cfg.model_save_dir, name), scope=scope)
            logger.info("wrote the original snapshot %s", written[name])
    return written
