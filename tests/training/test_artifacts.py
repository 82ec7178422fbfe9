"""knowledge_distill_util.training.artifacts and the command line: a teacher, a --student_model or a
checkpoint in OneFlow's old pickle layout stops kdu-train with one sentence naming convert-checkpoint, and a
planted pickle in it never runs (its marker file is never created)."""
import os
import shutil

import pytest

from knowledge_distill_util.training.artifacts import load_trained
from knowledge_distill_util.training.config import ConfigError
from pickle_plant import plant
from training.conftest import recipe_args, train_cli

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
