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

from knowledge_distill_util.data import augmentation as aug  # noqa: E402
from knowledge_distill_util.data.features import default_vocab_file, load_tokenizer  # noqa: E402
from knowledge_distill_util.data.glue import get_task  # noqa: E402
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


def _check(args) -> None:
    """Every number in range and the task known, before any work (AugmentationError: one sentence)."""
    try:
        get_task(args.task_name)
    except (ValueError, TypeError) as error:
        raise aug.AugmentationError(f"--task_name: {error}") from None
    checks = [("N", args.N is None or args.N >= 0, "a count >= 0"), ("M", args.M >= 1, "a count >= 1"),
              ("p", 0.0 <= args.p <= 1.0, "a probability in [0, 1]"),
              ("seq_length", args.seq_length >= 5, "at least 5 ([CLS] word [SEP] word [SEP])"),
              ("batch_size", args.batch_size >= 1, "at least 1"), ("glove_vocab_size", args.glove_vocab_size >= 0,
                                                                    "0 (all lines) or more"),
              ("num_attention_heads", args.num_attention_heads is None or args.num_attention_heads >= 1, "at least 1")]
    for name, ok, what in checks:
        if not ok:
            raise aug.AugmentationError(f"--{name}={getattr(args, name)} must be {what}")


def run(args) -> dict:
    _check(args)
    given = sorted(name for name in NO_EFFECT if getattr(args, name) is not None)
    if given:
        logger.info("accepted without effect (they configured the original's OneFlow job): %s",
                    ", ".join(f"--{n}" for n in given))
    task_dir = aug.task_directory(args.glue_dir, args.task_name)
    if args.model_load_dir is None:
        from knowledge_distill_util.models.pretrained import minilm_checkpoint_dir

        args.model_load_dir = minilm_checkpoint_dir()
    vocab_file = args.vocab_file
    if vocab_file is None:
        own = os.path.join(args.model_load_dir, "vocab.txt")
        vocab_file = own if os.path.isfile(own) else default_vocab_file()
    try:
        tokenizer = load_tokenizer(vocab_file, lowercase=args.do_lower_case)
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise aug.AugmentationError(f"--vocab_file: {error}") from None
    model = aug.load_augmentation_model(args.model_load_dir, args.num_attention_heads, args.device)
    if tokenizer.get_vocab_size() != model.vocab_size:
        raise aug.AugmentationError(f"--vocab_file {vocab_file} has {tokenizer.get_vocab_size()} tokens but the model "
                                    f"in {args.model_load_dir} has {model.vocab_size} word embeddings; pass the "
                                    f"vocab.txt the model was trained with")
    logger.info("model: %s; vocabulary %s", model.description, vocab_file)
    glove = None
    if args.glove_embs:
        spec = get_task(args.task_name)
        words = aug.task_words(os.path.join(task_dir, "train.tsv"), spec, tokenizer)
        glove = aug.read_glove(args.glove_embs, words, args.glove_vocab_size)
    substitute = None
    if glove is None or model.masked_lm is None:
        missing = " and ".join(what for what, absent in (("no GloVe file (--glove_embs)", glove is None),
                                                         ("no masked-LM head", model.masked_lm is None)) if absent)
        logger.info("%s: candidates come from the nearest neighbours in the model's word-piece embedding table "
                    "instead (the documented substitute)", missing)
        tokens = [tokenizer.id_to_token(i) or "" for i in range(model.vocab_size)]
        substitute = aug.embedding_neighbours(model.table, tokens)
    augmentor = aug.Augmentor(tokenizer, model.masked_lm, glove, args.M, substitute=substitute, table=model.table,
                              batch_size=args.batch_size, max_length=args.seq_length)
    return aug.augment_task(task_dir, args.task_name, augmentor, copies=args.N, p=args.p, seed=args.seed,
                            overwrite=args.overwrite)


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
