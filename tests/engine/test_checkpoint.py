"""Atomic checkpoints: an interrupted write is ignored and cleaned up; safetensors + JSON with an exact round
trip and no pickle (an old pickle checkpoint is refused naming convert-checkpoint); LATEST and step-* entries
never lead outside the run's checkpoint folder."""
import json
import os
import shutil

import oneflow as flow
import pytest

from conftest import same_state
from knowledge_distill_util.engine.checkpoint import (resume_point, latest_checkpoint, load_checkpoint,
                                                        save_checkpoint)
from knowledge_distill_util.config.schema import ConfigError
from pickle_plant import plant


def test_checkpoint_ignores_an_interrupted_write(tmp_path):
    root = str(tmp_path)
    save_checkpoint(root, 2, {"w": flow.ones(2)}, None, {})
    os.makedirs(os.path.join(root, ".step-00000004.partial"))      # a write killed before os.replace
    assert latest_checkpoint(root) == os.path.join(root, "step-00000002")
    save_checkpoint(root, 4, {"w": flow.zeros(2)}, None, {})
    assert sorted(os.listdir(root)) == ["LATEST", "step-00000004"]


# --- safetensors + JSON, exact round trip, no pickle -------------------------------------------------
def _trained_linear():
    flow.manual_seed(0)
    model = flow.nn.Linear(3, 2)
    optimizer = flow.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.99))
    model(flow.ones(4, 3)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_checkpoint_layout_and_exact_round_trip(tmp_path, no_unpickling):
    model, optimizer = _trained_linear()
    path = save_checkpoint(str(tmp_path), 3, model.state_dict(), optimizer.state_dict(), {"flow_rng": [1, 2]})
    assert sorted(os.listdir(path)) == ["model", "optimizer", "state.json"]
    assert os.listdir(os.path.join(path, "model")) == ["model.safetensors"]
    assert os.listdir(os.path.join(path, "optimizer")) == ["optimizer.safetensors"]
    model_state, optimizer_state, state = load_checkpoint(path)
    same_state(dict(model.state_dict()), dict(model_state))
    expected = optimizer.state_dict()
    same_state(expected, optimizer_state)  # int keys, tuples (betas), bools, floats: same types and values
    assert optimizer_state["param_groups"][0]["_options"]["betas"] == (0.8, 0.99)
    assert state == {"flow_rng": [1, 2], "step": 3}
    fresh = flow.optim.AdamW(flow.nn.Linear(3, 2).parameters(), lr=1e-3)
    fresh.load_state_dict(optimizer_state)  # loadable as before
    assert save_checkpoint(str(tmp_path), 4, model_state, None, {}).endswith("step-00000004")
    assert load_checkpoint(os.path.join(str(tmp_path), "step-00000004"))[1] is None


def _legacy_checkpoint(root, step=2, plant_marker=None):
    """A checkpoint as the previous version wrote it: flow.save directories (or a planted pickle)."""
    model, optimizer = _trained_linear()
    path = os.path.join(root, f"step-{step:08d}")
    os.makedirs(path)
    flow.save(model.state_dict(), os.path.join(path, "model"))
    flow.save(optimizer.state_dict(), os.path.join(path, "optimizer"))
    if plant_marker is not None:
        plant(os.path.join(path, "model"), plant_marker)
    with open(os.path.join(path, "state.json"), "w") as stream:
        json.dump({"flow_rng": flow.get_rng_state().numpy().tolist(), "use_graph": False, "step": step}, stream)
    with open(os.path.join(root, "LATEST"), "w") as stream:
        stream.write(os.path.basename(path))
    return path, model, optimizer


@pytest.mark.parametrize("planted", [False, True], ids=["flow.save", "planted-pickle"])
def test_an_old_pickle_checkpoint_is_refused_on_resume_naming_the_convert_command(tmp_path, planted):
    root = str(tmp_path / "checkpoints" / "s")
    marker = tmp_path / "MARKER"
    path, _, _ = _legacy_checkpoint(root, plant_marker=marker if planted else None)
    with pytest.raises(ValueError, match=r"old pickle layout"):
        load_checkpoint(path)
    with pytest.raises(ConfigError, match=rf"checkpoint {path} is in OneFlow's old pickle layout \(pickled_data\), "
                                          rf".*can run code; .*: python -m knowledge_distill_util convert-checkpoint "
                                          rf"{root}$"):
        resume_point(root, use_graph=False)
    assert not marker.exists()
    assert os.path.isfile(os.path.join(path, "model", "pickled_data"))  # nothing deleted


# --- LATEST and step-* stay inside the checkpoint folder ------------------------------------------
def _two_runs(tmp_path):
    mine, other = str(tmp_path / "mine" / "checkpoints" / "s"), str(tmp_path / "other" / "checkpoints" / "s")
    save_checkpoint(mine, 2, {"w": flow.ones(2)}, None, {"flow_rng": flow.get_rng_state().numpy().tolist()})
    save_checkpoint(other, 9, {"w": flow.zeros(2)}, None, {"flow_rng": flow.get_rng_state().numpy().tolist()})
    return mine, other


@pytest.mark.parametrize("latest", ["absolute", "../x", "symlink"])
def test_latest_naming_another_runs_checkpoint_is_ignored(tmp_path, caplog, latest):
    mine, other = _two_runs(tmp_path)
    theirs = os.path.join(other, "step-00000009")
    if latest == "absolute":
        name = theirs
    elif latest == "../x":
        name = os.path.relpath(theirs, mine)
        assert name.startswith("..") and os.path.isfile(os.path.join(mine, name, "state.json"))
    else:
        name = "step-00000010"
        os.symlink(theirs, os.path.join(mine, name))
    with open(os.path.join(mine, "LATEST"), "w") as stream:
        stream.write(name)
    assert latest_checkpoint(mine) is None
    assert "ignoring it" in caplog.text and "resumes only from its own checkpoints" in caplog.text
    resumed = resume_point(mine, use_graph=False)
    assert resumed.path == os.path.join(mine, "step-00000002") and resumed.step == 2
    assert resumed.model_state["w"].numpy().tolist() == [1.0, 1.0]
    assert os.path.isdir(theirs)


def test_a_step_symlink_leading_outside_is_not_a_candidate(tmp_path, caplog):
    mine, other = _two_runs(tmp_path)
    os.symlink(os.path.join(other, "step-00000009"), os.path.join(mine, "step-00000099"))
    os.remove(os.path.join(mine, "LATEST"))
    resumed = resume_point(mine, use_graph=False)
    assert resumed.path == os.path.join(mine, "step-00000002")
    assert "step-00000099 leads outside" in caplog.text
    save_checkpoint(mine, 3, {"w": flow.ones(2)}, None, {})  # the cleanup removes neither the link nor its target
    assert sorted(os.listdir(mine)) == ["LATEST", "step-00000003", "step-00000099"]
    assert os.path.isfile(os.path.join(other, "step-00000009", "state.json"))


def test_a_symlink_inside_the_folder_is_followed(tmp_path):
    mine, _ = _two_runs(tmp_path)
    os.symlink(os.path.join(mine, "step-00000002"), os.path.join(mine, "step-00000005"))
    with open(os.path.join(mine, "LATEST"), "w") as stream:
        stream.write("step-00000005")
    assert latest_checkpoint(mine) == os.path.join(mine, "step-00000005")


def test_a_part_linked_outside_the_checkpoint_is_not_read(tmp_path, caplog):
    mine, other = _two_runs(tmp_path)
    save_checkpoint(mine, 3, {"w": flow.ones(2)}, None, {"flow_rng": flow.get_rng_state().numpy().tolist()})
    model = os.path.join(mine, "step-00000003", "model")
    shutil.rmtree(model)
    os.symlink(os.path.join(other, "step-00000009", "model"), model)
    with pytest.raises(ValueError, match=r"step-00000003/model/model.safetensors leads outside the checkpoint"):
        load_checkpoint(os.path.join(mine, "step-00000003"))
