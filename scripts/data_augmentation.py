#!/usr/bin/env python
"""TinyBERT's data augmentation (the original toolkit's examples/tinybert/data_augmentation.py): writes
<glue_dir>/<task_name>/train_aug.tsv (or <glue_dir>/train_aug.tsv) beside train.tsv, in the same layout.

Every original flag is accepted (its run_data_augmentation.sh runs unedited); those that only configured the
original's OneFlow job have no effect. The algorithm, defaults and differences: knowledge_distill_util/data/
augmentation.py and docs/recipes.md ("TinyBERT data augmentation"). Train on the result with
--aug_train=True (scripts/task_student_tinybert.py) or kdu-train --recipe tinybert --aug_train.

Example (the original's run_data_augmentation.sh):
    python scripts/data_augmentation.py --model_load_dir=models/uncased_L-12_H-768_A-12_oneflow \\
        --vocab_file vocab.txt --do_lower_case --glove_embs glove/glove.840B.300d.txt \\
        --glue_dir data/glue_data --task_name SST-2 --seq_length=512 --num_attention_heads=12
"""
import os

os.environ.setdefault("GLOG_minloglevel", "3")

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

import dataclasses  # noqa: E402

from knowledge_distill_util.data import augmentation as aug  # noqa: E402
from knowledge_distill_util.data.augment_run import AugmentOptions, augment_directory, check_options  # noqa: E402
from knowledge_distill_util.compat.flags import str2bool  # noqa: E402

logger = logging.getLogger("data_augmentation")

#: The original's flags (its src/config.py parser and data_augmentation.py's own) that have no effect here.
NO_EFFECT = {
    "do_train": str2bool, "do_eval": str2bool, "model": str, "gpu_num_per_node": int, "num_nodes": int,
    "node_ips": str, "ctrl_port": int, "learning_rate": float, "weight_decay_rate": float,
    "warmup_proportion": float, "use_fp16": str2bool, "use_xla": str2bool, "loss_print_every_n_iter": int,
    "model_save_every_n_iter": int, "model_save_dir": str, "save_last_snapshot": str2bool, "log_dir": str,
    "max_predictions_per_seq": int, "num_hidden_layers": int, "max_position_embeddings": int,
    "type_vocab_size": int, "vocab_size": int, "attention_probs_dropout_prob": float, "hidden_dropout_prob": float,
    "hidden_size_per_head": int, "hidden_size": int, "pretrained_bert_model": str, "eval_data_dir": str,
    "eval_data_prefix": str, "eval_batch_size_per_device": int, "eval_data_part_num": int,
}
_BOOLS = {name for name, kind in NO_EFFECT.items() if kind is str2bool}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one sentence, exit 2 (argparse's usage block is left out)
        print(f"data_augmentation.py: error: {message}; see --help", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="data_augmentation.py", description=__doc__, allow_abbrev=False,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--model_load_dir", default=None, help="the pretrained BERT: a Hugging Face directory, the original's snapshot "
        "or a kdu-train model (default: all-MiniLM-L6-v2, which has no masked-LM head)")
    add("--vocab_file", default=None, help="its WordPiece vocab.txt (default: <model_load_dir>/vocab.txt, else "
        "the package's vocabulary); must have the model's vocabulary size")
    add("--do_lower_case", type=str2bool, nargs="?", const=True, default=True, help="lower-case (default True)")
    add("--glove_embs", default=None, help="GloVe text file (e.g. glove.840B.300d.txt) for words of several pieces "
        "(default: none, the word-embedding substitute; the original's default was ./glove/glove.840B.300d.txt)")
    add("--glue_dir", default="./data", help="folder holding <task_name>/train.tsv (or train.tsv itself)")
    add("--task_name", default="MRPC", help="the task (its columns and N default), e.g. SST-2")
    add("--N", type=int, default=None, help="augmented copies per sentence at most (default: the original's per "
        f"task, {aug.DEFAULT_COPIES}, else {aug.DEFAULT_N})")
    add("--M", type=int, default=aug.DEFAULT_M, help=f"candidates per word (default {aug.DEFAULT_M})")
    add("--p", type=float, default=aug.DEFAULT_P, help=f"probability of replacing a word (default {aug.DEFAULT_P})")
    add("--seq_length", type=int, default=512, help="tokens of a masked-LM input at most (default 512)")
    add("--num_attention_heads", type=int, default=None, help="attention heads of a snapshot (not stored in it; "
        "default hidden_size / 64)")
    add("--seed", type=int, default=0, help="seed of the random choices (default 0): same seed, same file")
    add("--batch_size", type=int, default=64, help="masked-LM inputs per forward pass (default 64)")
    add("--glove_vocab_size", type=int, default=aug.GLOVE_VOCAB_SIZE, help="GloVe lines read (default "
        f"{aug.GLOVE_VOCAB_SIZE}, the original's; 0: all)")
    add("--overwrite", action="store_true", help="replace an existing train_aug.tsv")
    add("--device", default=None, help="where the masked LM runs: cpu, cuda or cuda:N (default: CUDA when present)")
    for name, kind in NO_EFFECT.items():
        if name in _BOOLS:
            add(f"--{name}", type=str2bool, nargs="?", const=True, default=None, help=argparse.SUPPRESS)
        else:
            add(f"--{name}", type=kind, default=None, help=argparse.SUPPRESS)
    return parser


def _options(args) -> AugmentOptions:
    """The augmentation options of the parsed flags."""
    names = {field.name for field in dataclasses.fields(AugmentOptions)}
    return AugmentOptions(**{name: getattr(args, name) for name in names})


def run(args) -> dict:
    options = _options(args)
    check_options(options, args.task_name)
    given = sorted(name for name in NO_EFFECT if getattr(args, name) is not None)
    if given:
        logger.info("accepted without effect (they configured the original's OneFlow job): %s",
                    ", ".join(f"--{n}" for n in given))
    task_dir = aug.task_directory(args.glue_dir, args.task_name)
    return augment_directory(task_dir, args.task_name, options, overwrite=args.overwrite)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        run(args)
    except (aug.AugmentationError, OSError) as error:  # OSError: train_aug.tsv could not be written (disk, rights)
        print(f"data_augmentation.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
