"""The original toolkit's ``theseus/init_stu.py``: a student snapshot from a teacher snapshot
(``--teacher_model --student_model --layer_list``; see knowledge_distill_util/compat/init.py)."""
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "3")  # before OneFlow is imported: quiet its start-up logging

from knowledge_distill_util.compat.init import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("theseus", prog="init_stu.py"))
