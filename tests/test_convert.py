"""knowledge_distill_util.convert (``python -m knowledge_distill_util convert-checkpoint DIR [--trust]``):
models and checkpoints written by the previous version (``flow.save``: a pickle) become safetensors in place,
exactly; without --trust nothing is unpickled and the command refuses with one sentence (exit 2)."""
import json
import os
import subprocess
import sys

import oneflow as flow
import pytest

from knowledge_distill_util.cli.main import main
from knowledge_distill_util.models import LSTMStudentForSequenceClassification, load_model
from knowledge_distill_util.engine.checkpoint import load_checkpoint, resume_point
from pickle_plant import plant


def small_lstm(seed=0):
    flow.manual_seed(seed)
    return LSTMStudentForSequenceClassification(vocab_size=50, hidden_size=8, intermediate_size=6, embedding_size=5)


def assert_same_state(expected, got):
    assert list(expected) == list(got)
    for name, value in expected.items():
        assert got[name].dtype == value.dtype and got[name].numpy().tobytes() == value.numpy().tobytes(), name


def old_checkpoint(root, step):
    """A checkpoint folder as the previous version wrote it (flow.save directories, state.json, LATEST)."""
    flow.manual_seed(step)
    model = flow.nn.Linear(3, 2)
    optimizer = flow.optim.AdamW(model.parameters(), lr=1e-3)
    model(flow.ones(4, 3)).sum().backward()
    optimizer.step()
    path = os.path.join(root, f"step-{step:08d}")
    os.makedirs(path)
    flow.save(model.state_dict(), os.path.join(path, "model"))
    flow.save(optimizer.state_dict(), os.path.join(path, "optimizer"))
    with open(os.path.join(path, "state.json"), "w") as stream:
        json.dump({"flow_rng": flow.get_rng_state().numpy().tolist(), "use_graph": False, "step": step}, stream)
    with open(os.path.join(root, "LATEST"), "w") as stream:
        stream.write(f"step-{step:08d}")
    return path, model.state_dict(), optimizer.state_dict()


def test_a_weights_directory_written_by_the_old_code_converts_exactly(tmp_path, capsys):
    source = small_lstm()
    weights = str(tmp_path / "weights")
    flow.save(source.state_dict(), weights)  # the old save_model
    with pytest.raises(ValueError, match=r"convert-checkpoint"):
        load_model(small_lstm(seed=1), weights)
    assert main(["convert-checkpoint", weights]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: converting {weights} means unpickling 1 pickled_data file(s), and loading a "
                          f"pickle can run any code it contains; pass --trust only if") and err.count("\n") == 1
    assert "pickled_data" in os.listdir(weights)  # unchanged
    assert main(["convert-checkpoint", weights, "--trust"]) == 0
    assert os.listdir(weights) == ["model.safetensors"] and os.listdir(tmp_path) == ["weights"]
    target = load_model(small_lstm(seed=1), weights)
    assert_same_state(source.state_dict(), target.state_dict())
    assert main(["convert-checkpoint", weights, "--trust"]) == 0  # nothing left to convert


