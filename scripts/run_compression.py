"""The whole default compression: ``kdu-compress`` under its original script name (see docs/recipes.md)."""
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "3")  # before OneFlow is imported: quiet its start-up logging

from knowledge_distill_util.cli.compress import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
