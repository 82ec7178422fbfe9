"""The output directory: exact resume after an interruption, one writer, no overwriting, the loss log."""
import csv
import json
import os

import numpy as np
import pytest

from knowledge_distill_util import Distiller, DistillationConfig, TrainingConfig

from .conftest import pair, random_data, tuple_loader

MATCHES = [{"layer_S": "body.1", "layer_T": "body.3", "feature": "output", "loss": "hidden_mse",
            "proj": ["linear", 32, 128]}]


class Interrupt(Exception):
    pass


def _adaptor_failing_at(step):
    calls = {"n": 0}

    def adaptor(batch, outputs):
        calls["n"] += 1
        if calls["n"] == step + 1:  # the probe forward is call 1, step s is call s + 1
            raise Interrupt(f"killed at step {step}")
        return {"logits": outputs}

    return adaptor


def _run(out, steps=10, resume=False, adaptor_S=None, dropout=0.0, use_graph=False):
    x, y = random_data(rows=48)
    teacher, student = pair(inputs=8, classes=3, dropout=dropout)
    config = DistillationConfig(temperature=2.0, hard_label_weight=0.5,
                                intermediate_matches=[dict(MATCHES[0], layer_S="body.2" if dropout else "body.1")])
    cfg = TrainingConfig(str(out), max_steps=steps, checkpoint_every=5, resume=resume, lr_schedule="linear",
                         warmup_steps=2, learning_rate=1e-2, use_graph=use_graph)
    distiller = Distiller(teacher, student, config, cfg, adaptor_S=adaptor_S)
    history = distiller.train(tuple_loader(x, y, batch_size=16, shuffle=True))  # 3 batches per epoch
    return distiller, history


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_an_interrupted_run_resumes_exactly(tmp_path, dropout):
    straight, straight_history = _run(tmp_path / "straight", dropout=dropout)
    with pytest.raises(Interrupt):
        _run(tmp_path / "resumed", adaptor_S=_adaptor_failing_at(7), dropout=dropout)  # checkpoint at step 5
    assert not (tmp_path / "resumed" / ".kdu.lock").exists()
    resumed, history = _run(tmp_path / "resumed", resume=True, dropout=dropout)
    assert history["step"] == [6, 7, 8, 9, 10]
    np.testing.assert_array_equal(history["loss"], straight_history["loss"][5:])
    np.testing.assert_array_equal(history["lr"], straight_history["lr"][5:])
    expected = straight.state_dict()
    for name, value in resumed.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), expected[name].numpy(), err_msg=name)
    with open(tmp_path / "resumed" / "losses.csv", newline="") as stream:
        assert [int(row["step"]) for row in csv.DictReader(stream)] == list(range(1, 11))


@pytest.mark.graph
def test_an_interrupted_graph_run_resumes_exactly(tmp_path, monkeypatch):
    from knowledge_distill_util.engine.loop import Loop

    straight, straight_history = _run(tmp_path / "straight", steps=7, use_graph=True)
    graph_step = Loop._graph_step

    def failing(self, weights):
        if self._step == 5:  # step 6: after the checkpoint of step 5
            raise Interrupt("killed at step 6")
        return graph_step(self, weights)

    monkeypatch.setattr(Loop, "_graph_step", failing)
    with pytest.raises(Interrupt):
        _run(tmp_path / "resumed", steps=7, use_graph=True)
    monkeypatch.setattr(Loop, "_graph_step", graph_step)
    resumed, history = _run(tmp_path / "resumed", steps=7, use_graph=True, resume=True)
    assert history["step"] == [6, 7]
    np.testing.assert_allclose(history["loss"], straight_history["loss"][5:], rtol=1e-6)
    np.testing.assert_allclose(history["lr"], straight_history["lr"][5:], rtol=1e-9)
    expected = straight.state_dict()
    for name, value in resumed.state_dict().items():
        np.testing.assert_allclose(value.numpy(), expected[name].numpy(), rtol=1e-6, err_msg=name)


def test_resume_without_a_checkpoint_starts_from_the_beginning(tmp_path):
    _, history = _run(tmp_path, steps=2, resume=True)
    assert history["step"] == [1, 2]


def test_a_fresh_run_refuses_a_directory_with_checkpoints(tmp_path):
    _run(tmp_path, steps=2)
    before = sorted(os.listdir(tmp_path / "checkpoints"))
    with pytest.raises(ValueError, match="already holds the checkpoints of an earlier run; continue it with "
                                         "TrainingConfig\\(resume=True\\)"):
        _run(tmp_path, steps=2)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == before


def test_one_writer_per_directory(tmp_path):
    (tmp_path / ".kdu.lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename,
                                                   "started": "now"}))
    with pytest.raises(ValueError, match=f"another run \\(pid {os.getpid()} .* is writing to {tmp_path}"):
        _run(tmp_path, steps=1)
    assert sorted(os.listdir(tmp_path)) == [".kdu.lock"]


