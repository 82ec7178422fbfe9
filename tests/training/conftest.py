"""Fixtures shared by the training tests: tiny BERTs, tiny features, and a workspace with a tiny task and
a tiny teacher trained on it (``kdu-train --recipe teacher --quick``)."""
import os
import sys

import numpy as np
import oneflow as flow
import pytest

from knowledge_distill_util.data import Features, prepare_default_data
from knowledge_distill_util.models import BertForSequenceClassification

PYTHON = sys.executable
TIMEOUT = 180
TINY_TEACHER = ["--teacher_model", "scratch", "--teacher_num_hidden_layers", "2", "--teacher_hidden_size", "32",
                "--teacher_num_attention_heads", "2", "--teacher_intermediate_size", "64"]
TINY_STUDENT = ["--student_num_hidden_layers", "1", "--student_hidden_size", "32", "--student_num_attention_heads",
                "2", "--student_intermediate_size", "64", "--lstm_embedding_size", "16", "--lstm_hidden_size", "16",
                "--lstm_intermediate_size", "16"]


def train_cli(*args, timeout=TIMEOUT, script=None):
    """Run ``python -m knowledge_distill_util train ARGS`` (or ``scripts/<script> ARGS``) in a subprocess."""
    from conftest import run_retrying_signals

    head = [PYTHON, os.path.join(os.path.dirname(__file__), "..", "..", "scripts", script)] if script else \
        [PYTHON, "-m", "knowledge_distill_util", "train"]
    env = dict(os.environ, GLOG_minloglevel="3")
    return run_retrying_signals(head + [str(a) for a in args], timeout=timeout, env=env)


def tiny_bert(layers=4, seed=0, label_num=3, initializer_range=0.02, vocab_size=40):
    flow.manual_seed(seed)
    return BertForSequenceClassification(vocab_size=vocab_size, hidden_size=8, num_hidden_layers=layers,
                                         num_attention_heads=2, intermediate_size=16, hidden_dropout_prob=0.0,
                                         attention_probs_dropout_prob=0.0, label_num=label_num,
                                         initializer_range=initializer_range)


def tiny_features(n=20, length=6, seed=0):
    rng = np.random.default_rng(seed)
    return Features(rng.integers(1, 40, (n, length)), np.ones((n, length), np.int64),
                    np.zeros((n, length), np.int64), rng.integers(0, 3, n))


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    """A tiny synthetic task and a tiny teacher fine-tuned on it."""
    root = tmp_path_factory.mktemp("workspace")
    data = str(root / "data")
    task, _ = prepare_default_data(data, seed=0, source="synthetic", max_per_class=30)
    teacher = str(root / "teacher")
    done = train_cli("--recipe", "teacher", "--quick", "--data_dir", data, "--task_name", task, "--model_save_dir",
                     teacher, "--result_dir", root / "teacher_results", *TINY_TEACHER)
    assert done.returncode == 0, done.stderr[-2000:]
    return {"root": root, "data": data, "task": task, "teacher": teacher}


def recipe_args(ws, recipe, tag):
    """Flags of a ``--quick`` run of ``recipe`` on the workspace, writing under ``<root>/<tag>/``."""
    return ["--recipe", recipe, "--quick", "--data_dir", ws["data"], "--task_name", ws["task"], "--teacher_model",
            ws["teacher"], "--model_save_dir", ws["root"] / tag / "model", "--result_dir",
            ws["root"] / tag / "results", *TINY_STUDENT]
