"""The typed fields of TrainConfig: one rule per type, the same sentence for a flag, a --config file and a
value set in Python (TrainConfig(...), dataclasses.replace)."""
import dataclasses
import json

import pytest

from knowledge_distill_util.training import parse_config
from knowledge_distill_util.config.schema import ConfigError, TrainConfig
from knowledge_distill_util.config.fields import LogLevel, PositiveInteger, Temperature, check_field, wanted
from knowledge_distill_util.training.validation import validate_config

#: (key, a bad value, the whole sentence a user sees whichever way the value arrived)
BAD = [
    ("seq_length", 0, "--seq_length must be a positive integer, got 0"),
    ("max_steps", -1, "--max_steps must be an integer >= 0, got -1"),
    ("seed", 2 ** 32, "--seed must be an integer in [0, 2**32 - 1] (4294967295), got 4294967296; pass a smaller seed"),
    ("num_epochs", 1e7, "--num_epochs must be at most 1,000,000 epochs, got 10000000.0; pass a smaller number (or "
                        "--max_steps to bound the run by steps)"),
    ("learning_rate", -1.0, "--learning_rate must be a finite number > 0 (e.g. 5e-5), got -1.0"),
    ("warmup_proportion", 1.0, "--warmup_proportion must be a number in [0, 1) (at 1 every step would have learning "
                               "rate 0), got 1.0"),
    ("lstm_dropout_prob", 1.0, "--lstm_dropout_prob must be a number in [0, 1), got 1.0"),
    ("teacher_temperature", 0.0, "--teacher_temperature must be a finite number >= 0.0001, got 0.0"),
    ("student_vocab_size", 0, "--student_vocab_size must be a positive integer, got 0"),
    ("log_level", "LOUD", "--log_level must be one of DEBUG, INFO, WARNING, ERROR, got 'LOUD'"),
    ("temperature_schedule", "warm", "--temperature_schedule must be one of constant, flsw, cwsm, got 'warm'"),
]


@pytest.mark.parametrize("key, value, sentence", BAD, ids=[case[0] for case in BAD])
def test_a_flag_a_file_and_python_get_the_same_sentence(tmp_path, key, value, sentence):
    with pytest.raises(ConfigError) as flag:
        parse_config([f"--{key}", str(value)], recipe="kd")
    path = tmp_path / "c.json"
    path.write_text(json.dumps({key: value}))
    with pytest.raises(ConfigError) as in_file:
        parse_config(["--config", str(path)], recipe="kd")
    cfg = dataclasses.replace(TrainConfig(model_save_dir=str(tmp_path / "m"), result_dir=str(tmp_path / "r")),
                              **{key: value})
    with pytest.raises(ConfigError) as in_python:
        validate_config(cfg, check_directories=False)
    assert [str(flag.value), str(in_file.value), str(in_python.value)] == [sentence] * 3


@pytest.mark.parametrize("key, value, sentence", [
    ("seq_length", "32", "--seq_length must be a positive integer, got '32' (str)"),
    ("seq_length", 32.0, "--seq_length must be a positive integer, got 32.0 (float)"),
    ("kd_alpha", True, "--kd_alpha must be a number in [0, 1] (a weight of two loss terms), got True (bool)"),
    ("teacher_seq_length", "8", "--teacher_seq_length must be a positive integer or null, got '8' (str)"),
    ("do_train", "no", "--do_train must be true or false, got 'no' (str)"),
    ("task_name", 3, "--task_name must be a string or null, got 3 (int)"),
    ("student_init_layers", [0, "2"], "--student_init_layers must be a list, each entry an integer, got [0, '2']"),
    ("logit_terms", {"loss": "kl_div"}, "--logit_terms must be a list, each entry a mapping, got {'loss': 'kl_div'}"),
])
def test_a_value_of_the_wrong_kind_set_in_python_is_named(key, value, sentence):
    field = {f.name: f for f in dataclasses.fields(TrainConfig)}[key]
    with pytest.raises(ValueError) as error:
        check_field(key, value, field.type)
    assert str(error.value) == sentence


def test_good_values_pass_and_parse_as_plain_numbers():
    check_field("seq_length", 1, PositiveInteger)
    check_field("temperature", 1e-4, Temperature)
    check_field("teacher_temperature", None, TrainConfig.__dataclass_fields__["teacher_temperature"].type)
    cfg = parse_config(["--seq_length", "16", "--temperature", "2"], recipe="kd")
    assert (type(cfg.seq_length), type(cfg.temperature)) == (int, float) and (cfg.seq_length, cfg.temperature) == (16, 2.0)
    assert wanted(LogLevel) == "one of DEBUG, INFO, WARNING, ERROR" and wanted(PositiveInteger) == "a positive integer"


def test_resume_and_overwrite_together_is_one_rule_for_kdu_train_and_kdu_compress():
    from knowledge_distill_util._errors import ConfigError
    from knowledge_distill_util.cli.compress import parse_args
    from knowledge_distill_util.config.schema import TrainConfig
    from knowledge_distill_util.config.fields import check_resume_overwrite
    from knowledge_distill_util.training.validation import validate_config

    sentence = "^--resume and --overwrite contradict each other; pass one of them$"
    for resume, overwrite in ((False, False), (True, False), (False, True)):
        check_resume_overwrite(resume, overwrite)
    for refuse in (lambda: check_resume_overwrite(True, True),
                   lambda: validate_config(TrainConfig(resume=True, overwrite=True), check_directories=False),
                   lambda: parse_args(["--resume", "--overwrite"])):
        with pytest.raises(ConfigError, match=sentence):
            refuse()
