"""The train and dev splits of a run, read, validated and tokenised before any training step.

:func:`load_task_data` takes explicit arguments (no configuration object) and returns a
:class:`TaskData`: the task's :class:`~.glue.TaskSpec`, the tokenizer, the (optionally capped) train and
dev :class:`~.features.Features`, and a fingerprint of the training ids (what cached teacher logits are
checked against).
"""
import hashlib
import os
from dataclasses import dataclass
from typing import Optional

from .features import Features, default_vocab_file, load_glue_features, load_tokenizer
from .glue import TaskSpec, get_task

__all__ = ["TaskData", "cap_rows", "load_task_data"]


@dataclass
class TaskData:
    """Task, vocabulary file, tokenizer and the train/dev features of a run."""

    spec: TaskSpec
    vocab_file: str
    tokenizer: object
    train: Features
    dev: Features
    train_fingerprint: str


def cap_rows(features: Features, limit: int) -> Features:
    """The first ``limit`` rows of ``features`` (all of them when ``limit`` is 0 or larger than the set)."""
    if not limit or limit <= 0 or len(features) <= limit:
        return features
    return Features(input_ids=features.input_ids[:limit], input_mask=features.input_mask[:limit],
                    segment_ids=features.segment_ids[:limit], labels=features.labels[:limit])


def load_task_data(data_dir: Optional[str], task_name: Optional[str], seq_length: int,
                   vocab_file: Optional[str] = None, max_train_examples: int = 0,
                   max_eval_examples: int = 0) -> TaskData:
    """Read and tokenise ``train`` and ``dev`` of ``data_dir`` (every row validated first).

    ``vocab_file`` defaults to the all-MiniLM-L6-v2 vocabulary. Raises ``ValueError`` naming the
    argument and the fix for a missing task name or directory.
    """
    if not task_name:
        raise ValueError("no --task_name given; name a GLUE task (e.g. sst-2) or the default task written by "
                         "kdu-compress (see its data/data_info.json)")
    if not data_dir:
        raise ValueError("no --data_dir given; pass a GLUE-format TSV directory")
    if not os.path.isdir(data_dir):
        raise ValueError(f"data directory {data_dir!r} does not exist; pass --data_dir with a GLUE-format TSV "
                         f"directory")
    try:
        spec = get_task(task_name)
    except KeyError as error:
        raise ValueError(str(error.args[0] if error.args else error)) from None
    vocab_file = vocab_file or default_vocab_file()
    tokenizer = load_tokenizer(vocab_file)
    train = cap_rows(load_glue_features(data_dir, spec, "train", tokenizer, seq_length), max_train_examples)
    dev = cap_rows(load_glue_features(data_dir, spec, "dev", tokenizer, seq_length), max_eval_examples)
    digest = hashlib.sha1(train.input_ids.tobytes()).hexdigest()[:16]
    return TaskData(spec, vocab_file, tokenizer, train, dev, digest)
