"""The original toolkit's ``examples/teacher_bert/task_teacher.py``, run by this package (see docs/migration.md): every original flag
is accepted with its original default (knowledge_distill_util/compat/flags.py); this package's own
flags (``--print_config``, ``--device``, ``--max_steps`` ...) may follow."""
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "3")  # before OneFlow is imported: quiet its start-up logging

from knowledge_distill_util.cli.original import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("task_teacher", prog="task_teacher.py"))
