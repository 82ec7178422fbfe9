"""BERT-PKD: (1 - kd_alpha) * CE + kd_alpha * pred_distill + kd_beta * layer_distill.

Example: .venv/bin/python scripts/run_bert_pkd.py --config configs/bert_pkd.json --data_dir DIR --task_name TASK
(every configuration key is also a --flag; flags win over the file).
"""
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from knowledge_distill_util.training.pipeline import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("bert_pkd", description=__doc__))
