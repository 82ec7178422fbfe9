"""``python -m knowledge_distill_util {train,compress,convert-checkpoint} ...``: the dispatcher of
:mod:`knowledge_distill_util.cli.main`."""
import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
