"""The Distiller end to end: the issue's snippet as written, parameters, the teacher's mode, evaluation."""
import logging

import numpy as np
import oneflow as flow
import pytest
from oneflow.utils.data import DataLoader, TensorDataset

from knowledge_distill_util import Distiller, DistillationConfig, TrainingConfig

from .conftest import pair, random_data, tuple_loader

#: The snippet of issue 17, verbatim.
SNIPPET = """\
import oneflow as flow
from knowledge_distill_util import Distiller, DistillationConfig, TrainingConfig
distill = DistillationConfig(
    temperature=4.0, logit_loss="kl_div", logit_weight=1.0, hard_label_weight=0.5, temperature_scaling=True,
    intermediate_matches=[{"layer_S": "body.1", "layer_T": "body.3", "feature": "output", "loss": "hidden_mse",
                           "weight": 1.0, "proj": ["linear", 32, 128]}],
)
train = TrainingConfig(output_dir="out/mlp", max_steps=200, seed=0, log_every=20)
distiller = Distiller(teacher, student, distill, train)   # adaptor_T= / adaptor_S= optional
history = distiller.train(loader, optimizer=flow.optim.AdamW(distiller.parameters(), lr=1e-3), eval_data=dev_loader)
metrics = distiller.evaluate(dev_loader)                   # {"accuracy": ...} by default
"""


def test_the_issue_snippet_runs_as_written(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = digits
    loader = DataLoader(TensorDataset(flow.tensor(x[:1400]), flow.tensor(y[:1400])), batch_size=64, shuffle=True)
    dev_loader = DataLoader(TensorDataset(flow.tensor(x[1400:]), flow.tensor(y[1400:])), batch_size=256)
    teacher, student = pair()
    scope = {"teacher": teacher, "student": student, "loader": loader, "dev_loader": dev_loader}
    exec(SNIPPET, scope)  # noqa: S102 - the issue's text, run as written
    history, metrics = scope["history"], scope["metrics"]
    assert set(metrics) == {"accuracy"} and metrics["accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert history["step"] == list(range(1, 201))
    for term in ("loss", "kl_div", "hard_label", "match0_hidden_mse"):
        assert len(history[term]) == 200 and all(np.isfinite(history[term]))
    assert history["match0_hidden_mse"][-1] < history["match0_hidden_mse"][0]
    assert history["eval"] == [{"step": 200, "accuracy": metrics["accuracy"]}]
    out = tmp_path / "out" / "mlp"
    assert (out / "checkpoints" / "LATEST").read_text() == "step-00000200"
    assert len((out / "losses.csv").read_text().splitlines()) == 201
    assert (out / "losses.png").is_file() and not (out / ".kdu.lock").exists()


def test_the_total_is_the_weighted_sum_of_the_terms(tmp_path):
    x, y = random_data(inputs=64, classes=10)
    teacher, student = pair()
    config = DistillationConfig(temperature=2.0, hard_label_weight=0.3, logit_weight=0.7, intermediate_matches=[
        {"layer_S": "body.1", "layer_T": "body.1", "feature": "output", "loss": "hidden_mse", "weight": 2.0,
         "proj": ["linear", 32, 128]}])
    history = Distiller(teacher, student, config, TrainingConfig(str(tmp_path), max_steps=3)).train(tuple_loader(x, y))
    for i in range(3):
        expected = 0.7 * history["kl_div"][i] + 0.3 * history["hard_label"][i] + 2.0 * history["match0_hidden_mse"][i]
        assert history["loss"][i] == pytest.approx(expected, rel=1e-5)


def test_parameters_are_the_student_and_the_projections():
    teacher, student = pair()
    config = DistillationConfig(intermediate_matches=[
        {"layer_S": "body.1", "layer_T": "body.3", "feature": "output", "loss": "hidden_mse", "proj": ["linear", 32, 128]}])
    distiller = Distiller(teacher, student, config, TrainingConfig("unused", max_steps=1))
    params = list(distiller.parameters())
    assert len(params) == len(list(student.parameters())) + 2
    assert {id(p) for p in student.parameters()} < {id(p) for p in params}
    assert not {id(p) for p in teacher.parameters()} & {id(p) for p in params}
    assert [tuple(p.shape) for p in params[-2:]] == [(128, 32), (128,)]


def test_teacher_in_train_mode_is_switched_to_eval_and_logged_once(tmp_path, caplog):
    x, y = random_data()
    teacher, student = pair(inputs=8, classes=3)
    teacher.train()
    distiller = Distiller(teacher, student, DistillationConfig(), TrainingConfig(str(tmp_path / "a"), max_steps=2))
    with caplog.at_level(logging.INFO, logger="knowledge_distill_util.engine"):
        distiller.train(tuple_loader(x, y))
        teacher.train()
        distiller.training_config.output_dir = str(tmp_path / "b")
        distiller.train(tuple_loader(x, y))
    assert not teacher.training
    assert sum("switched to eval mode" in r.message for r in caplog.records) == 1


def test_the_teacher_gets_no_gradient_and_does_not_change(tmp_path):
    x, y = random_data()
    teacher, student = pair(inputs=8, classes=3)
    before = {k: v.numpy().copy() for k, v in teacher.state_dict().items()}
    Distiller(teacher, student, DistillationConfig(), TrainingConfig(str(tmp_path), max_steps=3)).train(tuple_loader(x, y))
    for k, v in teacher.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])
    assert all(p.grad is None for p in teacher.parameters())


