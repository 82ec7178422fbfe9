"""The original toolkit's ``examples/tinybert/pregenerate_training_data.py`` (TinyBERT general distillation's
corpus): the same flags and output files, run by this package (knowledge_distill_util/data/pregenerate.py,
docs/recipes.md "TinyBERT general distillation").

Example (the original's run_pregenerate_training_data.sh)::

    python scripts/pregenerate_training_data.py --train_corpus wiki.train.raw --vocab_file vocab.txt \\
        --do_lower_case --epochs_to_generate 3 --output_dir pretrain_data_json
"""
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "3")  # before OneFlow is imported: quiet its start-up logging

from knowledge_distill_util.cli.pregenerate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
