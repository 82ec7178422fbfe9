"""``configs/<recipe>.yaml`` at the repository root: one file per registered recipe, each equal to the recipe's
registered defaults (so the files cannot drift from the code), each a complete configuration that
``kdu-train --config FILE`` runs without ``--recipe``."""
import dataclasses
import os
import subprocess
import sys

import pytest
import yaml

from knowledge_distill_util.training import parse_config
from knowledge_distill_util.config.schema import TrainConfig
from knowledge_distill_util.training.recipes import RECIPES
from training.conftest import TINY_STUDENT, train_cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "configs")


def _file(name):
    return os.path.join(CONFIGS, f"{name}.yaml")


FORMS = ("custom_minilm", "custom_distilbert")   # named recipes restated as recipe 'custom'


def test_one_file_per_registered_recipe():
    present = sorted(entry[:-len(".yaml")] for entry in os.listdir(CONFIGS) if entry.endswith(".yaml"))
    assert present == sorted(RECIPES.names() + list(FORMS))


@pytest.mark.parametrize("name", RECIPES.names())
def test_each_file_holds_every_key_with_the_registered_default(name):
    with open(_file(name), encoding="utf-8") as stream:
        written = yaml.safe_load(stream)
    registered = dataclasses.asdict(parse_config(["--recipe", name]))
    assert sorted(written) == sorted(f.name for f in dataclasses.fields(TrainConfig))
    assert written == registered


@pytest.mark.parametrize("name", RECIPES.names() + list(FORMS))
def test_each_key_has_a_comment(name):
    with open(_file(name), encoding="utf-8") as stream:
        lines = [line for line in stream if line.strip() and not line.startswith("#")]
    assert all("  # " in line and line.split("  # ", 1)[1].strip() for line in lines)


def test_the_config_file_names_the_recipe_and_later_flags_win():
    cfg = parse_config(["--config", _file("tinybert"), "--kd_beta", "3"])
    assert cfg.recipe == "tinybert" and cfg.kd_beta == 3.0


def test_the_files_are_up_to_date_with_their_writer():
    done = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "write_configs.py"), "--check"],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, GLOG_minloglevel="3"))
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]


def test_kd_config_file_runs(workspace):
    out = workspace["root"] / "config_file_kd"
    done = train_cli("--config", _file("kd"), "--quick", "--data_dir", workspace["data"], "--task_name",
                     workspace["task"], "--teacher_model", workspace["teacher"], "--model_save_dir", out / "model",
                     "--result_dir", out / "results", *TINY_STUDENT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "results" / "results_eval.json").is_file()


def test_setup_py_reads_the_metadata_from_pyproject():
    done = subprocess.run([sys.executable, os.path.join(REPO, "setup.py"), "--name"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "knowledge_distill_util", done.stderr


def _losses(path):
    import csv

    with open(path, encoding="utf-8") as stream:
        return [float(row["loss"]) for row in csv.DictReader(stream)]


def test_the_custom_distilbert_form_trains_to_distilberts_losses(workspace, tmp_path):
    """configs/custom_distilbert.yaml (its student_init_layers set to the tiny 1-layer student's [0]) and
    ``--recipe distilbert`` give the same loss at each of 3 --quick steps: the end-to-end runs of both recipes
    (configs/custom_minilm.yaml is compared with MiniLM's objective in tests/training/test_custom.py)."""
    with open(_file("custom_distilbert"), encoding="utf-8") as stream:
        config = yaml.safe_load(stream)
    config["student_init_layers"] = [0]
    tiny = tmp_path / "custom_distilbert.yaml"
    tiny.write_text(yaml.safe_dump(config))
    common = ["--quick", "--data_dir", workspace["data"], "--task_name", workspace["task"], "--teacher_model",
              workspace["teacher"], *TINY_STUDENT]   # the tiny student has the teacher's width: student_init teacher
    custom = train_cli("--config", tiny, *common, "--model_save_dir", tmp_path / "c" / "model", "--result_dir",
                       tmp_path / "c" / "results")
    assert custom.returncode == 0, custom.stderr[-2000:]
    named = train_cli("--recipe", "distilbert", *common, "--model_save_dir", tmp_path / "n" / "model",
                      "--result_dir", tmp_path / "n" / "results", "--do_eval", "false")
    assert named.returncode == 0, named.stderr[-2000:]
    ours = _losses(tmp_path / "c" / "results" / "custom_losses.csv")
    theirs = _losses(tmp_path / "n" / "results" / "distilbert_losses.csv")
    assert len(ours) == 3 and ours == theirs
    assert (tmp_path / "c" / "results" / "results_eval.json").is_file()