def test_default_optimizer_and_num_epochs(tmp_path):
    x, y = random_data(rows=40)
    teacher, student = pair(inputs=8, classes=3)
    cfg = TrainingConfig(str(tmp_path), num_epochs=2, learning_rate=1e-2)
    history = Distiller(teacher, student, DistillationConfig(), cfg).train(tuple_loader(x, y, batch_size=16))
    assert history["step"] == [1, 2, 3, 4, 5, 6]  # 3 batches per epoch (16, 16, 8)
    assert history["lr"] == [1e-2] * 6


def test_evaluate_accuracy_custom_metrics_and_regression():
    x, y = random_data()
    teacher, student = pair(inputs=8, classes=3)
    distiller = Distiller(teacher, student, DistillationConfig(), TrainingConfig("unused", max_steps=1))
    expected = float(np.mean(student(flow.tensor(x)).numpy().argmax(1) == y))
    assert distiller.evaluate(tuple_loader(x, y)) == {"accuracy": pytest.approx(expected)}
    assert distiller.evaluate(tuple_loader(x, y), metrics=lambda logits, labels: {"rows": len(labels)}) == {"rows": 64}
    teacher1, student1 = pair(inputs=8, classes=1)
    scores = np.zeros(64, dtype=np.float32)
    metrics = Distiller(teacher1, student1, DistillationConfig(), TrainingConfig("unused", max_steps=1)).evaluate(
        tuple_loader(x, scores))
    assert set(metrics) == {"mse"}
    assert student.training  # evaluate puts the student back in its mode
    for labels, message in ((y.astype(np.float32), "the labels are float32 but the student's 3 classes need integer"),
                            (y + 3, "the labels hold 5, outside the student's 3 classes 0..2")):
        with pytest.raises((TypeError, ValueError), match=message):  # not an accuracy of mismatched ids
            distiller.evaluate(tuple_loader(x, labels))
    assert distiller.evaluate(tuple_loader(x, y + 3), metrics=lambda logits, labels: {"max": int(labels.max())}) == {
        "max": 5}  # your own metrics read any labels
    ignored = y.copy()
    ignored[32:] = -100  # rows the hard-label loss ignores are not scored either
    expected_half = float(np.mean(student(flow.tensor(x[:32])).numpy().argmax(1) == y[:32]))
    assert distiller.evaluate(tuple_loader(x, ignored)) == {"accuracy": pytest.approx(expected_half)}
    with pytest.raises(ValueError, match="every label of the evaluation data is -100"):
        distiller.evaluate(tuple_loader(x, np.full(64, -100)))


def test_train_returns_and_never_exits(tmp_path):
    x, y = random_data()
    teacher, student = pair(inputs=8, classes=3)
    history = Distiller(teacher, student, DistillationConfig(), TrainingConfig(str(tmp_path), max_steps=1)).train(
        tuple_loader(x, y))
    assert history["step"] == [1] and history["eval"] == []
