"""The training loop: checkpoints and exact resume (eager and graph, dropout on), graph equals eager,
the loss log, and what a resume refuses."""
import argparse
import os
import re

import numpy as np
import pytest

from knowledge_distill_util.models import BertForSequenceClassification
from knowledge_distill_util.engine.checkpoint import latest_checkpoint
from knowledge_distill_util.config.schema import ConfigError
from knowledge_distill_util.training.objectives import KD
import oneflow as flow

from knowledge_distill_util.training.trainer import (LossStep, NonFiniteLossError, TrainerConfig, _check_finite_weights,
                                                  batch_indices, train_stage)
from training.conftest import TINY_TEACHER, tiny_bert, tiny_features, train_cli


def _train(work, graph=False, stop=None, resume=False, dropout=0.0, reseed=False):
    teacher, student = tiny_bert(2, seed=1), tiny_bert(2, seed=2)
    if dropout:
        student = BertForSequenceClassification(**dict(student.config, hidden_dropout_prob=dropout,
                                                       attention_probs_dropout_prob=dropout))
        student.load_state_dict(tiny_bert(2, seed=2).state_dict())
    args = argparse.Namespace(kd_alpha=0.5, temperature=1.0)
    tcfg = TrainerConfig(num_epochs=3, learning_rate=1e-2, batch_size=8, checkpoint_every=2, resume=resume,
                         use_graph=graph, warmup_proportion=0.2, reseed_dropout=reseed)

    def hook(step, total, terms):
        if stop is not None and step == stop:
            raise KeyboardInterrupt  # a kill after step `stop` (its checkpoint, if any, is complete)

    try:
        train_stage(LossStep(student, teacher, KD, args), tiny_features(), tcfg, work_dir=str(work), stage="s",
                    checkpoint_dir=str(work / "checkpoints"), progress=False, on_step=hook)
    except KeyboardInterrupt:
        pass
    return student


def _max_diff(a, b):
    return max(float(np.abs(p.numpy() - q.numpy()).max()) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.graph
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
def test_resume_equals_uninterrupted(tmp_path, graph):
    full = _train(tmp_path / "full", graph)
    _train(tmp_path / "cut", graph, stop=5)                  # killed after step 5: last checkpoint is step 4
    assert os.path.basename(latest_checkpoint(str(tmp_path / "cut" / "checkpoints" / "s"))) == "step-00000004"
    resumed = _train(tmp_path / "cut", graph, resume=True)
    assert _max_diff(full, resumed) == 0.0
    rows = open(tmp_path / "cut" / "s_losses.csv").read().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(i) for i in range(1, 10)]   # step 5 re-run once
    assert os.path.isfile(tmp_path / "cut" / "s_losses.png")


@pytest.mark.graph
def test_graph_training_matches_eager(tmp_path):
    eager = _train(tmp_path / "e", graph=False)
    graph = _train(tmp_path / "g", graph=True)
    untrained = tiny_bert(2, seed=2)
    assert _max_diff(eager, untrained) > 1e-3                  # training moved the weights
    assert _max_diff(eager, graph) < 1e-4


def test_resume_is_exact_with_dropout_when_reseeded(tmp_path, graph=False):
    """--reseed_dropout (eager): every dropout generator is seeded from (seed, step), so a resumed run with
    dropout on equals the uninterrupted one; without it the resumed run differs (OneFlow 0.9 exposes no
    dropout state). Under nn.Graph the compiled dropout keeps its own state: see engine/checkpoint.py."""
    full = _train(tmp_path / "full", graph, dropout=0.3, reseed=True)
    _train(tmp_path / "cut", graph, stop=5, dropout=0.3, reseed=True)
    resumed = _train(tmp_path / "cut", graph, resume=True, dropout=0.3, reseed=True)
    assert _max_diff(full, resumed) == 0.0
    assert _max_diff(full, _train(tmp_path / "plain", graph, dropout=0.3)) > 1e-4      # other masks than reseeded
    _train(tmp_path / "cut2", graph, stop=5, dropout=0.3)
    plain = _train(tmp_path / "plain", graph, dropout=0.3)
    assert _max_diff(plain, _train(tmp_path / "cut2", graph, resume=True, dropout=0.3)) > 1e-6  # the known limit


def test_resume_never_deletes_unreadable_checkpoints(tmp_path):
    _train(tmp_path / "run", stop=5)
    root = tmp_path / "run" / "checkpoints" / "s"
    (root / "step-00000004" / "state.json").write_text("{truncated")
    with pytest.raises(ConfigError, match=r"no readable checkpoint under .*nothing was deleted"):
        _train(tmp_path / "run", resume=True)
    assert (root / "step-00000004").is_dir()


def test_resume_falls_back_to_an_older_readable_checkpoint(tmp_path, caplog):
    _train(tmp_path / "run", stop=5)
    root = tmp_path / "run" / "checkpoints" / "s"
    os.makedirs(root / "step-00000006")                        # a newer, unreadable one that LATEST names
    (root / "LATEST").write_text("step-00000006")
    (root / "step-00000006" / "state.json").write_text("{}")
    resumed = _train(tmp_path / "run", resume=True)
    assert "unreadable" in caplog.text and _max_diff(resumed, _train(tmp_path / "full")) == 0.0


