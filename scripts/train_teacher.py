"""Fine-tune the teacher (all-MiniLM-L6-v2 when installed, else a small BERT from scratch).

Example: .venv/bin/python scripts/train_teacher.py --config configs/teacher.json --data_dir DIR --task_name TASK
(every configuration key is also a --flag; flags win over the file).
"""
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from knowledge_distill_util.training.pipeline import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("teacher", description=__doc__))
