"""The original toolkit's OneFlow snapshots in a run: teachers, students and evaluated models read from
them, and the trained model written as one: ``snapshot_best`` (the best epoch, :class:`BestSnapshot`) and
``snapshot_last_snapshot`` (the final model); BERT-of-Theseus's whole model (:func:`save_model_snapshot`).

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
from .theseus import TheseusModel

__all__ = ["BEST_SNAPSHOT", "LAST_SNAPSHOT", "ACC_TASKS", "MCC_TASKS", "snapshot_directory", "load_snapshot_model",
           "load_snapshot_weights", "save_model_snapshot", "write_snapshots", "load_successor_snapshot", "best_metric",
           "BestSnapshot"]

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
    (``bert-encoder-student-layer_<i>``: written by ``init_stu.py``, or a Theseus run's whole model); False
    otherwise. The predecessor comes from the same snapshot's ``bert-encoder-layer_<i>`` as the teacher."""
    directory = snapshot_directory(path)
    if directory is None or _scope(directory, "theseus") != "theseus":
        return False
    try:
        load_snapshot(successor, directory, "theseus")
    except ValueError as error:
        raise ConfigError(f"successor layers of snapshot {directory} do not fit: {error}; pass --compress_ratio "
                          f"so that num_hidden_layers / compress_ratio is its successor depth") from None
    return True


def save_model_snapshot(model: nn.Module, directory: str, cfg: TrainConfig) -> str:
    """Write ``model`` as the original snapshot ``directory`` in its recipe's names (teacher ``bert-...``,
    student ``student-bert-...``, the LSTM ``student-lstm-...``); a :class:`~.theseus.TheseusModel` is written
    whole, as the original's ``run_classifier.py`` saves it: the shared embeddings, pooler and classifier
    (``bert-...``), the successor's layers (``bert-encoder-student-layer_<i>``) and the frozen predecessor's
    (``bert-encoder-layer_<i>``), so that the original's second run (``--replace_prob=1.0`` on
    ``snapshot_last_snapshot``) and an evaluation run read it."""
    if isinstance(model, TheseusModel):
        return save_snapshot(model.successor, directory, scope="theseus", predecessor=model.predecessor)
    scope = None if not hasattr(model, "encoder") else {"teacher": "teacher", "theseus": "theseus"}.get(cfg.recipe,
                                                                                                          "student")
    return save_snapshot(model, directory, scope=scope)


def write_snapshots(model: nn.Module, cfg: TrainConfig, best_written: bool = False) -> Dict[str, str]:
    """Write ``model`` (the final model) as ``<model_save_dir>/snapshot_best`` (``--save_snapshot``, unless
    ``best_written``: a :class:`BestSnapshot` wrote the best epoch there) and ``snapshot_last_snapshot``
    (``--save_last_snapshot``) in the original's layout (:func:`save_model_snapshot`); returns name -> path."""
    written = {}
    for flag, name in ((cfg.save_snapshot and not best_written, BEST_SNAPSHOT),
                       (cfg.save_last_snapshot, LAST_SNAPSHOT)):
        if flag:
            written[name] = save_model_snapshot(model, os.path.join(cfg.model_save_dir, name), cfg)
            logger.info("wrote the original snapshot %s", written[name])
    return written


#: The original task scripts' task lists (``task_name.lower()``): the dev metric that selects snapshot_best.
ACC_TASKS = ("mnli", "mrpc", "sst-2", "qqp", "qnli", "rte")
MCC_TASKS = ("cola",)


def best_metric(task_name: str, stage: str) -> Optional[str]:
    """The metric the original scripts select the best epoch by: ``"accuracy"`` for their ``acc_tasks``,
    ``"mcc"`` (``matthews_corrcoef``) for CoLA; None for the other tasks (STS-B, WNLI: the original saves no
    best epoch) and for TinyBERT's ``intermediate`` stage (the original saves no best without
    ``--pred_distill``).

    >>> best_metric("SST-2", "kd"), best_metric("CoLA", "teacher"), best_metric("STS-B", "kd")
    ('accuracy', 'mcc', None)
    """
    if stage == "intermediate":
        return None
    name = task_name.lower()
    return "accuracy" if name in ACC_TASKS else "mcc" if name in MCC_TASKS else None


class BestSnapshot:
    """Epoch-end hook of a run started from an original script (``--save_snapshot``): evaluates ``evaluated``
    on ``dev`` (sharded over the ranks, as the final evaluation) after every epoch and, when ``metric`` is
    strictly better than the best so far (which starts at 0.0, as the original's ``best_dev_acc``), rank 0
    writes ``written`` (the whole model: :func:`save_model_snapshot`) as ``<model_save_dir>/snapshot_best``,
    atomically. :meth:`state` / :meth:`load_state` carry the best value, epoch and step in the checkpoints,
    so a resumed run writes the snapshot the uninterrupted one writes. ``history`` lists
    ``(epoch, step, value)`` of every evaluation of this process."""

    def __init__(self, evaluated: nn.Module, written: nn.Module, dev, output_mode: str, metric: str, cfg: TrainConfig):
        self.evaluated, self.written, self.dev, self.output_mode = evaluated, written, dev, output_mode
        self.metric, self.cfg = metric, cfg
        self.best, self.best_epoch, self.best_step = 0.0, None, None
        self.history = []

    @property
    def written_best(self) -> bool:
        """True once some epoch improved on 0.0 (and ``snapshot_best`` holds it)."""
        return self.best_step is not None

    def __call__(self, epoch: int, step: int) -> None:
        from . import distributed
        from .evaluate import compute_metrics, predict

        logits = predict(self.evaluated, self.dev, self.cfg.eval_batch_size)[0]
        value = compute_metrics(logits, self.dev.labels, self.output_mode)[self.metric]
        self.history.append((epoch, step, value))
        improved = value > self.best
        logger.info("epoch %d (step %d): dev %s %.4f, best so far %.4f%s", epoch + 1, step, self.metric, value,
                    self.best, "; writing snapshot_best" if improved else "")
        if not improved:
            return
        self.best, self.best_epoch, self.best_step = float(value), epoch, step
        if distributed.is_writer():
            save_model_snapshot(self.written, os.path.join(self.cfg.model_save_dir, BEST_SNAPSHOT), self.cfg)

    def state(self) -> Dict:
        return {"metric": self.metric, "best": self.best, "epoch": self.best_epoch, "step": self.best_step}

    def load_state(self, state: Optional[Dict]) -> None:
        """Restore :meth:`state` (a checkpoint without it, or of another metric: start anew)."""
        if state and state.get("metric") == self.metric:
            self.best, self.best_epoch, self.best_step = float(state["best"]), state["epoch"], state["step"]