def test_batches_depend_only_on_seed_and_epoch():
    assert [b.tolist() for b in batch_indices(5, 2, seed=0, epoch=0)] == [[2, 4], [3, 0], [1, 2]]
    assert [b.tolist() for b in batch_indices(5, 2, seed=0, epoch=1)] != [[2, 4], [3, 0], [1, 2]]


def test_a_nan_loss_stops_at_its_step_with_one_sentence(tmp_path):
    """--learning_rate 1e30: the first non-finite loss stops the stage (issue 16); no checkpoint of it."""
    args = argparse.Namespace(kd_alpha=0.5, temperature=1.0)
    tcfg = TrainerConfig(num_epochs=3, learning_rate=1e30, batch_size=8, checkpoint_every=1, warmup_proportion=0.0)
    with pytest.raises(NonFiniteLossError, match=r"^stage s: the loss became nan at step (\d+) \(loss=nan, .*\); "
                                                 r"training stopped and nothing of it was saved \(earlier checkpoints "
                                                 r"and models are kept\): lower --learning_rate \(now 1e\+30\) or "
                                                 r"check the data$") as caught:
        train_stage(LossStep(tiny_bert(2, seed=2), tiny_bert(2, seed=1), KD, args), tiny_features(), tcfg,
                    work_dir=str(tmp_path), stage="s", checkpoint_dir=str(tmp_path / "checkpoints"), progress=False)
    assert isinstance(caught.value, ConfigError)
    step = int(caught.value.args[0].split(" at step ")[1].split()[0])
    saved = latest_checkpoint(str(tmp_path / "checkpoints" / "s"))
    saved_step = int(re.search(r"(\d+)$", saved).group(1)) if saved else 0
    assert saved_step < step  # the step whose loss was NaN left no checkpoint


def test_nan_weights_are_never_checkpointed():
    model = tiny_bert(1)
    _check_finite_weights(model, "s", 3, 0.1)  # finite: nothing to say
    with flow.no_grad():
        model.classifier.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteLossError, match=r"^stage s: the weight classifier.weight became NaN or infinite at "
                                                 r"step 3; training stopped and this checkpoint was not saved"):
        _check_finite_weights(model, "s", 3, 0.1)


def test_a_huge_learning_rate_exits_2_without_a_model(workspace, tmp_path):
    done = train_cli("--recipe", "teacher", "--quick", "--data_dir", workspace["data"], "--task_name",
                     workspace["task"], "--model_save_dir", tmp_path / "m", "--result_dir", tmp_path / "r",
                     "--learning_rate", "1e30", "--warmup_proportion", "0", *TINY_TEACHER)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "error: stage teacher: the loss became nan at step " in done.stderr
    assert "lower --learning_rate (now 1e+30) or check the data" in done.stderr
    assert not os.path.exists(tmp_path / "m" / "model_config.json")
    assert not os.path.exists(tmp_path / "r" / "results_eval.json")


def test_progress_log_line_every_n_seconds(caplog):
    from knowledge_distill_util.training.trainer import ProgressLog, format_duration

    now = [100.0]
    lines = ProgressLog("kd", total=100, start=10, batch_size=32, every=30.0, clock=lambda: now[0])
    with caplog.at_level("INFO", logger="knowledge_distill_util.engine.progress"):
        now[0] = 120.0
        lines(20, 0.5)                     # 20 s since the start: no line yet
        now[0] = 140.0
        lines(30, 0.25)                    # 40 s: 20 steps x 32 rows / 40 s = 16 rows/s; 70 steps left at 2 s each
        now[0] = 150.0
        lines(35, 0.2)                     # 10 s since the last line: none
    assert [r.getMessage() for r in caplog.records] == [
        "stage kd: step 30/100 (30%), loss 0.2500, 16.0 samples/s, ETA 2m20s"]
    assert (format_duration(45), format_duration(3725), format_duration(0.4)) == ("45s", "1h02m", "0s")


def test_progress_log_zero_is_silent(caplog):
    from knowledge_distill_util.training.trainer import ProgressLog

    now = [0.0]
    lines = ProgressLog("kd", total=10, start=0, batch_size=8, every=0.0, clock=lambda: now[0])
    with caplog.at_level("INFO", logger="knowledge_distill_util.engine.progress"):
        for step in range(1, 11):
            now[0] = 1000.0 * step
            lines(step, 1.0)
    assert not caplog.records


def test_train_stage_logs_progress_off_a_terminal(tmp_path, caplog):
    teacher, student = tiny_bert(2, seed=1), tiny_bert(2, seed=2)
    tcfg = TrainerConfig(num_epochs=1, learning_rate=1e-2, batch_size=8, checkpoint_every=100, progress_every=1e-9)
    with caplog.at_level("INFO", logger="knowledge_distill_util.engine.progress"):
        train_stage(LossStep(student, teacher, KD, argparse.Namespace(kd_alpha=0.5, temperature=1.0)),
                    tiny_features(), tcfg, work_dir=str(tmp_path), stage="s", checkpoint_dir=str(tmp_path / "c"),
                    progress=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stage s: step")]
    assert [line.split(",")[0] for line in lines] == ["stage s: step 1/3 (33%)", "stage s: step 2/3 (66%)",
                                                      "stage s: step 3/3 (100%)"]
    assert all(" samples/s, ETA " in line for line in lines)
