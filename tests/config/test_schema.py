"""The configuration: defaults < recipe defaults < the command line (files, --quick, flags) in order;
one-sentence errors; --print_config."""
import json
import re
import subprocess
import sys

import pytest

from knowledge_distill_util.training import parse_config
from knowledge_distill_util.config.schema import QUICK, ConfigError, TrainConfig, known_keys, save_config


def test_order_recipe_defaults_then_files_then_flags(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"kd_alpha": 0.5, "seq_length": 32, "student_init_layers": [0, 2]}))
    cfg = parse_config(["--config", str(path), "--seq_length", "16", "--do_train", "false"], recipe="kd")
    assert (cfg.recipe, cfg.kd_alpha, cfg.seq_length, cfg.do_train) == ("kd", 0.5, 16, False)
    assert cfg.student_init_layers == [0, 2] and cfg.temperature == 1.0
    assert cfg.student_hidden_size == 312                      # the kd recipe's default (the original run script)
    assert parse_config([], recipe="kd").kd_alpha == 0.8        # KD's own default, not the flag's 0.2
    assert parse_config(["--recipe", "bert_pkd"]).kd_alpha == 0.2


def test_yaml_file_and_original_boolean_forms(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("kd_alpha: 0.3\nuse_graph: true\n")
    cfg = parse_config(["--config", str(path), "--do_eval=False", "--resume"], recipe="kd")
    assert (cfg.kd_alpha, cfg.use_graph, cfg.do_eval, cfg.resume) == (0.3, True, False, True)


def test_quick_is_a_preset_at_its_place_on_the_command_line():
    cfg = parse_config(["--quick", "--max_steps", "7"], recipe="kd")
    assert cfg.max_steps == 7 and all(getattr(cfg, k) == v for k, v in QUICK.items() if k != "max_steps")
    assert parse_config(["--max_steps", "7", "--quick"], recipe="kd").max_steps == QUICK["max_steps"]


@pytest.mark.parametrize("argv, recipe, message", [
    (["--kd_alph", "1"], "kd", r"^unknown configuration key 'kd_alph'; did you mean 'kd_alpha'\?$"),
    (["--kd_alpha", "x"], "kd", r"^--kd_alpha must be a number in \[0, 1\] \(a weight of two loss terms\), got 'x'$"),
    (["--recipe", "nope"], None, r"^unknown recipe 'nope'; registered recipes: teacher, baseline, kd, "),
    (["--recipe", "bilstm"], "kd", r"this entry point runs recipe 'kd' but --recipe says 'bilstm'"),
])
def test_errors_are_one_sentence(argv, recipe, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(argv, recipe=recipe)


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"kd_alpah": 0.8}))
    with pytest.raises(ConfigError, match=r"unknown configuration key 'kd_alpah' in .*bad\.json; did you mean 'kd_alpha'"):
        parse_config(["--config", str(path)], recipe="kd")
    path.write_text(json.dumps({"recipe": "bilstm"}))
    with pytest.raises(ConfigError, match="this run is recipe 'kd' but the configuration says recipe 'bilstm'"):
        parse_config(["--config", str(path)], recipe="kd")


def test_no_recipe_is_an_error():
    with pytest.raises(ConfigError, match="no --recipe given"):
        parse_config([])


def test_print_config_prints_the_resolved_configuration_and_exits_0():
    done = subprocess.run([sys.executable, "-m", "knowledge_distill_util", "train", "--recipe", "bilstm", "--quick",
                           "--print_config"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "kd_alpha: 0.7" in done.stdout and "max_steps: 3" in done.stdout and "seq_length: 32" in done.stdout


def test_config_is_saved(tmp_path):
    saved = json.loads(open(save_config(TrainConfig(kd_alpha=0.7), str(tmp_path))).read())
    assert saved["kd_alpha"] == 0.7 and sorted(saved) == known_keys()


@pytest.mark.parametrize("text, message", [
    ('{"kd_alpha": 0.5', r"--config .*c\.json is not valid YAML or JSON \(.*\); fix the file"),
    ("[1, 2]", r"--config .*c\.json must hold one mapping of configuration keys, got a list"),
])
def test_broken_config_files_are_named(tmp_path, text, message):
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        parse_config(["--config", str(path)], recipe="kd")
    with pytest.raises(ConfigError, match=r"--config '.*nowhere\.json' does not exist"):
        parse_config(["--config", str(tmp_path / "nowhere.json")], recipe="kd")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "null"])
