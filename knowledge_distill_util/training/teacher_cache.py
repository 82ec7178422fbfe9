"""The teacher's logits on the training rows, computed once and cached (the recipes whose objective reads only
the teacher's logits: :attr:`~.objectives.Objective.can_cache_teacher_logits`).

Where a cache lives and when it is used:

- a teacher run writes :data:`LOGITS_FILE` into its own ``model_save_dir`` (what its students read);
- a student reads the teacher's copy only when it is valid, and never writes into the teacher's (input)
  folder: whatever it computes goes to its own ``<model_save_dir>/``:data:`STUDENT_LOGITS_FILE`, or to
  ``--teacher_logits``;
- a cache is used only with the same data fingerprint, the same teacher (its folder and the time its
  ``model_config.json`` was written), shape ``[rows, label_num]``, float32 and finite values; a damaged one is
  rebuilt with one warning; a file that is not a cache is never overwritten (:func:`check_cache_file`);
- the teacher always sees its own view of the data (the BERT parts of the original Distilled-BiLSTM data,
  its own sequence length), whatever the student's.
"""
import logging
import os
from typing import Dict, Optional

import numpy as np

from .._io import atomic_write_file
from ..engine import distributed
from ..models.artifacts import MODEL_CONFIG
from ..config.schema import ConfigError, TrainConfig
from ..engine.evaluate import predict
from .plan import load_data
from .recipes import RECIPES

__all__ = ["LOGITS_FILE", "STUDENT_LOGITS_FILE", "CACHE_KEYS", "cache_path", "teacher_logits", "check_cache_file",
           "combined_teacher_logits"]

logger = logging.getLogger(__name__)
#: A teacher run's logits on its training rows, in its own model_save_dir (what its students read).
LOGITS_FILE = "train_logits.npz"
#: A student run's cache of its teacher's logits, in the student's own model_save_dir.
STUDENT_LOGITS_FILE = "teacher_logits.npz"
#: The arrays every cache holds (``teacher``, the teacher's identity, since this version).
CACHE_KEYS = ("logits", "fingerprint")


def _teacher_view(cfg: TrainConfig, meta: Dict, data):
    """The training rows as the teacher reads them: its own sequence length (``meta["seq_length"]``) and, for
    the original's Distilled-BiLSTM data, the BERT parts (``--train_data_dir``), never the student's
    ``*_lstm`` parts, whatever the two lengths. Row-aligned with the student's ``data``."""
    two_views = bool(cfg.train_data_dir_lstm or cfg.eval_data_dir_lstm) and \
        bool(cfg.train_data_dir or cfg.eval_data_dir)
    if meta["seq_length"] == cfg.seq_length and not two_views:
        return data
    view = load_data(cfg, seq_length=meta["seq_length"], vocab_file=data.vocab_file, teacher_view=True)
    if len(view.train) != len(data.train):
        raise ConfigError(f"the teacher's training data (--train_data_dir {cfg.train_data_dir}) holds "
                          f"{len(view.train)} rows but the student's (--train_data_dir_lstm {cfg.train_data_dir_lstm}) "
                          f"{len(data.train)}; pass the two conversions of the same rows")
    return view


def _teacher_identity(directory: str) -> str:
    """Which saved teacher a cache was computed with: its resolved directory and when its ``model_config.json``
    (an original snapshot: its newest file) was written; a retrained or other teacher does not match."""
    real = os.path.realpath(directory)
    config = os.path.join(real, MODEL_CONFIG)
    if os.path.isfile(config):
        return f"{real}@{os.stat(config).st_mtime_ns}"
    stamps = [os.stat(os.path.join(folder, name)).st_mtime_ns for folder, _, files in os.walk(real)
              for name in files if name not in (LOGITS_FILE, STUDENT_LOGITS_FILE)]
    return f"{real}@{max(stamps, default=0)}"


