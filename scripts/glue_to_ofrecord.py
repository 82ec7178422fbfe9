#!/usr/bin/env python
"""Convert a GLUE task's TSV files to the original toolkit's OFRecord layout (as its glue_process.py).

Writes <output_dir>/train/train.of_record-<i> (from train.tsv) and <output_dir>/eval/eval.of_record-<i>
(from dev.tsv), i < --part_num; with --aug_train True also <output_dir>/train_aug/train.of_record-<i> from
train_aug.tsv (written by scripts/data_augmentation.py; read by --aug_train=True), features input_ids, input_mask, segment_ids, label_ids, is_real_example.
The original's flags are accepted: --data_dir --output_dir --vocab_file --do_lower_case
--max_seq_length --do_train --do_eval --task_name (--task is taken as --task_name, as the original's
glue_process.sh passes it) and --aug_train. --do_predict is not supported.

Example:
    python scripts/glue_to_ofrecord.py --data_dir glue_data/SST-2 --output_dir glue_ofrecord/SST-2 \\
        --vocab_file vocab.txt --do_lower_case True --max_seq_length 128 --do_train True --do_eval True \\
        --task_name SST-2
"""
import os

os.environ.setdefault("GLOG_minloglevel", "3")

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

from knowledge_distill_util.data.features import default_vocab_file  # noqa: E402
from knowledge_distill_util.data.ofrecord import glue_to_ofrecord  # noqa: E402

_TRUE, _FALSE = ("true", "t", "yes", "y", "1"), ("false", "f", "no", "n", "0")


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--data_dir", required=True, help="the task's GLUE TSV directory (train.tsv, dev.tsv)")
    parser.add_argument("--output_dir", required=True, help="where train/ and eval/ are written")
    parser.add_argument("--vocab_file", default=None,
                        help="WordPiece vocab.txt (default: the vocabulary shipped with this package)")
    parser.add_argument("--task_name", "--task", dest="task_name", default="cola", help="GLUE task, e.g. SST-2")
    parser.add_argument("--max_seq_length", type=int, default=128, help="sequence length L (default 128)")
    parser.add_argument("--do_lower_case", type=_bool, nargs="?", const=True, default=True,
                        help="lower-case the text (uncased vocabularies; default True)")
    parser.add_argument("--do_train", type=_bool, nargs="?", const=True, default=None, help="write train/")
    parser.add_argument("--do_eval", type=_bool, nargs="?", const=True, default=None, help="write eval/")
    parser.add_argument("--aug_train", type=_bool, nargs="?", const=True, default=None,
                        help="write train_aug/ from train_aug.tsv (TinyBERT's augmented set)")
    parser.add_argument("--part_num", type=int, default=1, help="part files per split (default 1, as the original)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    splits = [name for name, wanted in (("train", args.do_train), ("eval", args.do_eval), ("train_aug", args.aug_train))
              if wanted]
    if not splits:
        print("error: pass --do_train True, --do_eval True and/or --aug_train True (nothing to convert)", file=sys.stderr)
        return 2
    augmented = os.path.join(args.data_dir, "train_aug.tsv")
    if args.aug_train and not os.path.isfile(augmented):
        print(f"error: --aug_train True: {augmented} does not exist; make it first with python "
              f"scripts/data_augmentation.py --glue_dir {args.data_dir} --task_name {args.task_name}", file=sys.stderr)
        return 2
    try:
        written = glue_to_ofrecord(args.data_dir, args.task_name, args.output_dir,
                                   args.vocab_file or default_vocab_file(), seq_length=args.max_seq_length,
                                   part_num=args.part_num, do_lower_case=args.do_lower_case, splits=splits)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for split, count in written.items():
        logging.info("%s: %d records in %s", split, count, os.path.join(args.output_dir, split))
    return 0


if __name__ == "__main__":
    sys.exit(main())
