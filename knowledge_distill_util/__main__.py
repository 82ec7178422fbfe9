"""``python -m knowledge_distill_util {train,compress,convert-checkpoint} ...``: the dispatcher of
:mod:`knowledge_distill_util.cli.main`.

``train_cli`` and ``compress_cli`` stay importable here: the ``kdu-train``/``kdu-compress`` scripts of an
install made before the entry points moved to ``knowledge_distill_util.cli.main`` (an editable install keeps
its scripts across a ``git pull``) load them from this module."""
import sys

from .cli.main import compress_cli, main, train_cli  # noqa: F401  (train_cli, compress_cli: see above)

if __name__ == "__main__":
    sys.exit(main())
