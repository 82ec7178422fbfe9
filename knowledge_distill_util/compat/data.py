"""The original toolkit's OFRecord parts as a run's data (``--train_data_dir`` / ``--eval_data_dir``).

Distilled-BiLSTM reads two views of the same rows: the teacher the BERT parts
(``--train_data_dir``, ``--teacher_seq_length`` tokens), the student its word-level parts
(``--train_data_dir_lstm``, ``--seq_length`` tokens). Every other recipe reads one view.

``aug_train`` (the original's ``--aug_train=True``): the training parts are read from the folder whose name is
the training folder's with ``train`` replaced by ``train_aug`` (the original's ``train_data_dir.replace('train',
'train_aug')``, applied to the folder's own name): ``glue_ofrecord/SST-2/train`` -> ``glue_ofrecord/SST-2/train_aug``,
where ``scripts/glue_to_ofrecord.py --aug_train True`` writes them.
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Optional

from .._errors import ConfigError
from ..data import TaskData
from ..data.loading import load_ofrecord_task_data

if TYPE_CHECKING:  # annotations only: importing the training package runs its __init__, whose recipes import
    from ..config.schema import TrainConfig  # this module (a circle when this module is imported first)

__all__ = ["load_ofrecord_data", "augmented_parts_dir"]

logger = logging.getLogger(__name__)


def _first(*limits: int) -> int:
    """The smallest non-zero row limit (0: none)."""
    given = [limit for limit in limits if limit]
    return min(given) if given else 0


def augmented_parts_dir(train_dir: str) -> str:
    """The folder of the augmented training parts beside ``train_dir`` (module doc); :class:`ConfigError` when the
    folder's name holds no ``train`` or the folder does not exist, naming the commands that make it."""
    parent, name = os.path.split(os.path.normpath(train_dir))
    if "train" not in name:
        raise ConfigError(f"--aug_train reads the augmented parts from --train_data_dir's folder name with 'train' "
                          f"replaced by 'train_aug' (as the original), but {name!r} holds no 'train'; pass the "
                          f"<glue_ofrecord>/<task>/train folder")
    augmented = os.path.join(parent, name.replace("train", "train_aug"))
    if not os.path.isdir(augmented):
        raise ConfigError(f"--aug_train: {augmented} does not exist; make it with python scripts/data_augmentation.py "
                          f"--glue_dir <GLUE dir> --task_name <task>, then python scripts/glue_to_ofrecord.py --data_dir "
                          f"<GLUE dir>/<task> --output_dir {parent} --aug_train True")
    return augmented


def load_ofrecord_data(cfg: TrainConfig, seq_length: Optional[int] = None, teacher_view: bool = False) -> TaskData:
    """The OFRecord train/dev data of ``cfg`` at ``seq_length`` (default ``cfg.seq_length``): the teacher's
    BERT parts with ``teacher_view``, else the student's ``*_lstm`` parts when given (the view is chosen by
    ``teacher_view`` alone, never by comparing lengths: they may be equal). Training parts are read only
    when the run trains. :class:`ConfigError` (one sentence) on bad data."""
    length = seq_length or cfg.seq_length
    student_view = not teacher_view
    train_dir = (cfg.train_data_dir_lstm if student_view and cfg.train_data_dir_lstm else cfg.train_data_dir)
    eval_dir = (cfg.eval_data_dir_lstm if student_view and cfg.eval_data_dir_lstm else cfg.eval_data_dir)
    if cfg.aug_train and cfg.do_train and train_dir:
        train_dir = augmented_parts_dir(train_dir)
        logger.info("--aug_train: training on the parts in %s (TinyBERT's augmented set)", train_dir)
    try:
        return load_ofrecord_task_data(
            cfg.task_name, length, train_dir=train_dir if cfg.do_train else None, eval_dir=eval_dir,
            train_prefix=cfg.train_data_prefix, eval_prefix=cfg.eval_data_prefix,
            train_part_num=cfg.train_data_part_num, eval_part_num=cfg.eval_data_part_num,
            train_example_num=_first(cfg.train_example_num, cfg.max_train_examples),
            eval_example_num=_first(cfg.eval_example_num, cfg.max_eval_examples))
    except (ValueError, TypeError) as error:
        raise ConfigError(str(error)) from None
