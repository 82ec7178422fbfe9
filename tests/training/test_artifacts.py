"""knowledge_distill_util.models.artifacts (issue 16): model_config.json typed and bounded, one sentence naming
the file; a teacher, a --student_model or a checkpoint in OneFlow's old pickle layout stops kdu-train with one
sentence naming convert-checkpoint, and a planted pickle in it never runs (its marker file is never created)."""
import json
import os
import shutil

import pytest

from knowledge_distill_util.models.artifacts import MODEL_CONFIG, load_trained, read_meta, save_trained
from knowledge_distill_util.config.schema import ConfigError
from pickle_plant import plant
from training.conftest import recipe_args, tiny_bert, train_cli


@pytest.fixture
def saved(tmp_path):
    return save_trained(tiny_bert(1), str(tmp_path / "model"), {"recipe": "teacher"})


def _edit(directory, **changes):
    path = os.path.join(directory, MODEL_CONFIG)
    meta = json.load(open(path))
    meta["config"].update(changes)
    json.dump(meta, open(path, "w"))
    return path


@pytest.mark.parametrize("key, value, message", [
    ("hidden_size", "32", r"hidden_size in .*model_config\.json must be a positive integer, got '32' \(str\)"),
    ("hidden_size", True, r"hidden_size in .*model_config\.json must be a positive integer, got True \(bool\)"),
    ("hidden_size", 32.5, r"hidden_size in .*model_config\.json must be a positive integer, got 32\.5 \(float\)"),
    ("num_hidden_layers", -2, r"num_hidden_layers in .*model_config\.json must be a positive integer, got -2"),
    ("max_position_embeddings", 10 ** 12, r"max_position_embeddings in .*model_config\.json must be at most 65536, "
                                          r"got 1000000000000; fix the value, or set KDU_ALLOW_LARGE_MODELS=1"),
    ("hidden_dropout_prob", 1.5, r"hidden_dropout_prob in .*model_config\.json must be a number in \[0, 1\)"),
])
def test_bad_sizes_in_model_config_name_the_file(saved, key, value, message):
    _edit(saved, **{key: value})
    with pytest.raises(ConfigError, match=message + r".*; retrain the model or restore the file$"):
        read_meta(saved)
    with pytest.raises(ConfigError, match=message):
        load_trained(saved)


def test_a_config_that_is_not_an_object_is_named(saved):
    path = os.path.join(saved, MODEL_CONFIG)
    meta = json.load(open(path))
    json.dump(dict(meta, config=[1, 2]), open(path, "w"))
    with pytest.raises(ConfigError, match=r"model_config\.json: 'config' must be an object of constructor arguments, "
                                          r"got a JSON list"):
        read_meta(saved)
    json.dump([meta], open(path, "w"))
    with pytest.raises(ConfigError, match=r"model_config\.json holds a JSON list, not an object"):
        read_meta(saved)


def test_an_override_out_of_range_is_a_config_error(saved):
    with pytest.raises(ConfigError, match=r"^model .*: hidden_dropout_prob must be a number in \[0, 1\), got 2"):
        load_trained(saved, hidden_dropout_prob=2.0)


def test_a_good_model_config_loads(saved):
    model, meta = load_trained(saved)
    assert meta["recipe"] == "teacher" and model.config["num_hidden_layers"] == 1


def test_a_huge_position_table_in_a_teacher_is_one_sentence_on_the_command_line(workspace, tmp_path):
    """Before: one sentence, then a C++ ``terminate ... allocate failed`` and SIGABRT."""
    import shutil

    from training.conftest import recipe_args, train_cli

    teacher = tmp_path / "teacher"
    shutil.copytree(workspace["teacher"], teacher)
    _edit(str(teacher), max_position_embeddings=10 ** 12)
    args = recipe_args(workspace, "kd", "huge_positions")
    args[args.index("--teacher_model") + 1] = teacher
    done = train_cli(*args)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "terminate" not in done.stderr
    assert f"max_position_embeddings in {teacher}/model_config.json must be at most 65536" in done.stderr
    assert not os.path.exists(workspace["root"] / "huge_positions" / "model" / "run_config.json")


CONVERT = "python -m knowledge_distill_util convert-checkpoint"


def planted_copy(workspace, tmp_path):
    """A copy of the workspace's teacher whose weights/ is a planted pickle; returns (directory, marker)."""
    directory, marker = tmp_path / "planted_model", tmp_path / "MARKER"
    shutil.copytree(workspace["teacher"], directory)
    plant(directory / "weights", marker)
    return directory, marker


def test_load_trained_refuses_the_old_layout(workspace, tmp_path):
    directory, marker = planted_copy(workspace, tmp_path)
    with pytest.raises(ConfigError, match=rf"^teacher {directory} is in OneFlow's old pickle layout \(pickled_data\), "
                                          rf"which this package no longer reads because unpickling a file can run "
                                          rf"code; .*: {CONVERT} {directory}$"):
        load_trained(str(directory), "teacher")
    assert not marker.exists()


@pytest.mark.parametrize("flag", ["--teacher_model", "--student_model"])
def test_kdu_train_refuses_an_old_layout_model(workspace, tmp_path, flag):
    directory, marker = planted_copy(workspace, tmp_path)
    args = recipe_args(workspace, "kd", f"planted_{flag[2:]}")
    if flag == "--teacher_model":
        args[args.index(flag) + 1] = directory
    else:  # the kd recipe's BERT student starts from the planted copy (refused before its sizes are compared)
        args += [flag, directory]
    done = train_cli(*args)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{CONVERT} {directory}" in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert not marker.exists()


def test_kdu_train_resume_refuses_an_old_layout_checkpoint(workspace, tmp_path):
    args = recipe_args(workspace, "kd", "planted_resume")
    assert train_cli(*args).returncode == 0
    root = workspace["root"] / "planted_resume" / "model" / "checkpoints" / "kd"
    step = root / (root / "LATEST").read_text().strip()
    marker = tmp_path / "MARKER"
    plant(step / "model", marker)
    done = train_cli(*args, "--resume")
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"checkpoint {step} is in OneFlow's old pickle layout" in done.stderr
    assert f"{CONVERT} {root}" in done.stderr and "Traceback" not in done.stderr
    assert not marker.exists() and (step / "model" / "pickled_data").is_file()  # nothing deleted
