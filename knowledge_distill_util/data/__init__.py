"""Data for the compression scripts: GLUE-format TSV tasks, tokenisation into numpy arrays, and the
built-in default dataset.

- :mod:`.glue`: :class:`TaskSpec` per task (``GLUE_TASKS``), :func:`read_examples` (strict TSV reader).
- :mod:`.features`: :func:`load_tokenizer`, :func:`convert_examples` -> :class:`Features`,
  :func:`load_glue_features` (read + convert).
- :mod:`.loading`: :func:`load_task_data` (train + dev of a run, explicit arguments).
- :mod:`.default_data`: :func:`prepare_default_data` (Debian fortunes topics, or a generated task).

Features are numpy arrays; wrap them with ``oneflow.tensor(...)``.
"""
from .default_data import FORTUNES_DIR, fortunes_available, prepare_default_data
from .features import (
    Features,
    convert_examples,
    default_vocab_file,
    load_glue_features,
    load_tokenizer,
    truncate_pair_lengths,
)
from .glue import GLUE_TASKS, Example, TaskSpec, get_task, read_examples, task_file, write_examples
from .loading import TaskData, cap_rows, load_task_data
from .ofrecord import (
    EVAL_PREFIX,
    TRAIN_PREFIX,
    glue_to_ofrecord,
    read_ofrecord_features,
    scan_ofrecord_parts,
    write_ofrecord_parts,
)

__all__ = [
    "EVAL_PREFIX",
    "TRAIN_PREFIX",
    "glue_to_ofrecord",
    "read_ofrecord_features",
    "scan_ofrecord_parts",
    "write_ofrecord_parts",
    "GLUE_TASKS",
    "TaskSpec",
    "Example",
    "get_task",
    "task_file",
    "read_examples",
    "write_examples",
    "Features",
    "load_tokenizer",
    "default_vocab_file",
    "truncate_pair_lengths",
    "convert_examples",
    "load_glue_features",
    "FORTUNES_DIR",
    "fortunes_available",
    "prepare_default_data",
    "TaskData",
    "cap_rows",
    "load_task_data",
]
