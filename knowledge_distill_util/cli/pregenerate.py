"""``scripts/pregenerate_training_data.py``: the original TinyBERT script's command line over
:mod:`knowledge_distill_util.data.pregenerate`.

The original's flags and defaults: ``--train_corpus``, ``--output_dir``, ``--vocab_file`` (or ``--bert_model``,
a model directory holding ``vocab.txt``/``tokenizer.json``; default: this package's all-MiniLM-L6-v2
vocabulary, logged), ``--do_lower_case`` (``store_true`` as in the original; ``--do_lower_case True`` works
too), ``--do_whole_word_mask``, ``--reduce_memory`` (accepted: the corpus is always streamed),
``--num_workers`` (epochs written in parallel, same files), ``--epochs_to_generate`` 3, ``--max_seq_len`` 128,
``--short_seq_prob`` 0.1, ``--masked_lm_prob`` 0.0, ``--max_predictions_per_seq`` 20, ``--oneseq``; this
package adds ``--seed`` 0 and ``--overwrite`` (an output directory holding epoch files is refused without it).

Bad input (no corpus, an empty corpus, one without document or sentence breaks, a missing vocabulary, a bad
number) prints one sentence and exits 2, before anything is written.
"""
import argparse
import glob
import json
import logging
import os
import sys
from typing import Optional, Sequence

from ..data.features import default_vocab_file, load_tokenizer
from ..data.pregenerate import CorpusError, PregenerateConfig, pregenerate

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)
_TRUE, _FALSE = ("true", "t", "yes", "y", "1"), ("false", "f", "no", "n", "0")


def _bool(text: str) -> bool:
    value = str(text).strip().strip("'\"").lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pregenerate_training_data.py", allow_abbrev=False,
                                     description="Pregenerate TinyBERT's general-distillation instances from a "
                                                 "text corpus (one sentence a line, blank lines between "
                                                 "documents): epoch_<k>.json + epoch_<k>_metrics.json.")
    add = parser.add_argument
    add("--train_corpus", required=True, help="the corpus text file")
    add("--output_dir", required=True, help="where epoch_<k>.json and epoch_<k>_metrics.json are written")
    add("--vocab_file", default=None, help="WordPiece vocab.txt or tokenizer.json (default: all-MiniLM-L6-v2's)")
    add("--bert_model", default=None, help="a model directory holding vocab.txt or tokenizer.json (instead of "
                                           "--vocab_file)")
    for flag, text in (("--do_lower_case", "lower-case the text (uncased vocabularies)"),
                       ("--do_whole_word_mask", "mask whole words rather than single WordPieces"),
                       ("--reduce_memory", "accepted for the original's scripts: the corpus is always streamed"),
                       ("--oneseq", "B is always the real continuation (no random next segment)"),
                       ("--overwrite", "replace the epoch files of --output_dir")):
        add(flag, type=_bool, nargs="?", const=True, default=False, help=text)
    add("--num_workers", type=int, default=1, help="processes writing epochs in parallel (the files are the same)")
    add("--epochs_to_generate", type=int, default=3, help="number of epoch files")
    add("--max_seq_len", type=int, default=128, help="tokens per instance, [CLS] and [SEP] included")
    add("--short_seq_prob", type=float, default=0.1, help="probability of a shorter target length")
    add("--masked_lm_prob", type=float, default=0.0, help="share of the tokens masked (at least one is)")
    add("--max_predictions_per_seq", type=int, default=20, help="most masked positions per instance")
    add("--seed", type=int, default=0, help="seed of the random draws (epoch k uses (seed, k))")
    return parser


def _tokenizer(args):
    if args.vocab_file and args.bert_model:
        raise ValueError(f"--vocab_file {args.vocab_file} and --bert_model {args.bert_model} both name the "
                         f"vocabulary; pass one of them")
    source = args.vocab_file or args.bert_model
    if source is None:
        source = default_vocab_file()
        logger.info("no --vocab_file: using %s", source)
    return load_tokenizer(source, lowercase=args.do_lower_case)


def _check_output(args) -> None:
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise ValueError(f"--output_dir {args.output_dir} is a file; pass a directory")
    existing = sorted(glob.glob(os.path.join(glob.escape(args.output_dir), "epoch_*.json")))
    if existing and not args.overwrite:
        raise ValueError(f"--output_dir {args.output_dir} already holds {len(existing)} epoch file(s) "
                         f"({os.path.basename(existing[0])}, ...); pass --overwrite to replace them or another "
                         f"--output_dir")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; 0 on success, 2 after one sentence for bad input."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="[%(name)s] %(message)s", level=logging.INFO, force=True)
    try:
        cfg = PregenerateConfig(max_seq_len=args.max_seq_len, short_seq_prob=args.short_seq_prob,
                                masked_lm_prob=args.masked_lm_prob,
                                max_predictions_per_seq=args.max_predictions_per_seq,
                                whole_word_mask=args.do_whole_word_mask, oneseq=args.oneseq,
                                epochs_to_generate=args.epochs_to_generate, seed=args.seed)
        if args.num_workers < 1:
            raise ValueError(f"--num_workers must be a positive integer, got {args.num_workers}")
        if not os.path.isfile(args.train_corpus):
            raise ValueError(f"--train_corpus {args.train_corpus} does not exist or is not a file; pass a text file "
                             f"with one sentence per line and blank lines between documents")
        tokenizer = _tokenizer(args)
        _check_output(args)
        from ..engine.lock import DirectoryLock

        created = not os.path.isdir(args.output_dir)
        os.makedirs(args.output_dir, exist_ok=True)
        try:
            with DirectoryLock(args.output_dir):
                summary = pregenerate(args.train_corpus, args.output_dir, tokenizer, cfg,
                                      num_workers=args.num_workers)
        except CorpusError:
            if created:  # the directory this run created, empty again: leave nothing behind
                os.rmdir(args.output_dir)
            raise
    except (ValueError, TypeError, FileNotFoundError, CorpusError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    logger.info("%d instances from %d documents in %.1f s (%.0f instances/s)", summary["instances"],
                summary["documents"], summary["seconds"], summary["instances_per_second"] or 0)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))
    return 0
