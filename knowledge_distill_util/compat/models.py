"""The original toolkit's OneFlow snapshots in a run: teachers, students and evaluated models read from
them, and the trained model written as one: ``snapshot_best`` (the best epoch, :class:`BestSnapshot`) and
``snapshot_last_snapshot`` (the final model); BERT-of-Theseus's whole model (:func:`save_model_snapshot`).

A directory is taken as an original snapshot when it has no ``model_config.json`` (this package's
format) and either holds ``<variable>/out`` folders itself or a ``snapshot_best`` folder that does (so
a teacher's ``--model_save_dir`` can be passed as well as its ``snapshot_best``). Snapshots store no
head count: the ``*_num_attention_heads`` setting of the model being read gives it. See
:mod:`knowledge_distill_util.models.snapshot` for the variable names and shapes.
"""
from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING, Dict, Optional, Tuple

import oneflow.nn as nn

from ..models.snapshot import build_from_snapshot, list_snapshot_variables, load_snapshot, save_snapshot
from .._errors import ConfigError
from ..models.artifacts import MODEL_CONFIG
from .results import write_original_results

if TYPE_CHECKING:  # annotations only: importing the training package runs its __init__, whose recipes import
    from ..config.schema import TrainConfig  # this module (a circle when this module is imported first)

__all__ = ["ORIGINAL_OPTIMIZER", "original_training", "original_model_bytes", "write_results_files", "EpochResults",
           "epoch_end_hook",
           "BEST_SNAPSHOT", "LAST_SNAPSHOT", "ACC_TASKS", "MCC_TASKS", "snapshot_directory", "load_snapshot_model",
           "load_snapshot_weights", "save_model_snapshot", "write_snapshots", "load_successor_snapshot", "best_metric",
           "BestSnapshot"]

logger = logging.getLogger(__name__)
_SUCCESSOR = re.compile(r"bert-encoder-student-layer_(\d+)-")
BEST_SNAPSHOT = "snapshot_best"
#: The original's ``Snapshot.save("last_snapshot")`` folder name.
LAST_SNAPSHOT = "snapshot_last_snapshot"


#: The original ``util.CreateOptimizer``'s AdamW settings (``epsilon=1e-6``,
#: ``grad_clipping.by_global_norm(1.0)``), as :class:`~knowledge_distill_util.training.trainer.TrainerConfig` keys.
ORIGINAL_OPTIMIZER = {"adam_epsilon": 1e-6, "max_grad_norm": 1.0}


def original_training(cfg: TrainConfig) -> bool:
    """True for a run started by an original script name (they set ``results_format 'original'``; so does
    ``kdu-train --results_format original``): it trains as the original task scripts do, with the BERT
    student's ``fit_dense`` kept at equal widths, gradients clipped at global norm 1.0 and Adam epsilon 1e-6
    (the original's ``CreateOptimizer``). ``kdu-train``'s recipes otherwise keep their own settings."""
    return cfg.results_format == "original"


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
    dropout, ``attention_output``); ``meta`` as :func:`~knowledge_distill_util.models.artifacts.read_meta` returns it, without the task
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
    if directory is None:
        return False
    found = sorted({int(m.group(1)) for m in map(_SUCCESSOR.match, list_snapshot_variables(directory)) if m})
    if not found:
        return False
    if found != list(range(len(found))):
        wanted = ",".join(map(str, range(len(successor.encoder.layer))))
        raise ConfigError(f"snapshot {directory} holds successor layers {found} (bert-encoder-student-layer_<i>, "
                          f"named by the teacher's index as init_stu.py names them) but a successor reads layers "
                          f"0..n-1; write it with init_stu.py --layer_list={wanted}")
    try:
        load_snapshot(successor, directory, "theseus")
    except ValueError as error:
        raise ConfigError(f"successor layers of snapshot {directory} do not fit: {error}; pass --compress_ratio "
                          f"so that num_hidden_layers / compress_ratio is its successor depth") from None
    return True


def save_model_snapshot(model: nn.Module, directory: str, cfg: TrainConfig) -> str:
    """Write ``model`` as the original snapshot ``directory`` in its recipe's names (teacher ``bert-...``,
    student ``student-bert-...``, the LSTM ``student-lstm-...``); a
    :class:`~knowledge_distill_util.models.theseus.TheseusModel` is written whole, as the original's
    ``run_classifier.py`` saves it: the shared embeddings, pooler and classifier (``bert-...``), the successor's layers (``bert-encoder-student-layer_<i>``) and the frozen predecessor's
    (``bert-encoder-layer_<i>``), so that the original's second run (``--replace_prob=1.0`` on
    ``snapshot_last_snapshot``) and an evaluation run read it."""
    from ..models.theseus import TheseusModel

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
        from ..engine import distributed
        from ..engine.evaluate import compute_metrics, predict

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


