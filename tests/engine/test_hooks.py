"""The Distiller's general features the recipes train through: an objective of one's own, step inputs,
epoch-end and per-step hooks, stage files, no per-epoch seeding, the recipes' earlier checkpoint layout,
and the non-finite checks (engine/hooks.py, engine/run.py, engine/loop.py)."""
import os
from collections import OrderedDict

import numpy as np
import oneflow as flow
import oneflow.nn as nn
import oneflow.nn.functional as F
import pytest

from knowledge_distill_util import Distiller, DistillationConfig, TrainingConfig
from knowledge_distill_util.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from knowledge_distill_util.engine.hooks import NonFiniteLossError, non_finite_weight

from .conftest import pair, random_data, tuple_loader


class LabelsOnly(nn.Module):
    """A loss of one's own: CE of the student, plus ``scale`` (a step input) times 0 to show it arrived."""

    def __init__(self, student, seen):
        super().__init__()
        self.student, self.seen = student, seen

    def forward(self, batch, weights):
        self.seen.append(batch.kwargs.get("scale"))
        logits = self.student(*batch.args)
        ce = F.cross_entropy(logits, batch.labels)
        return OrderedDict(loss=ce, ce=ce)


class Inputs:
    """Step inputs drawn from a generator of their own (its state checkpointed)."""

    def __init__(self):
        self.rng = np.random.default_rng(5)

    def step_inputs(self, step, total):
        return {"scale": self.rng.random(1).astype(np.float32)}

    def rng_state(self):
        return self.rng.bit_generator.state

    def set_rng_state(self, state):
        self.rng.bit_generator.state = state


class Epochs:
    """An epoch-end hook with state: the (epoch, step) pairs it saw."""

    def __init__(self):
        self.calls = []

    def __call__(self, epoch, step):
        self.calls.append([epoch, step])

    def state(self):
        return {"calls": self.calls}

    def load_state(self, state):
        self.calls = list(state["calls"]) if state else []


def _run(out, steps=6, resume=False, stop=None, **extra):
    x, y = random_data(rows=32, inputs=8, classes=3)
    _, student = pair(inputs=8, classes=3, seed=1)
    seen, inputs, epochs, calls = [], Inputs(), Epochs(), []
    values = dict(output_dir=str(out), max_steps=steps, checkpoint_every=2, resume=resume, stage="s",
                  checkpoint_dir=str(out / "ck"), lock=False, seed_epochs=False)
    train = TrainingConfig(**dict(values, **extra))
    distiller = Distiller(None, student, DistillationConfig(), train, objective=LabelsOnly(student, seen),
                          step_inputs=inputs)

    def on_step(step, total, terms):
        calls.append((step, total, sorted(terms)))
        if step == stop:
            raise KeyboardInterrupt  # killed after this step (and its checkpoint, if any)

    try:
        history = distiller.train(tuple_loader(x, y, batch_size=8), scheduler=None, on_epoch_end=epochs,
                                  on_step=on_step)
    except KeyboardInterrupt:
        history = None
    return dict(student=student, seen=seen, epochs=epochs, calls=calls, history=history, inputs=inputs)


def test_objective_step_inputs_and_hooks(tmp_path):
    done = _run(tmp_path / "a")
    assert sorted(os.listdir(tmp_path / "a")) == ["ck", "s_losses.csv", "s_losses.png"]  # stage names, no lock
    assert done["history"]["step"] == [1, 2, 3, 4, 5, 6] and len(done["history"]["ce"]) == 6
    # step 0's inputs in the probe leave the generator as it was: the 6 steps get the first 6 draws
    drawn = np.random.default_rng(5).random(7)
    assert [float(s[0]) for s in done["seen"][1:]] == pytest.approx(list(drawn[:6].astype(np.float32)))
    assert all(isinstance(s, np.ndarray) for s in done["seen"])      # eager: as given
    assert done["epochs"].calls == [[0, 4], [1, 6]]                  # 4 batches per epoch; and the last step
    assert done["calls"] == [(s, 6, ["ce", "loss"]) for s in range(1, 7)]
    state = load_checkpoint(latest_checkpoint(str(tmp_path / "a" / "ck")))[2]
    assert state["epoch_end"] == {"calls": [[0, 4], [1, 6]]} and "bit_generator" in state["step_inputs_rng"]


