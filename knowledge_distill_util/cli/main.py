"""``python -m knowledge_distill_util train ...`` (= ``kdu-train``), ``... compress ...`` (= ``kdu-compress``) and
``... convert-checkpoint DIR --trust`` (models and checkpoints of earlier versions, OneFlow's pickle layout, to
safetensors: :mod:`knowledge_distill_util.convert`). ``knowledge_distill_util/__main__.py`` calls :func:`main`;
:func:`train_cli` and :func:`compress_cli` are the console scripts (``pyproject.toml``)."""
import os
import sys

USAGE = ("usage: python -m knowledge_distill_util {train,compress,convert-checkpoint} [options]\n"
         "  train               train one registered recipe (kdu-train; --help lists the options)\n"
         "  compress            the whole default compression and its summary table (kdu-compress)\n"
         "  convert-checkpoint  DIR [--trust]: convert a model or checkpoint of an earlier version (OneFlow's\n"
         "                      pickle layout, pickled_data) to safetensors once, in place")
COMMANDS = ("train", "compress", "convert-checkpoint")


def _full_usage() -> str:
    """:data:`USAGE` and the registered recipes, one line each (what ``train --recipe NAME`` runs)."""
    from ..training.config import recipe_lines
    from ..training.recipes import RECIPES

    return (f"{USAGE}\n\nrecipes of train --recipe NAME (train --recipe NAME --help shows its options):\n"
            f"{recipe_lines(RECIPES)}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    os.environ.setdefault("GLOG_minloglevel", "3")
    if argv and argv[0] in ("-h", "--help"):
        print(_full_usage())
        return 0
    if not argv or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        return 2
    if argv[0] == "train":
        from ..training.run import main as train

        return train(argv[1:], prog="kdu-train", description="Train one registered compression recipe.")
    if argv[0] == "convert-checkpoint":
        from ..convert import main as convert

        return convert(argv[1:])
    from ..training.compression import main as compress

    return compress(argv[1:])


def train_cli() -> None:
    """The ``kdu-train`` console script."""
    sys.exit(main(["train"] + sys.argv[1:]))


def compress_cli() -> None:
    """The ``kdu-compress`` console script."""
    sys.exit(main(["compress"] + sys.argv[1:]))