# ------------------------------------------------------------------------------ the results files' figures
def _folder_bytes(directory: str, counted) -> int:
    """Bytes of the files under ``directory`` whose folder name passes ``counted`` (Adam slots never)."""
    total = 0
    for root, _, files in os.walk(directory):
        name = os.path.basename(root)
        if not name.endswith(("-m", "-v")) and counted(name):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def _theseus_counted(name: str) -> bool:
    """``run_classifier.py``'s own ``getdirsize`` filter: the ``bert`` variables (teacher layers aside)."""
    return ("teacher" not in name or "student" in name or "layer" not in name) and "bert" in name


def original_model_bytes(cfg: TrainConfig, source: str) -> Optional[int]:
    """The ``modelSize`` the original measures, in bytes: ``run_classifier.py`` the ``bert`` variables of the
    snapshot it loads (``--model_load_dir``); the task scripts every variable of the snapshot in
    ``--model_save_dir`` (here ``<model_save_dir>/snapshot_best`` after training, the evaluated snapshot
    otherwise), Adam slots aside. None when that model is not an original snapshot (this package then
    reports the size of the saved weights, as ``kdu-train``)."""
    if cfg.recipe == "theseus":
        directory = snapshot_directory(cfg.teacher_model if cfg.do_train else cfg.student_model or source)
        return None if directory is None else _folder_bytes(directory, _theseus_counted)
    directory = snapshot_directory(os.path.join(cfg.model_save_dir, BEST_SNAPSHOT) if cfg.do_train else source)
    return None if directory is None else _folder_bytes(directory, lambda name: True)


def write_results_files(results: Dict, cfg: TrainConfig, source: str, desc: str = "eval") -> str:
    """``results_<desc>.json`` (and ``_kdu.json``) in ``cfg.result_dir`` with the original's figures:
    :func:`original_model_bytes` as ``modelSize``, and ``reasoningTime`` in seconds for ``run_classifier.py``
    (the task scripts' examples per second otherwise). Returns the path."""
    return write_original_results(results, cfg.result_dir, source, desc, model_bytes=original_model_bytes(cfg, source),
                                  seconds=cfg.recipe == "theseus")


class EpochResults:
    """Epoch-end hook of ``run_classifier.py``'s training: after every epoch (and ``then``, the
    :class:`BestSnapshot` hook, when given) it evaluates ``evaluated`` on the training rows and on the dev
    rows, and rank 0 writes ``results_train.json`` and ``results_eval.json``, as the original's training
    loop does whether or not ``--do_eval`` is given. Its checkpointed state is ``then``'s."""

    def __init__(self, evaluated: nn.Module, train, dev, output_mode: str, cfg: TrainConfig, then=None):
        self.evaluated, self.train, self.dev, self.output_mode, self.cfg = evaluated, train, dev, output_mode, cfg
        self.then = then
        self.written = []

    def __call__(self, epoch: int, step: int) -> None:
        from ..engine import distributed
        from ..engine.evaluate import evaluate_model

        if self.then is not None:
            self.then(epoch, step)
        for desc, rows in (("train", self.train), ("eval", self.dev)):
            results = evaluate_model(self.evaluated, rows, self.output_mode, self.cfg.eval_batch_size)
            if distributed.is_writer():
                self.written.append((epoch, write_results_files(results, self.cfg, self.cfg.model_save_dir, desc)))
        logger.info("epoch %d (step %d): wrote results_train.json and results_eval.json in %s", epoch + 1, step,
                    self.cfg.result_dir)

    def state(self) -> Optional[Dict]:
        return None if self.then is None else self.then.state()

    def load_state(self, state: Optional[Dict]) -> None:
        if self.then is not None:
            self.then.load_state(state)


def epoch_end_hook(cfg: TrainConfig, evaluated: nn.Module, train, dev, output_mode: str, best=None):
    """The last stage's epoch-end hook: :class:`EpochResults` (around ``best``) for ``run_classifier.py``'s
    training (BERT-of-Theseus started by an original script), else ``best`` itself. Under the launcher with
    ``--use_graph`` no epoch is evaluated (the parameters are global tensors): the results files are then
    written after training, with ``--do_eval``."""
    from ..engine import distributed

    if not (cfg.recipe == "theseus" and original_training(cfg) and cfg.do_train):
        return best
    if distributed.is_distributed() and cfg.use_graph:
        logger.warning("run_classifier.py writes no results per epoch under the launcher with --use_graph (its "
                       "parameters are global tensors); pass --do_eval=True for the results after training")
        return best
    return EpochResults(evaluated, train, dev, output_mode, cfg, then=best)
