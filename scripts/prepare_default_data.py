#!/usr/bin/env python
"""Write the built-in default task as GLUE-format TSV (train.tsv, dev.tsv) into --out_dir.

The source is the Debian ``fortunes`` topic files when present (task ``fortunes``: the label of a quote is
its topic file), a generated task otherwise (task ``synthetic``); the output says which one was used.

Example:
    python scripts/prepare_default_data.py --out_dir data/default
"""
import argparse
import sys

from knowledge_distill_util.data.default_data import SOURCES, prepare_default_data


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", required=True, help="directory to write train.tsv and dev.tsv into")
    parser.add_argument("--source", default="auto", choices=SOURCES,
                        help="fortunes, synthetic, or auto: fortunes when installed (default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling and the split")
    parser.add_argument("--max_per_class", type=int, default=500, help="examples per class before the split")
    parser.add_argument("--dev_fraction", type=float, default=0.2, help="share of each class put in dev")
    parser.add_argument("--max_train", type=int, default=None, help="cap on train examples (for quick runs)")
    parser.add_argument("--max_dev", type=int, default=None, help="cap on dev examples (for quick runs)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        task, description = prepare_default_data(
            args.out_dir, seed=args.seed, max_per_class=args.max_per_class, source=args.source,
            max_train=args.max_train, max_dev=args.max_dev, dev_fraction=args.dev_fraction,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(description)
    print(f"use: --task_name {task} --data_dir {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
