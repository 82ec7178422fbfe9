"""Module outputs by path: wrong paths (closest names), modules that never run, tuple outputs, graph-safe wrap."""
import oneflow as flow
import oneflow.nn as nn
import pytest

from knowledge_distill_util import Distiller, DistillationConfig, TrainingConfig
from knowledge_distill_util.engine.taps import FeatureTaps, resolve_module

from .conftest import pair, random_data, tuple_loader


def _match(layer_s="body.1", layer_t="body.3", **extra):
    return DistillationConfig(intermediate_matches=[dict(layer_S=layer_s, layer_T=layer_t, feature="output",
                                                         loss="hidden_mse", proj=["linear", 32, 128], **extra)])


def test_a_path_that_does_not_exist_names_the_closest(tmp_path):
    teacher, student = pair()
    with pytest.raises(ValueError) as error:
        Distiller(teacher, student, _match(layer_s="body.l"), TrainingConfig(str(tmp_path / "out"), max_steps=1))
    message = str(error.value)
    assert message.startswith("the student has no module 'body.l'; the closest module paths are ")
    assert "'body.1'" in message
    with pytest.raises(ValueError, match="the teacher has no module 'body.33'"):
        Distiller(teacher, student, _match(layer_t="body.33"), TrainingConfig(str(tmp_path / "out"), max_steps=1))
    with pytest.raises(ValueError, match="has no module ''"):
        resolve_module(student, "", "student")
    assert not (tmp_path / "out").exists()


class Skips(nn.Module):
    """A model with a module its forward never calls."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
        self.unused = nn.Linear(8, 32)

    def forward(self, x):
        return self.body(x)


def test_a_hooked_module_that_never_ran_fails_before_anything_is_written(tmp_path):
    x, y = random_data()
    teacher, _ = pair(inputs=8, classes=3)
    config = _match(layer_s="unused")
    distiller = Distiller(teacher, Skips(), config, TrainingConfig(str(tmp_path / "out"), max_steps=1))
    with pytest.raises(ValueError, match="the student's module 'unused' did not run in the forward pass"):
        distiller.train(tuple_loader(x, y))
    assert not (tmp_path / "out").exists()
    assert "forward" not in Skips().unused.__dict__ and "forward" not in distiller.student.unused.__dict__


def test_taps_capture_the_first_item_of_a_tuple_and_are_removed():
    lstm = nn.Sequential()
    lstm.add_module("rnn", nn.LSTM(4, 5, batch_first=True))
    taps = FeatureTaps(lstm, ["rnn"], "student")
    with taps:
        out, _ = lstm.rnn(flow.ones(2, 3, 4))
        assert taps.get("rnn") is out
    assert "forward" not in lstm.rnn.__dict__ and taps.outputs == {}


def test_a_module_returning_no_tensor_is_refused():
    class Words(nn.Module):
        def forward(self, x):
            return "text"

    model = nn.Sequential()
    model.add_module("w", Words())
    with FeatureTaps(model, ["w"], "teacher"), pytest.raises(TypeError, match="returned a str, not a tensor"):
        model.w(flow.ones(1))


def test_tapping_a_module_twice_is_refused():
    model = nn.Sequential(nn.Linear(2, 2))
    with FeatureTaps(model, ["0"], "student"):
        with pytest.raises(ValueError, match="already has its forward replaced"):
            FeatureTaps(model, ["0"], "teacher").__enter__()
