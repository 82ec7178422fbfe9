"""One whole TinyBERT data augmentation of a task directory: the options checked, the model, vocabulary and
candidate sources loaded, ``train_aug.tsv`` written (:func:`~.augmentation.augment_task`). Shared by
``scripts/data_augmentation.py`` and the ``augment`` step of ``kdu-compress`` (:mod:`~..training.steps`).

Without a GloVe file or a masked-LM head the candidates come from the nearest neighbours in the model's
word-piece embedding table (the documented substitute, one log line says so).
"""
import logging
import os
from dataclasses import dataclass
from typing import Dict, Optional

from . import augmentation as aug
from .features import default_vocab_file, load_tokenizer
from .glue import get_task

__all__ = ["AugmentOptions", "check_options", "augment_directory"]

logger = logging.getLogger(__name__)


@dataclass
class AugmentOptions:
    """The options of one augmentation (the flags of ``scripts/data_augmentation.py``, same defaults)."""

    model_load_dir: Optional[str] = None
    vocab_file: Optional[str] = None
    do_lower_case: bool = True
    glove_embs: Optional[str] = None
    N: Optional[int] = None
    M: int = aug.DEFAULT_M
    p: float = aug.DEFAULT_P
    seq_length: int = 512
    num_attention_heads: Optional[int] = None
    seed: int = 0
    batch_size: int = 64
    glove_vocab_size: int = aug.GLOVE_VOCAB_SIZE
    device: Optional[str] = None


def check_options(options: AugmentOptions, task_name: str) -> None:
    """Every number in range and the task known, before any work (:class:`~.augmentation.AugmentationError`:
    one sentence naming the flag)."""
    try:
        get_task(task_name)
    except (ValueError, TypeError) as error:
        raise aug.AugmentationError(f"--task_name: {error}") from None
    whole = (lambda v: type(v) is int)
    checks = [("N", options.N is None or whole(options.N) and options.N >= 0, "a count >= 0"),
              ("M", whole(options.M) and options.M >= 1, "a count >= 1"),
              ("p", isinstance(options.p, (int, float)) and 0.0 <= options.p <= 1.0, "a probability in [0, 1]"),
              ("seq_length", whole(options.seq_length) and options.seq_length >= 5,
               "at least 5 ([CLS] word [SEP] word [SEP])"),
              ("batch_size", whole(options.batch_size) and options.batch_size >= 1, "at least 1"),
              ("glove_vocab_size", whole(options.glove_vocab_size) and options.glove_vocab_size >= 0,
               "0 (all lines) or more"),
              ("num_attention_heads", options.num_attention_heads is None or whole(options.num_attention_heads)
               and options.num_attention_heads >= 1, "at least 1"),
              ("seed", whole(options.seed), "an integer")]
    for name, ok, what in checks:
        if not ok:
            raise aug.AugmentationError(f"--{name}={getattr(options, name)} must be {what}")


def augment_directory(task_dir: str, task_name: str, options: AugmentOptions, overwrite: bool = False) -> Dict:
    """Write ``<task_dir>/train_aug.tsv`` (module doc); returns :func:`~.augmentation.augment_task`'s
    statistics. :class:`~.augmentation.AugmentationError` (one sentence) on bad input, before anything is
    written."""
    check_options(options, task_name)
    model_dir = options.model_load_dir
    if model_dir is None:
        from ..models.pretrained import minilm_checkpoint_dir

        model_dir = minilm_checkpoint_dir()
    vocab_file = options.vocab_file
    if vocab_file is None:
        own = os.path.join(model_dir, "vocab.txt")
        vocab_file = own if os.path.isfile(own) else default_vocab_file()
    try:
        tokenizer = load_tokenizer(vocab_file, lowercase=options.do_lower_case)
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise aug.AugmentationError(f"--vocab_file: {error}") from None
    model = aug.load_augmentation_model(model_dir, options.num_attention_heads, options.device)
    if tokenizer.get_vocab_size() != model.vocab_size:
        raise aug.AugmentationError(f"--vocab_file {vocab_file} has {tokenizer.get_vocab_size()} tokens but the model "
                                    f"in {model_dir} has {model.vocab_size} word embeddings; pass the "
                                    f"vocab.txt the model was trained with")
    logger.info("model: %s; vocabulary %s", model.description, vocab_file)
    glove = None
    if options.glove_embs:
        words = aug.task_words(os.path.join(task_dir, "train.tsv"), get_task(task_name), tokenizer)
        glove = aug.read_glove(options.glove_embs, words, options.glove_vocab_size)
    substitute = None
    if glove is None or model.masked_lm is None:
        missing = " and ".join(what for what, absent in (("no GloVe file (--glove_embs)", glove is None),
                                                         ("no masked-LM head", model.masked_lm is None)) if absent)
        logger.info("%s: candidates come from the nearest neighbours in the model's word-piece embedding table "
                    "instead (the documented substitute)", missing)
        tokens = [tokenizer.id_to_token(i) or "" for i in range(model.vocab_size)]
        substitute = aug.embedding_neighbours(model.table, tokens)
    augmentor = aug.Augmentor(tokenizer, model.masked_lm, glove, options.M, substitute=substitute, table=model.table,
                              batch_size=options.batch_size, max_length=options.seq_length)
    return aug.augment_task(task_dir, task_name, augmentor, copies=options.N, p=options.p, seed=options.seed,
                            overwrite=overwrite)
