"""The original toolkit's OFRecord parts as a run's data (``--train_data_dir`` / ``--eval_data_dir``).

Distilled-BiLSTM reads two views of the same rows: the teacher the BERT parts
(``--train_data_dir``, ``--teacher_seq_length`` tokens), the student its word-level parts
(``--train_data_dir_lstm``, ``--seq_length`` tokens). Every other recipe reads one view.
"""
from typing import Optional

from ..data import TaskData
from ..data.loading import load_ofrecord_task_data
from .config import ConfigError, TrainConfig

__all__ = ["load_ofrecord_data"]


def _first(*limits: int) -> int:
    """The smallest non-zero row limit (0: none)."""
    given = [limit for limit in limits if limit]
    return min(given) if given else 0


def load_ofrecord_data(cfg: TrainConfig, seq_length: Optional[int] = None, teacher_view: bool = False) -> TaskData:
    """The OFRecord train/dev data of ``cfg`` at ``seq_length`` (default ``cfg.seq_length``): the teacher's
    BERT parts with ``teacher_view``, else the student's ``*_lstm`` parts when given (the view is chosen by
    ``teacher_view`` alone, never by comparing lengths: they may be equal). Training parts are read only
    when the run trains. :class:`ConfigError` (one sentence) on bad data."""
    length = seq_length or cfg.seq_length
    student_view = not teacher_view
    train_dir = (cfg.train_data_dir_lstm if student_view and cfg.train_data_dir_lstm else cfg.train_data_dir)
    eval_dir = (cfg.eval_data_dir_lstm if student_view and cfg.eval_data_dir_lstm else cfg.eval_data_dir)
    try:
        return load_ofrecord_task_data(
            cfg.task_name, length, train_dir=train_dir if cfg.do_train else None, eval_dir=eval_dir,
            train_prefix=cfg.train_data_prefix, eval_prefix=cfg.eval_data_prefix,
            train_part_num=cfg.train_data_part_num, eval_part_num=cfg.eval_data_part_num,
            train_example_num=_first(cfg.train_example_num, cfg.max_train_examples),
            eval_example_num=_first(cfg.eval_example_num, cfg.max_eval_examples))
    except (ValueError, TypeError) as error:
        raise ConfigError(str(error)) from None