def test_resume_restores_the_step_inputs_and_the_hook(tmp_path):
    full = _run(tmp_path / "full")
    _run(tmp_path / "cut", stop=5)                                   # killed after step 5: checkpoint of step 4
    resumed = _run(tmp_path / "cut", resume=True)
    assert resumed["history"]["step"] == [5, 6]
    assert [float(s[0]) for s in resumed["seen"][1:]] == [float(s[0]) for s in full["seen"][5:]]
    assert resumed["epochs"].calls == full["epochs"].calls
    for a, b in zip(full["student"].parameters(), resumed["student"].parameters()):
        assert np.array_equal(a.numpy(), b.numpy())


def test_overwrite_clears_and_the_default_refuses(tmp_path):
    _run(tmp_path / "a", steps=2)
    with pytest.raises(ValueError, match="already holds the checkpoints of an earlier run"):
        _run(tmp_path / "a", steps=2)
    _run(tmp_path / "a", steps=2, overwrite=True)


def test_no_epoch_seeding_leaves_the_global_generator_alone(tmp_path):
    pair(inputs=8, classes=3, seed=1)                                # what _run's models draw, nothing after
    expected = flow.rand(3).numpy()
    _run(tmp_path / "a", steps=5)                                    # crosses an epoch, no dropout
    assert np.array_equal(flow.rand(3).numpy(), expected)
    _run(tmp_path / "b", steps=5, seed_epochs=True)                  # the Distiller's default reseeds per epoch
    assert not np.array_equal(flow.rand(3).numpy(), expected)


def test_a_checkpoint_of_the_recipes_earlier_trainer_resumes(tmp_path):
    """The student's state without ``student.`` and a state without the data position (step 2 of 4 per epoch)."""
    _run(tmp_path / "new", stop=3)                                   # checkpoint of step 2
    model, optimizer, state = load_checkpoint(latest_checkpoint(str(tmp_path / "new" / "ck")))
    old = tmp_path / "old"
    save_checkpoint(str(old / "ck"), 2, {k[len("student."):]: v for k, v in model.items()}, optimizer,
                    {k: state[k] for k in ("flow_rng", "use_graph", "step_inputs_rng", "epoch_end")})
    a, b = _run(tmp_path / "new", resume=True), _run(old, resume=True)
    assert b["history"]["loss"] == a["history"]["loss"] and b["history"]["step"] == [3, 4, 5, 6]


def test_a_nan_loss_and_nan_weights(tmp_path):
    message = r"^stage s: the loss of the first batch is nan before any update \(loss nan, ce nan\); check the inputs"
    with pytest.raises(NonFiniteLossError, match=message) as caught:
        x, y = random_data(rows=16, inputs=8, classes=3)
        _, student = pair(inputs=8, classes=3)
        with flow.no_grad():
            student.body[0].weight[0, 0] = float("nan")
        train = TrainingConfig(output_dir=str(tmp_path), max_steps=2, stage="s")
        Distiller(None, student, DistillationConfig(), train, objective=LabelsOnly(student, [])).train(
            tuple_loader(x, y, batch_size=8))
    assert caught.value.step == 0 and caught.value.weight is None and set(caught.value.terms) == {"loss", "ce"}
    assert os.listdir(tmp_path) == []  # refused before anything was written
    linear = nn.Linear(2, 2)
    assert non_finite_weight(linear.named_parameters()) is None
    with flow.no_grad():
        linear.bias[1] = float("inf")
    assert non_finite_weight(linear.named_parameters()) == "bias"


def test_an_objective_must_be_a_module_and_no_teacher_needs_one(tmp_path):
    _, student = pair(inputs=8, classes=3)
    train = TrainingConfig(output_dir=str(tmp_path), max_steps=2)
    with pytest.raises(TypeError, match="objective must be an nn.Module"):
        Distiller(None, student, DistillationConfig(), train, objective=lambda batch, weights: {})
    with pytest.raises(ValueError, match="teacher is None but logit_weight is 1.0; give a teacher"):
        Distiller(None, student, DistillationConfig(), train).train(tuple_loader(*random_data(8, 8, 3), 4))
    assert not os.listdir(tmp_path)  # refused before anything was written
    with pytest.raises(TypeError, match=r"step_inputs must have a method step_inputs\(step, total\)"):
        Distiller(None, student, DistillationConfig(), train, objective=LabelsOnly(student, []), step_inputs=3)