def test_the_checkpoint_holds_student_projections_optimizer_step_and_rng(tmp_path):
    from knowledge_distill_util.engine.checkpoint import latest_checkpoint, load_checkpoint

    distiller, _ = _run(tmp_path, steps=3)
    model_state, optimizer_state, state = load_checkpoint(latest_checkpoint(str(tmp_path / "checkpoints")))
    assert set(model_state) == set(distiller.state_dict())
    assert any(k.startswith("matches.0.inner.projections") for k in model_state)
    assert optimizer_state is not None
    assert state["step"] == 3 and state["epoch"] == 0 and state["done"] == 3
    assert {"flow_rng", "numpy_rng", "python_rng"} <= set(state)


def test_an_unreadable_checkpoint_stops_with_one_sentence_and_is_kept(tmp_path):
    _run(tmp_path, steps=2)
    latest = tmp_path / "checkpoints" / (tmp_path / "checkpoints" / "LATEST").read_text()
    (latest / "state.json").write_text("{not json")
    with pytest.raises(ValueError, match="is unreadable .*nothing was deleted"):
        _run(tmp_path, steps=4, resume=True)
    assert (latest / "state.json").read_text() == "{not json"


def _resume_with(out, student=None, optimizer=None, steps=4):
    x, y = random_data(rows=48)
    teacher, default_student = pair(inputs=8, classes=3)
    cfg = TrainingConfig(str(out), max_steps=steps, resume=True)
    distiller = Distiller(teacher, student or default_student, DistillationConfig(hard_label_weight=1.0), cfg)
    return distiller.train(tuple_loader(x, y), optimizer=optimizer and optimizer(distiller.parameters()))


def test_a_resume_that_does_not_fit_the_checkpoint_says_why_in_one_line_and_keeps_it(tmp_path):
    from .conftest import MLP

    x, y = random_data(rows=48)
    teacher, student = pair(inputs=8, classes=3)
    config = DistillationConfig(hard_label_weight=1.0)
    Distiller(teacher, student, config, TrainingConfig(str(tmp_path), max_steps=2)).train(tuple_loader(x, y))
    before = sorted(os.listdir(tmp_path / "checkpoints"))
    cases = [
        (dict(student=MLP([8, 6, 3])), "does not fit this student and its projections \\(size mismatch for "
                                       "student.body.0.weight: .*; resume with the same models"),
        (dict(student=__import__("oneflow").nn.Sequential(MLP([8, 32, 3]))),  # other names: two of each list, the count
         'does not fit this student and its projections \\(Missing key\\(s\\) in state_dict: "student.0.body.0.weight", '
         '"student.0.body.0.bias" and 2 more; Unexpected key\\(s\\) in state_dict: "student.body.0.weight", '
         '"student.body.0.bias" and 2 more\\); resume with the same models'),
        (dict(optimizer=lambda params: __import__("oneflow").optim.SGD(params, lr=0.1)),
         "holds an optimizer state that does not fit this SGD \\(parameter group 0 was saved by another optimizer, "
         "with options amsgrad, betas, .* that this one lacks and no dampening, .*\\); resume with the optimizer"),
        (dict(steps=1), "the newest checkpoint, .*step-00000002, is at step 2, past this run's last step 1; resume "
                        "with at least 2 steps"),
    ]
    for changes, message in cases:
        with pytest.raises(ValueError, match=message) as caught:
            _resume_with(tmp_path, **changes)
        assert "\n" not in str(caught.value)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == before
    assert _resume_with(tmp_path)["step"] == [3, 4]  # the same models and optimizer resume


def test_a_log_line_every_log_every_steps(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="knowledge_distill_util.engine"):
        x, y = random_data(rows=48)
        teacher, student = pair(inputs=8, classes=3)
        Distiller(teacher, student, DistillationConfig(), TrainingConfig(str(tmp_path), max_steps=5, log_every=2)).train(
            tuple_loader(x, y))
    lines = [r.message for r in caplog.records if r.message.startswith("step ")]
    assert [line.split(":")[0] for line in lines] == ["step 2/5", "step 4/5", "step 5/5"]
    assert lines[0].startswith("step 2/5: loss ") and "kl_div" in lines[0]


def test_an_output_dir_under_a_file_is_refused_before_the_first_step(tmp_path):
    (tmp_path / "taken").write_text("a user's file")
    for field, value in (("output_dir", str(tmp_path / "taken")), ("output_dir", str(tmp_path / "taken" / "run")),
                         ("checkpoint_dir", str(tmp_path / "taken" / "ckpt"))):
        teacher, student = pair(inputs=8, classes=3)
        out = str(tmp_path / "out") if field == "checkpoint_dir" else value
        cfg = TrainingConfig(out, max_steps=1, **({"checkpoint_dir": value} if field == "checkpoint_dir" else {}))
        x, y = random_data(rows=16)
        with pytest.raises(ValueError, match=f"TrainingConfig.{field} '{value}' cannot be a directory: "
                                             f"'{tmp_path / 'taken'}' is a file; choose another {field}"):
            Distiller(teacher, student, DistillationConfig(hard_label_weight=1.0), cfg).train(tuple_loader(x, y))
    assert (tmp_path / "taken").read_text() == "a user's file" and not (tmp_path / "out").exists()
