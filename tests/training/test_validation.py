"""Every configuration value is checked before any work, with one sentence naming the key and the fix."""
import os

import pytest

from knowledge_distill_util.config.schema import ConfigError, TrainConfig
from knowledge_distill_util.training.validation import validate_config


@pytest.mark.parametrize("key, value, message", [
    ("batch_size_per_device", 0, r"--batch_size_per_device must be a positive integer, got 0"),
    ("batch_size_per_device", -4, r"--batch_size_per_device must be a positive integer, got -4"),
    ("eval_batch_size", 0, r"--eval_batch_size must be a positive integer, got 0"),
    ("seed", -1, r"--seed must be an integer >= 0, got -1"),
    ("learning_rate", -1e-3, r"--learning_rate must be a finite number > 0"),
    ("learning_rate", float("nan"), r"--learning_rate must be a finite number > 0 .*got nan"),
    ("num_epochs", 0.0, r"--num_epochs must be a finite number > 0"),
    ("warmup_proportion", 1.0, r"--warmup_proportion must be a number in \[0, 1\) \(at 1 every step would have"),
    ("kd_alpha", 1.5, r"--kd_alpha must be a number in \[0, 1\]"),
    ("temperature", 1e-300, r"--temperature must be a finite number >= 0.0001"),
    ("teacher_temperature", 0.0, r"--teacher_temperature must be a finite number >= 0.0001"),
    ("student_hidden_dropout_prob", 1.0, r"--student_hidden_dropout_prob must be a number in \[0, 1\)"),
    ("replace_prob", 2.0, r"--replace_prob must be a probability in \[0, 1\]"),
    ("student_init", "random", r"--student_init must be one of scratch, teacher, got 'random'"),
    ("log_level", "LOUD", r"--log_level must be one of DEBUG, INFO, WARNING, ERROR"),
])
def test_bad_values_are_refused_naming_the_key(tmp_path, key, value, message):
    cfg = TrainConfig(model_save_dir=str(tmp_path / "m"), result_dir=str(tmp_path / "r"), **{key: value})
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


def test_contradictions_are_refused(tmp_path):
    dirs = dict(model_save_dir=str(tmp_path / "m"), result_dir=str(tmp_path / "r"))
    with pytest.raises(ConfigError, match="--resume and --overwrite contradict each other"):
        validate_config(TrainConfig(resume=True, overwrite=True, **dirs))
    with pytest.raises(ConfigError, match="leave nothing to do"):
        validate_config(TrainConfig(do_train=False, do_eval=False, **dirs))


def test_output_directories_must_be_writable_directories(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match=r"--model_save_dir '.*file' is a file, not a directory"):
        validate_config(TrainConfig(model_save_dir=str(a_file), result_dir=str(tmp_path / "r")))
    read_only = tmp_path / "ro"
    read_only.mkdir()
    os.chmod(read_only, 0o500)
    try:
        if os.access(read_only, os.W_OK):
            pytest.skip("running as a user whom permissions do not stop (root without CAP_DAC_OVERRIDE limits)")
        with pytest.raises(ConfigError, match=r"--result_dir '.*ro' is not writable"):
            validate_config(TrainConfig(model_save_dir=str(tmp_path / "m"), result_dir=str(read_only)))
    finally:
        os.chmod(read_only, 0o700)


def test_a_full_disk_is_found_before_training(tmp_path, monkeypatch):
    import tempfile

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", full)
    with pytest.raises(ConfigError, match=r"--model_save_dir '.*' is not writable \(No space left on device\)"):
        validate_config(TrainConfig(model_save_dir=str(tmp_path / "m"), result_dir=str(tmp_path / "r")))


def test_defaults_and_every_recipe_default_are_valid(tmp_path):
    from knowledge_distill_util.training import RECIPES

    for name in RECIPES.names():
        validate_config(TrainConfig(**dict(RECIPES.get(name).defaults, recipe=name,
                                           model_save_dir=str(tmp_path / "m"), result_dir=str(tmp_path / "r"))))


@pytest.mark.parametrize("key, value, message", [
    ("seed", 2 ** 32, r"^--seed must be an integer in \[0, 2\*\*32 - 1\] \(4294967295\), got 4294967296; pass a "
                      r"smaller seed$"),
    ("seed", 10 ** 30, r"^--seed must be an integer in \[0, 2\*\*32 - 1\]"),
    ("num_epochs", 1e308, r"^--num_epochs must be at most 1,000,000 epochs, got 1e\+308; pass a smaller number"),
    ("num_epochs", 1e7, r"^--num_epochs must be at most 1,000,000 epochs, got 10000000.0"),
    ("stage2_num_epochs", 1e20, r"^--stage2_num_epochs must be at most 1,000,000 epochs"),
    ("num_epochs", float("inf"), r"^--num_epochs must be a finite number > 0"),
    ("num_epochs", float("nan"), r"^--num_epochs must be a finite number > 0"),
])
def test_numbers_beyond_their_bounds_are_refused(tmp_path, key, value, message):
    cfg = TrainConfig(model_save_dir=str(tmp_path / "m"), result_dir=str(tmp_path / "r"), **{key: value})
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


def test_the_largest_seed_and_epochs_pass(tmp_path):
    validate_config(TrainConfig(model_save_dir=str(tmp_path / "m"), result_dir=str(tmp_path / "r"), seed=2 ** 32 - 1,
                                num_epochs=1e6))


def test_a_huge_seed_on_the_command_line_leaves_no_file(workspace, tmp_path):
    from training.conftest import TINY_TEACHER, train_cli

    done = train_cli("--recipe", "teacher", "--quick", "--data_dir", workspace["data"], "--task_name",
                     workspace["task"], "--model_save_dir", tmp_path / "m", "--result_dir", tmp_path / "r",
                     "--seed", "4294967296", *TINY_TEACHER)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "error: --seed must be an integer in [0, 2**32 - 1]" in done.stderr
    assert not os.path.exists(tmp_path / "m" / "run_config.json")