def cache_path(cfg: TrainConfig, own_model: bool) -> str:
    """Where this run writes the teacher's training-set logits: ``--teacher_logits`` when given, else in its own
    ``--model_save_dir``: :data:`LOGITS_FILE` for a teacher run (its own logits, for the students to come),
    :data:`STUDENT_LOGITS_FILE` for a student run (never the teacher's folder, an input)."""
    return cfg.teacher_logits or os.path.join(cfg.model_save_dir, LOGITS_FILE if own_model else STUDENT_LOGITS_FILE)


def _load_cache(path: str) -> Optional[Dict[str, np.ndarray]]:
    """The arrays of the cache ``path``: None when there is no file; ``{}`` when it is this package's cache but
    damaged (to rebuild); :class:`ConfigError` when the file is something else (never overwritten)."""
    if not os.path.lexists(path):
        return None
    refusal = ConfigError(f"{path} exists but is not a teacher-logits cache of this package (an .npz with "
                          f"{' and '.join(CACHE_KEYS)}); it is left untouched: move it away, or pass another "
                          f"--teacher_logits")
    try:
        stored = np.load(path, allow_pickle=False)
    except Exception:  # noqa: BLE001 - not an npz at all (text, truncated zip, a directory, ...)
        raise refusal from None
    if not isinstance(stored, np.lib.npyio.NpzFile):
        raise refusal
    with stored:
        if not set(CACHE_KEYS) <= set(stored.files):
            raise refusal
        try:
            return {name: stored[name] for name in stored.files}
        except Exception:  # noqa: BLE001 - our keys, unreadable arrays: rebuilt
            return {}


def _cache_problem(stored: Dict[str, np.ndarray], fingerprint: str, teacher: str, rows: int,
                   classes: Optional[int]) -> str:
    """Why ``stored`` cannot be used ("" when it can); "other data" and "another teacher" are ordinary misses."""
    if not stored:
        return "unreadable arrays"
    if str(stored["fingerprint"]) != fingerprint:
        return "other data"
    if "teacher" not in stored or str(stored["teacher"]) != teacher:
        return "another teacher"
    logits = stored["logits"]
    if logits.dtype != np.float32 or logits.ndim != 2 or logits.shape[0] != rows or \
            (classes and logits.shape[1] != classes):
        return f"logits of shape {tuple(logits.shape)} {logits.dtype} (expected [{rows}, {classes or 'C'}] float32)"
    if not np.isfinite(logits).all():
        return "non-finite logits"
    return ""


def _cached(path: str, fingerprint: str, teacher: str, rows: int, classes: Optional[int],
            quiet_misses: bool) -> Optional[np.ndarray]:
    """The logits of the cache ``path`` when valid, else None (a damaged cache logged once as rebuilt)."""
    stored = _load_cache(path)
    if stored is None:
        return None
    problem = _cache_problem(stored, fingerprint, teacher, rows, classes)
    if not problem:
        logger.info("teacher logits read from %s", path)
        return stored["logits"]
    if problem in ("other data", "another teacher"):
        (logger.debug if quiet_misses else logger.info)("cached teacher logits %s are of %s; not used", path, problem)
    else:
        logger.warning("cached teacher logits %s hold %s; computing them again", path, problem)
    return None