def test_an_empty_config_file_is_named(tmp_path, text):
    path = tmp_path / "empty.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"^--config .*empty\.json holds no configuration keys \(empty, or only "
                                          r"comments\); write a mapping such as \{\"num_epochs\": 3\} into it or drop "
                                          r"--config$"):
        parse_config(["--config", str(path)], recipe="kd")


def test_a_config_directory_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"^--config '.*' is a directory; pass a YAML or JSON file$"):
        parse_config(["--config", str(tmp_path)], recipe="kd")


def _help(capsys, argv):
    with pytest.raises(SystemExit) as done:
        parse_config(argv, prog="kdu-train")
    assert done.value.code == 0
    return capsys.readouterr().out


def test_help_without_a_recipe_lists_every_recipe_and_the_options(capsys):
    from knowledge_distill_util.training.recipes import RECIPES

    text = _help(capsys, ["--help"])
    for name in RECIPES.names():
        recipe = RECIPES.get(name)
        assert any(line.split()[:1] == [name] and recipe.summary in line for line in text.splitlines()), name
    assert "--kd_alpha" in text and "--quick" in text and "usage: kdu-train --recipe NAME" in text


def test_recipe_help_marks_its_recipe_and_lists_the_others(capsys):
    text = _help(capsys, ["--recipe", "bilstm", "-h"])
    assert " *bilstm " in text and "  tinybert " in text and "default: 0.7" in text  # bilstm's kd_alpha


@pytest.mark.parametrize("argv", [["--recipe", "tinybret"], ["--config", '{"recipe": "tinybret"}']])
def test_a_misspelt_recipe_suggests_the_closest_name(argv):
    with pytest.raises(ConfigError, match=r"^unknown recipe 'tinybret'; did you mean 'tinybert'\? registered "):
        parse_config(argv)


def test_package_help_lists_the_recipes():
    done = subprocess.run([sys.executable, "-m", "knowledge_distill_util", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "compress" in done.stdout and re.search(r"\n  tinybert +TinyBERT: ", done.stdout)   # column: longest name


@pytest.mark.parametrize("argv, layers, stages", [
    (["--student_init_layers", "0,2"], [0, 2], None),
    (["--student_init_layers=0, 2"], [0, 2], None),
    (["--student_init_layers", "[0,2]"], [0, 2], None),
    (["--student_init_layers", "3"], [3], None),
    (["--student_init_layers", "null", "--stages", "intermediate,pred"], None, ["intermediate", "pred"]),
    (["--stages=pred"], None, ["pred"]),
])
def test_list_keys_take_commas_or_brackets(argv, layers, stages):
    cfg = parse_config(argv, recipe="tinybert")
    assert (cfg.student_init_layers, cfg.stages) == (layers, stages)


@pytest.mark.parametrize("argv, message", [
    (["--student_init_layers", "a,b"], r"^--student_init_layers must be a comma-separated list of integers such as "
                                       r"0,2 \(or '\[0,2\]'; null for none\), got 'a,b'$"),
    (["--student_init_layers", "0;1"], r"^--student_init_layers must be .*, got '0;1'$"),
    (["--config", '{"student_init_layers": "0,1"}'], r"^--student_init_layers must be .*, got '0,1'$"),
    (["--teacher_temperature", "x"], r"^--teacher_temperature must be a finite number >= 0.0001, got 'x'$"),
    (["--student_vocab_size", "x"], r"^--student_vocab_size must be a positive integer, got 'x'$"),
    (["--config", '{"device": {"a": 1}}'], r"^--device must be a string or null, got "),
])
def test_union_errors_are_one_sentence(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(argv, recipe="tinybert")


def test_an_unknown_key_is_one_sentence_wherever_it_is_found():
    from knowledge_distill_util.config.schema import build_parser, check_known_keys
    from knowledge_distill_util.training.recipes import RECIPES

    with pytest.raises(ConfigError, match=r"^unknown configuration key 'kd_alpah' in recipe defaults; did you mean "
                                          r"'kd_alpha'\?$"):
        build_parser({"kd_alpah": 0.5}, recipes=RECIPES)
    with pytest.raises(ConfigError, match=r"^unknown configuration key 'zzz' in plan\.json; see --help"):
        check_known_keys({"kd_alpha": 0.5, "zzz": 1}, " in plan.json")