def test_a_run_directory_converts_its_weights_stages_and_checkpoints(tmp_path):
    run = tmp_path / "run"
    source, stage = small_lstm(), small_lstm(seed=4)
    flow.save(source.state_dict(), str(run / "weights"))
    flow.save(stage.state_dict(), str(run / "stage_intermediate" / "weights"))
    (run / "model_config.json").write_text('{"architecture": "lstm"}')
    root = str(run / "checkpoints" / "s")
    old_checkpoint(root, 2)
    path, model_state, optimizer_state = old_checkpoint(root, 4)
    state_json = open(os.path.join(path, "state.json"), "rb").read()
    assert main(["convert-checkpoint", str(run), "--trust"]) == 0
    assert_same_state(source.state_dict(), load_model(small_lstm(seed=1), run / "weights").state_dict())
    assert_same_state(stage.state_dict(), load_model(small_lstm(seed=1), run / "stage_intermediate" / "weights")
                      .state_dict())
    assert sorted(os.listdir(root)) == ["LATEST", "step-00000002", "step-00000004"]
    assert sorted(os.listdir(path)) == ["model", "optimizer", "state.json"]
    assert open(os.path.join(path, "state.json"), "rb").read() == state_json
    got_model, got_optimizer, state = load_checkpoint(path)
    assert_same_state(model_state, got_model)
    assert got_optimizer["param_groups"] == optimizer_state["param_groups"]  # tuples, floats, ints: equal
    assert type(got_optimizer["param_groups"][0]["_options"]["betas"]) is tuple
    for index, slots in optimizer_state["state"].items():
        if isinstance(slots, dict):
            assert_same_state(slots, got_optimizer["state"][index])
        else:
            assert got_optimizer["state"][index] == slots
    resumed = resume_point(root, use_graph=False)
    assert resumed.step == 4 and resumed.path == path


@pytest.mark.parametrize("which", ["step", "optimizer part"])
def test_a_single_step_directory(tmp_path, which):
    path, _, optimizer_state = old_checkpoint(str(tmp_path / "s"), 3)
    old_checkpoint(str(tmp_path / "s"), 5)
    target = path if which == "step" else os.path.join(path, "optimizer")
    assert main(["convert-checkpoint", target, "--trust"]) == 0
    assert os.listdir(os.path.join(path, "optimizer")) == ["optimizer.safetensors"]
    assert load_checkpoint(path)[1]["param_groups"] == optimizer_state["param_groups"]
    assert os.path.exists(tmp_path / "s" / "step-00000005" / "model" / "pickled_data")  # only the one named


def test_without_trust_a_planted_pickle_never_runs(tmp_path):
    marker = tmp_path / "MARKER"
    plant(tmp_path / "model" / "weights", marker)
    assert main(["convert-checkpoint", str(tmp_path / "model")]) == 2
    assert not marker.exists()


@pytest.mark.parametrize("args, message", [
    ([], r"takes one directory and optionally --trust, got \[\]"),
    (["a", "b"], r"takes one directory"),
    (["--bogus"], r"takes one directory"),
    (["{tmp}/absent"], r"absent is not a directory; pass a model directory"),
    (["{tmp}"], r"holds no saved model or checkpoint in OneFlow's pickle layout \(pickled_data\) within 3 levels"),
])
def test_bad_arguments_exit_2_with_one_sentence(tmp_path, capsys, args, message):
    assert main(["convert-checkpoint"] + [a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert __import__("re").search(message, err), err


def test_a_corrupt_old_directory_is_left_unchanged(tmp_path, capsys):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "pickled_data").write_bytes(b"\x80\x04truncated")
    assert main(["convert-checkpoint", str(tmp_path / "weights"), "--trust"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: could not convert {tmp_path / 'weights'} (") and "left unchanged" in err
    assert os.listdir(tmp_path / "weights") == ["pickled_data"] and os.listdir(tmp_path) == ["weights"]


def test_the_command_line(tmp_path):
    env = dict(os.environ, GLOG_minloglevel="3")
    usage = subprocess.run([sys.executable, "-m", "knowledge_distill_util", "--help"], capture_output=True, text=True,
                           env=env, timeout=120)
    assert usage.returncode == 0 and "convert-checkpoint  DIR [--trust]" in usage.stdout
    flow.save(small_lstm().state_dict(), str(tmp_path / "weights"))
    refused = subprocess.run([sys.executable, "-m", "knowledge_distill_util", "convert-checkpoint",
                              str(tmp_path / "weights")], capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 2 and "pass --trust only if" in refused.stderr and "Traceback" not in refused.stderr
    done = subprocess.run([sys.executable, "-m", "knowledge_distill_util", "convert-checkpoint",
                           str(tmp_path / "weights"), "--trust"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"converted {tmp_path / 'weights'}" in done.stderr
    assert os.listdir(tmp_path / "weights") == ["model.safetensors"]
