"""TinyBERT: stage 1 (--intermediate_distill) att_distill + layer_distill, stage 2 (--pred_distill) pred_distill; both when neither flag is given.

Example: .venv/bin/python scripts/run_tinybert.py --config configs/tinybert.json --data_dir DIR --task_name TASK
(every configuration key is also a --flag; flags win over the file).
"""
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from knowledge_distill_util.training.pipeline import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("tinybert", description=__doc__))