def teacher_logits(cfg: TrainConfig, teacher, meta: Dict, data, teacher_dir: str) -> np.ndarray:
    """The teacher's logits ``[N, label_num]`` on the training rows (row-aligned with ``data.train``), read from
    a valid cache or computed and cached. The teacher reads its own view of the rows (:func:`_teacher_view`).

    ``teacher_dir`` is the saved teacher: this run's own ``--model_save_dir`` (a teacher run) or the input
    ``--teacher_model``, whose ``train_logits.npz`` (written by the teacher's own run) is only ever read. A
    cache is valid when it has this data's fingerprint, this teacher's identity, the right shape and dtype and
    finite values; what is computed goes to :func:`cache_path`."""
    view = _teacher_view(cfg, meta, data)
    own = os.path.realpath(teacher_dir) == os.path.realpath(cfg.model_save_dir)
    identity = _teacher_identity(teacher_dir)
    path = cache_path(cfg, own)
    if not own:  # a student reads a valid cache; a teacher run computes the logits of the model it just trained
        key = (view.train_fingerprint, identity, len(view.train), getattr(teacher, "config", {}).get("label_num"))
        found = None
        if not cfg.teacher_logits:  # the teacher's own cache, read-only
            try:
                found = _cached(os.path.join(teacher_dir, LOGITS_FILE), *key, quiet_misses=True)
            except ConfigError as error:
                logger.warning("the teacher's cache is not used: %s", error)
        if found is None:
            found = _cached(path, *key, quiet_misses=False)  # refuses a file that is not a cache
        if found is not None:
            return found
    logits = predict(teacher, view.train, cfg.eval_batch_size)[0].astype(np.float32)  # sharded over the ranks
    if not distributed.is_writer():
        return logits
    try:
        _load_cache(path)  # checked before any work; a foreign file put there since is still never overwritten
        atomic_write_file(path, lambda stream: np.savez(stream, logits=logits, teacher=np.array(identity),
                                                         fingerprint=np.array(view.train_fingerprint)))
        logger.info("teacher logits cached in %s", path)
    except (OSError, ConfigError) as error:
        logger.warning("the teacher logits are not cached in %s (%s); using them uncached", path, error)
    return logits


def combined_teacher_logits(cfg: TrainConfig, teachers, data) -> np.ndarray:
    """``multi_teacher_kd``: ``sum_i w_i t_i / sum_i w_i`` of the teachers' logits on the training rows
    (``teachers``: ``(directory, model, meta)`` each; ``w``: ``--teacher_weights``, equal when None), cached as
    one array in :func:`cache_path` under the identity of every teacher and the weights. Each teacher's own
    ``train_logits.npz`` is read when valid; nothing is written into a teacher's folder."""
    weights = [float(w) for w in (cfg.teacher_weights or [1.0] * len(teachers))]
    identity = " | ".join(_teacher_identity(directory) for directory, _, _ in teachers) + f" | weights {weights}"
    path = cache_path(cfg, False)
    classes = teachers[0][1].config.get("label_num")
    found = _cached(path, data.train_fingerprint, identity, len(data.train), classes, quiet_misses=False)
    if found is not None:
        return found
    total = None
    for (directory, teacher, meta), weight in zip(teachers, weights):
        view = _teacher_view(cfg, meta, data)
        logits = None
        try:
            logits = _cached(os.path.join(directory, LOGITS_FILE), view.train_fingerprint,
                             _teacher_identity(directory), len(view.train), classes, quiet_misses=True)
        except ConfigError as error:
            logger.warning("the teacher's cache is not used: %s", error)
        if logits is None:
            logits = predict(teacher, view.train, cfg.eval_batch_size)[0].astype(np.float32)
        total = logits * (weight / sum(weights)) if total is None else total + logits * (weight / sum(weights))
    combined = total.astype(np.float32)
    if distributed.is_writer():
        try:
            _load_cache(path)
            atomic_write_file(path, lambda stream: np.savez(stream, logits=combined, teacher=np.array(identity),
                                                             fingerprint=np.array(data.train_fingerprint)))
            logger.info("the %d teachers' combined logits cached in %s", len(teachers), path)
        except (OSError, ConfigError) as error:
            logger.warning("the combined teacher logits are not cached in %s (%s); using them uncached", path, error)
    return combined


def check_cache_file(cfg: TrainConfig) -> None:
    """Before any work: the cache file this run may write, when it exists, must be this package's cache
    (:class:`ConfigError` naming it otherwise; it is never overwritten)."""
    if cfg.recipe not in RECIPES:
        return  # prepare names the unknown recipe
    own = RECIPES.get(cfg.recipe).trains_teacher
    _load_cache(cache_path(cfg, own))
