"""``configs/<recipe>.yaml`` at the repository root: one file per registered recipe, each equal to the recipe's
registered defaults (so the files cannot drift from the code), each a complete configuration that
``kdu-train --config FILE`` runs without ``--recipe``."""
import dataclasses
import os
import subprocess
import sys

import pytest
import yaml

from knowledge_distill_util.training.config import TrainConfig, parse_config
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


@pytest.mark.parametrize("form, named, stage", [("custom_minilm", "minilm", "minilm"),
                                                ("custom_distilbert", "distilbert", "distilbert")])
def test_the_custom_form_trains_to_the_named_recipes_losses(workspace, tmp_path, form, named, stage):
    """The custom-form file (its matches resized to the tiny models: 2 heads, 1 student layer) and the named
    recipe give the same loss at each of 3 --quick steps."""
    with open(_file(form), encoding="utf-8") as stream:
        config = yaml.safe_load(stream)
    for match in config["intermediate_matches"]:
        if "options" in match:
            match["options"]["num_relation_heads"] = 2
    config["student_init_layers"] = [0] if config["student_init_layers"] else None
    tiny = tmp_path / f"{form}.yaml"
    tiny.write_text(yaml.safe_dump(config))
    common = ["--quick", "--data_dir", workspace["data"], "--task_name", workspace["task"], "--teacher_model",
              workspace["teacher"], *TINY_STUDENT]
    size = [] if named == "minilm" else ["--student_init", "teacher"]   # the tiny student has the teacher's width
    custom = train_cli("--config", tiny, *common, *size, "--model_save_dir", tmp_path / "c" / "model",
                       "--result_dir", tmp_path / "c" / "results")
    assert custom.returncode == 0, custom.stderr[-2000:]
    reference = train_cli("--recipe", named, *common, *size, "--stages", stage, "--model_save_dir",
                          tmp_path / "n" / "model", "--result_dir", tmp_path / "n" / "results")
    assert reference.returncode == 0, reference.stderr[-2000:]
    ours = _losses(tmp_path / "c" / "results" / "custom_losses.csv")
    theirs = _losses(tmp_path / "n" / "results" / f"{stage}_losses.csv")
    assert len(ours) == 3 and ours == pytest.approx(theirs, rel=1e-6, abs=1e-9)
