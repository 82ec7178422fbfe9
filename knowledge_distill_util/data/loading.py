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

__all__ = ["TaskData", "cap_rows", "load_task_data", "load_ofrecord_task_data"]


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


def task_source(data_dir: Optional[str], task_name: Optional[str]) -> TaskSpec:
    """The task ``task_name`` of the TSV directory ``data_dir``, both given and the directory present (nothing is
    read); ``ValueError`` naming the flag and the fix otherwise."""
    if not task_name:
        raise ValueError("no --task_name given; name a GLUE task (e.g. sst-2) or the default task written by "
                         "kdu-compress (see its data/data_info.json)")
    if not data_dir:
        raise ValueError("no --data_dir given; pass a GLUE-format TSV directory")
    if not os.path.isdir(data_dir):
        raise ValueError(f"data directory {data_dir!r} does not exist; pass --data_dir with a GLUE-format TSV "
                         f"directory")
    try:
        return get_task(task_name)
    except KeyError as error:
        raise ValueError(str(error.args[0] if error.args else error)) from None


def load_task_data(data_dir: Optional[str], task_name: Optional[str], seq_length: int,
                   vocab_file: Optional[str] = None, max_train_examples: int = 0,
                   max_eval_examples: int = 0, train_split: str = "train") -> TaskData:
    """Read and tokenise ``train`` (or ``train_split``, e.g. ``"train_aug"``) and ``dev`` of ``data_dir`` (every row
    validated first).

    ``vocab_file`` defaults to the all-MiniLM-L6-v2 vocabulary. Raises ``ValueError`` naming the
    argument and the fix for a missing task name or directory (:func:`task_source`).
    """
    spec = task_source(data_dir, task_name)
    vocab_file = vocab_file or default_vocab_file()
    tokenizer = load_tokenizer(vocab_file)
    train = cap_rows(load_glue_features(data_dir, spec, train_split, tokenizer, seq_length), max_train_examples)
    dev = cap_rows(load_glue_features(data_dir, spec, "dev", tokenizer, seq_length), max_eval_examples)
    digest = hashlib.sha1(train.input_ids.tobytes()).hexdigest()[:16]
    return TaskData(spec, vocab_file, tokenizer, train, dev, digest)


def _no_rows(like: Features) -> Features:
    return Features(input_ids=like.input_ids[:0], input_mask=like.input_mask[:0],
                    segment_ids=like.segment_ids[:0], labels=like.labels[:0])


def load_ofrecord_task_data(task_name: Optional[str], seq_length: int, train_dir: Optional[str] = None,
                            eval_dir: Optional[str] = None, train_prefix: str = "train.of_record-",
                            eval_prefix: str = "eval.of_record-", train_part_num: int = 1, eval_part_num: int = 1,
                            train_example_num: int = 0, eval_example_num: int = 0) -> TaskData:
    """The original toolkit's OFRecord parts as a :class:`TaskData` (already tokenised: no tokenizer).

    Arguments are the original's ``--task_name``, ``--seq_length``, ``--{train,eval}_data_dir``,
    ``--*_data_prefix``, ``--*_data_part_num`` and ``--*_example_num`` (0: every record). A split without
    a directory has no rows (an eval-only run needs no training parts); at least one is required. Read
    with :func:`~.ofrecord.read_ofrecord_features`, which raises ``ValueError`` naming the file and the fix
    (also for a label outside the task's classes).
    """
    from .ofrecord import read_ofrecord_features

    if not task_name:
        raise ValueError("no --task_name given; name the GLUE task of the OFRecord parts (e.g. SST-2)")
    if not train_dir and not eval_dir:
        raise ValueError("no --train_data_dir or --eval_data_dir given; pass the OFRecord directories "
                         "(<glue_ofrecord>/<task>/train and .../eval)")
    try:
        spec = get_task(task_name)
    except KeyError as error:
        raise ValueError(str(error.args[0] if error.args else error)) from None

    classes = None if spec.labels is None else spec.num_labels  # regression scores are not class ids

    def read(directory, prefix, part_num, example_num):
        return read_ofrecord_features(directory, prefix, part_num, example_num=example_num or None,
                                      seq_length=seq_length, num_labels=classes)

    train = read(train_dir, train_prefix, train_part_num, train_example_num) if train_dir else None
    dev = read(eval_dir, eval_prefix, eval_part_num, eval_example_num) if eval_dir else None
    train = train if train is not None else _no_rows(dev)
    dev = dev if dev is not None else _no_rows(train)
    digest = hashlib.sha1(train.input_ids.tobytes()).hexdigest()[:16]
    return TaskData(spec, None, None, train, dev, digest)
