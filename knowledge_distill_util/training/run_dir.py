"""A run's directory (``--model_save_dir``): what a new run refuses to train over, and what a ``--resume``
compares (``run_config.json``: the configuration and the training data's fingerprint). Used by
:func:`~.run.run` and the recipes that run themselves (:mod:`.general`, :mod:`.masked_lm`), before any
training step.
"""
import dataclasses
import hashlib
import json
import logging
import os
from typing import Dict

import numpy as np

from .._io import atomic_write_text
from ..models.artifacts import MODEL_CONFIG
from ..config.schema import ConfigError, TrainConfig
from .teacher_cache import check_cache_file

__all__ = ["RUN_CONFIG", "DATA_KEY", "RESUMABLE_CHANGES", "PATH_KEYS", "check_run_directory", "data_fingerprint",
           "check_resumed_data", "write_run_config"]

logger = logging.getLogger(__name__)
RUN_CONFIG = "run_config.json"
#: The ``run_config.json`` key holding the training data's fingerprint (:func:`data_fingerprint`), compared on
#: ``--resume`` by :func:`check_resumed_data` (not a configuration key).
DATA_KEY = "train_data"
#: Keys a resumed run may change: they do not alter the steps already taken (num_epochs and max_steps
#: extend or shorten the run; the schedule then follows the new total; model_save_dir is where the run is found,
#: wherever it was when it started).
RESUMABLE_CHANGES = frozenset({
    "num_epochs", "stage2_num_epochs", "max_steps", "resume", "overwrite", "log_level", "do_train", "do_eval",
    "eval_batch_size", "max_eval_examples", "checkpoint_every", "result_dir", "device", "teacher_logits",
    "vocab_file", "data_dir", "log_dir", "loss_print_every_n_iter", "progress_every", "model_save_dir"})
#: Keys naming files or directories: a resume compares where they point (``os.path.realpath``, a relative path
#: from the current directory), not how they are written (``out/teacher`` and ``/work/out/teacher`` are one).
PATH_KEYS = frozenset({"teacher_model", "student_model", "teacher_models", "corpus_dir", "train_data_dir",
                       "eval_data_dir"})


def _holds_a_run(directory: str) -> bool:
    return any(os.path.exists(os.path.join(directory, name)) for name in (RUN_CONFIG, MODEL_CONFIG, "checkpoints"))


def check_run_directory(cfg: TrainConfig) -> None:
    """Refuse to train over an existing run without ``--resume`` or ``--overwrite``, a ``--resume`` whose
    configuration differs from the run's in a key that alters it (:data:`RESUMABLE_CHANGES` aside), and a
    teacher-logits cache path holding a file that is not a cache (:func:`check_cache_file`)."""
    if not cfg.do_train:
        return
    check_cache_file(cfg)
    path = os.path.join(cfg.model_save_dir, RUN_CONFIG)
    if not cfg.resume:
        if _holds_a_run(cfg.model_save_dir) and not cfg.overwrite:
            raise ConfigError(f"--model_save_dir {cfg.model_save_dir} already holds a run; pass --resume to continue "
                              f"it, --overwrite to replace it, or another --model_save_dir")
        return
    if not os.path.isfile(path):
        return
    try:
        with open(path, encoding="utf-8") as stream:
            saved = json.load(stream)
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path} is unreadable ({error}); restore it, or start anew with --overwrite") from None
    current = dataclasses.asdict(cfg)
    changed = sorted(k for k in set(saved) | set(current) if k not in RESUMABLE_CHANGES and k != DATA_KEY
                     and _where(k, saved.get(k)) != _where(k, current.get(k)))
    if changed:
        listed = ", ".join(f"{k} {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise ConfigError(f"--resume would change the run in {cfg.model_save_dir} ({listed}); resume with its "
                          f"settings, or start a new run with --overwrite or another --model_save_dir")


def _where(key: str, value):
    """``value`` of ``key`` as compared on ``--resume``: a path of :data:`PATH_KEYS` (or a list of them) resolved,
    any other value as it is."""
    if key not in PATH_KEYS:
        return value
    if isinstance(value, list):
        return [os.path.realpath(item) if isinstance(item, str) else item for item in value]
    return os.path.realpath(value) if isinstance(value, str) else value


def data_fingerprint(data) -> Dict:
    """``{"rows": N, "sha1": ...}`` of the training rows a run uses: their count and a hash of their ids,
    mask, segments and labels (dtype and shape included), whatever file they were read from."""
    digest = hashlib.sha1()
    train = data.train
    for array in (train.input_ids, train.input_mask, train.segment_ids, train.labels):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return {"rows": len(train), "sha1": digest.hexdigest()[:16]}


def check_resumed_data(cfg: TrainConfig, data) -> None:
    """On ``--resume``: the training rows must be those the run started with (``run_config.json``'s
    :data:`DATA_KEY`); :class:`ConfigError` naming what changed otherwise. A run written before the
    fingerprint was stored resumes with a warning."""
    path = os.path.join(cfg.model_save_dir, RUN_CONFIG)
    if not (cfg.do_train and cfg.resume and os.path.isfile(path)):
        return
    try:
        with open(path, encoding="utf-8") as stream:
            stored = json.load(stream).get(DATA_KEY)
    except (OSError, ValueError, AttributeError) as error:
        raise ConfigError(f"{path} is unreadable ({error}); restore it, or start anew with --overwrite") from None
    if stored is None:
        logger.warning("%s predates the training data's fingerprint: resuming without checking that the data is "
                       "the run's", path)
        return
    current = data_fingerprint(data)
    if stored != current:
        what = (f"{stored.get('rows')} training rows -> {current['rows']}" if stored.get("rows") != current["rows"]
                else f"the training rows' fingerprint {stored.get('sha1')} -> {current['sha1']}")
        raise ConfigError(f"--resume would continue the run in {cfg.model_save_dir} on other data ({what}); restore "
                          f"the data the run started with, or start again with --overwrite")


def write_run_config(cfg: TrainConfig, data) -> None:
    """``<model_save_dir>/run_config.json``: what a resume compares its configuration with, and the training
    data's fingerprint under :data:`DATA_KEY`."""
    atomic_write_text(os.path.join(cfg.model_save_dir, RUN_CONFIG),
                      json.dumps(dict(dataclasses.asdict(cfg), **{DATA_KEY: data_fingerprint(data)}), indent=2,
                                 sort_keys=True))
