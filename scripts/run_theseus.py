"""BERT-of-Theseus: module replacement with replace_prob, then successor fine-tuning.

Example: .venv/bin/python scripts/run_theseus.py --config configs/theseus.json --data_dir DIR --task_name TASK
(every configuration key is also a --flag; flags win over the file).
"""
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from knowledge_distill_util.training.pipeline import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("theseus", description=__doc__))
