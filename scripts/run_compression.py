"""The whole default compression: prepare the built-in data (or use --data_dir/--task_name), fine-tune
the teacher, train the labels-only student and the five recipes (KD, Distilled-BiLSTM, BERT-PKD,
TinyBERT, BERT-of-Theseus), then print and write the summary table.

Example: .venv/bin/python scripts/run_compression.py            (about 10 minutes on 2 CPU cores)
         .venv/bin/python scripts/run_compression.py --quick    (smoke run on tiny data)
"""
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from knowledge_distill_util.training.compression import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
