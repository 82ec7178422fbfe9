"""knowledge_distill_util.models.init: save_model/load_model/read_state write and read safetensors only; a
directory in OneFlow's old pickle layout is refused before anything in it is unpickled (a planted pickle
never runs). Round trips and shape/name errors of BERTs: tests/models/test_bert.py."""
import os

import numpy as np
import oneflow as flow
import pytest

from knowledge_distill_util.models import LSTMStudentForSequenceClassification, load_model, save_model
from knowledge_distill_util.models.init import WEIGHTS_FILE, read_state
from pickle_plant import plant

CONVERT = r"python -m knowledge_distill_util convert-checkpoint "


def small_lstm(seed=0):
    flow.manual_seed(seed)
    return LSTMStudentForSequenceClassification(vocab_size=50, hidden_size=8, intermediate_size=6, embedding_size=5)


def test_the_directory_holds_one_safetensors_file_read_without_pickle(tmp_path, no_unpickling):
    source = small_lstm()
    save_model(source, tmp_path / "weights")
    assert os.listdir(tmp_path / "weights") == [WEIGHTS_FILE]
    state = read_state(tmp_path / "weights")
    expected = source.state_dict()
    assert list(state) == list(expected)
    for name, value in expected.items():
        assert state[name].dtype == value.dtype and state[name].numpy().tobytes() == value.numpy().tobytes(), name
    target = load_model(small_lstm(seed=3), tmp_path / "weights")
    for name, value in target.state_dict().items():
        assert value.numpy().tobytes() == expected[name].numpy().tobytes(), name


def test_the_old_pickle_layout_is_refused_naming_the_convert_command(tmp_path, no_unpickling):
    path = tmp_path / "weights"
    flow.save(small_lstm().state_dict(), str(path))  # what save_model wrote before this format
    for call in (lambda: load_model(small_lstm(), path), lambda: read_state(path)):
        with pytest.raises(ValueError, match=rf"saved model {path} is in OneFlow's old pickle layout \(pickled_data\), "
                                             rf"which this package no longer reads because unpickling a file can run "
                                             rf"code; .*{CONVERT}{path}$"):
            call()


def test_a_planted_pickle_does_not_run_on_load(tmp_path):
    marker = tmp_path / "MARKER"
    plant(tmp_path / "planted", marker)
    with pytest.raises(ValueError, match=rf"old pickle layout .*{CONVERT}"):
        load_model(small_lstm(), tmp_path / "planted")
    assert not marker.exists()
    save_model(small_lstm(), tmp_path / "new")  # a planted pickle beside the new file is never opened
    os.replace(tmp_path / "planted" / "pickled_data", tmp_path / "new" / "pickled_data")
    load_model(small_lstm(), tmp_path / "new")
    assert not marker.exists()


def test_the_planted_pickle_is_real(tmp_path):
    """The plant used by every 'does not run' test creates its marker when OneFlow's loader reads it."""
    marker = tmp_path / "MARKER"
    plant(tmp_path / "planted", marker)
    flow.load(str(tmp_path / "planted")).close()  # it returns the file object its pickle opened
    assert marker.exists()


def test_a_missing_or_foreign_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=rf"saved model '{tmp_path / 'empty'}' has no {WEIGHTS_FILE}; write it with"):
        load_model(small_lstm(), tmp_path / "empty")
    from knowledge_distill_util._state import write_state

    write_state(tmp_path / "nested" / WEIGHTS_FILE, {"a": {"b": flow.ones(1)}})
    with pytest.raises(ValueError, match=r"holds a dict, not a state dict of tensors"):
        read_state(tmp_path / "nested")


def test_save_model_refuses_a_state_it_cannot_write_before_touching_the_directory(tmp_path):
    model = small_lstm()
    save_model(model, tmp_path / "weights")
    before = (tmp_path / "weights" / WEIGHTS_FILE).read_bytes()
    model.bad = flow.nn.Module()
    model.state_dict = lambda: {"w": np.zeros(2)}
    with pytest.raises(TypeError, match=r"w is a ndarray"):
        save_model(model, tmp_path / "weights")
    assert (tmp_path / "weights" / WEIGHTS_FILE).read_bytes() == before and os.listdir(tmp_path) == ["weights"]


def test_the_snapshot_reader_points_an_old_layout_to_the_convert_command(tmp_path):
    from knowledge_distill_util.models.snapshot import list_snapshot_variables

    plant(tmp_path / "weights", tmp_path / "MARKER")  # a pickle without tensor folders
    with pytest.raises(ValueError, match=rf"old pickle layout .*{CONVERT}{tmp_path / 'weights'} --trust"):
        list_snapshot_variables(str(tmp_path / "weights"))
    assert not (tmp_path / "MARKER").exists()
    save_model(small_lstm(), tmp_path / "new")
    with pytest.raises(ValueError, match=r"save_model directories \(model.safetensors\) are read with models.load_model"):
        list_snapshot_variables(str(tmp_path / "new"))
