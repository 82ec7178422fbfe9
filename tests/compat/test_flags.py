"""The original toolkit's command lines through the entry points of the same names.

tests/compat/original_cli/commands.json holds the 17 python command lines of the original run_*.sh scripts
(yejinlei/Dubhe model_compress/model_compress/distil, its examples/ and theseus/), flags exactly as there
(shell variables unexpanded). Each is expanded by bash with the variables the scripts set for SST-2 and
replayed with --print_config; then KD, TinyBERT and Theseus run end to end on tiny OFRecord parts and tiny
snapshots written with the library's writers.
"""
import json
import os
import shlex
import subprocess

import numpy as np
import oneflow as flow
import pytest
import yaml

from knowledge_distill_util.data import Features
from knowledge_distill_util.data.ofrecord import EVAL_PREFIX, TRAIN_PREFIX, write_ofrecord_parts
from knowledge_distill_util.models import BertForSequenceClassification
from knowledge_distill_util.models.snapshot import list_snapshot_variables, load_snapshot, save_snapshot
from knowledge_distill_util.cli import original
from knowledge_distill_util.compat import flags as original_flags, init as original_init
from knowledge_distill_util.config.schema import ConfigError

HERE = os.path.dirname(__file__)
COMMANDS = json.load(open(os.path.join(HERE, "original_cli", "commands.json"), encoding="utf-8"))


def _variables(root):
    """The shell variables the original scripts set (SST-2 branch; $1..$5 = data, output, log, result, task)."""
    data = f"{root}/glue_ofrecord"
    return {
        "DATA_ROOT": data, "dataset": "SST-2", "TASK_NAME": "SST-2", "train_example_num": "67349",
        "eval_example_num": "872", "learning_rate": "2e-5", "wd": "0.0001", "epoch": "4", "EPOCH": "3",
        "train_data_dir": f"{data}/SST-2/train", "eval_data_dir": f"{data}/SST-2/eval",
        "train_data_dir_lstm": f"{data}/SST-2_lstm_32/train", "eval_data_dir_lstm": f"{data}/SST-2_lstm_32/eval",
        "STUDENT_DIR": f"{root}/out/student_model", "TMP_STUDENT_DIR": f"{root}/models/bert_pkd_3/SST-2",
        "FT_BERT_BASE_DIR": f"{root}/model/before/snapshot_best", "TRAIN_LOG_DIR": f"{root}/log",
        "RESULT_DIR": "", "PRETRAINED_MODEL": f"{root}/uncased_L-12_H-768_A-12_oneflow",
        "MODEL_SAVE_DIR": f"{root}/model/before", "TEACHER_MODEL_DIR": f"{root}/finetuned_teacher/snapshot_best",
        "BERT_BASE_DIR": f"{root}/model/before/snapshot_best", "INIT_STUDENT_DIR": f"{root}/out/student_init",
        "ONE_TRAIN_MODEL": f"{root}/out/student_v1", "model_load_dir": f"{root}/log/theseus/snapshot_last_snapshot",
        "compress_ratio": "4", "replace_prob": "1.0", "LAYER_LIST": "2,6,10", "KD_ALPHA": "0.8", "KD_BETA": "10",
        "LAYER_NUM": "3",
    }


#: per script: the values each original run script sets differently (the two evaluation scripts leave
#: ${epoch} unset for SST-2: they pass --num_epochs= empty).
_OVERRIDES = {"run_eval_student_distilled_lstm.sh": {"KD_ALPHA": "0.7"},
              "run_eval_student_bert_pkd.sh": {"KD_ALPHA": "0.2", "epoch": ""},
              "run_eval_theseus.sh": {"epoch": ""},
              "run_init_stu.sh": {"LAYER_LIST": "0,1,2,3,4,5"}}


def _expand(command, root, **changed):
    """The argv the original script passes: its raw flags expanded by bash (``changed``: other variables)."""
    values = dict(_variables(root), **_OVERRIDES.get(command["source"], {}), **changed)
    assignments = "; ".join(f"{k}={shlex.quote(v)}" for k, v in values.items())
    done = subprocess.run(["bash", "-c", f"{assignments}; printf '%s\\0' {' '.join(command['argv'])}"],
                          capture_output=True, check=True)
    return [a.decode() for a in done.stdout.split(b"\0")[:-1]]


def _print_config(script, argv, capsys):
    if script in ("init_stu", "bert-pkd_generate_student_model"):
        code = original_init.main("theseus" if script == "init_stu" else "bert-pkd", argv + ["--print_config"])
        return code, capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        original.main(script, argv + ["--print_config"])
    return stop.value.code, capsys.readouterr().out


def test_the_replayed_command_lines_are_all_of_the_original_scripts():
    assert len(COMMANDS) == 17
    assert ({c["script"] for c in COMMANDS}
            == set(original_flags.SCRIPTS) | {"init_stu", "bert-pkd_generate_student_model"})
    for name in list(original_flags.SCRIPTS) + ["init_stu", "bert-pkd_generate_student_model"]:
        assert os.path.isfile(os.path.join(HERE, "..", "..", "scripts", f"{name}.py")), name


@pytest.mark.parametrize("number", range(len(COMMANDS)), ids=[f"{c['source']}:{c['script']}" for c in COMMANDS])
def test_original_command_line_prints_its_configuration(number, tmp_path, capsys):
    command = COMMANDS[number]
    argv = _expand(command, str(tmp_path))
    code, out = _print_config(command["script"], argv, capsys)
    assert code == 0, out
    if command["script"] in ("init_stu", "bert-pkd_generate_student_model"):
        wanted = "[0, 1, 2, 3, 4, 5]" if command["source"] == "run_init_stu.sh" else \
            "[0, 1, 2]" if command["source"] == "run_train_theseus.sh" else "[2, 6, 10]"
        assert f"layer_list: {wanted}" in out
        return
    cfg = yaml.safe_load(out)
    flags = {}
    for i, a in enumerate(argv):
        if a.startswith("--"):
            flags.update([a[2:].split("=", 1)] if "=" in a else [(a[2:], argv[i + 1])])
    assert cfg["recipe"] == original_flags.SCRIPTS[command["script"]].recipe
    assert cfg["task_name"] == "SST-2" and cfg["results_format"] == "original"
    assert cfg["do_train"] == (flags["do_train"].strip("'").lower() == "true")
    assert cfg["do_eval"] == (flags.get("do_eval", "None").strip("'").lower() == "true")
    assert cfg["model_save_dir"] == flags.get("model_save_dir", cfg["model_save_dir"])
    # --result_dir= (empty) is the original's fallback: model_save_dir
    if command["script"] != "run_classifier":
        assert cfg["result_dir"] == (flags.get("result_dir") or cfg["model_save_dir"])
    assert cfg["eval_batch_size"] == int(flags["eval_batch_size_per_device"])
    assert cfg["train_data_dir"] == flags["train_data_dir"] and cfg["eval_data_dir"] == flags["eval_data_dir"]
    assert cfg["eval_example_num"] == int(flags["eval_example_num"])
    assert cfg["learning_rate"] == float(flags.get("learning_rate", 1e-4))   # the original default 1e-4
    if "weight_decay_rate" in flags:
        assert cfg["weight_decay"] == float(flags["weight_decay_rate"])
    if "kd_alpha" in flags:
        assert cfg["kd_alpha"] == float(flags["kd_alpha"])
    if command["script"] == "task_student_tinybert":
        assert cfg["stages"] == ["combined"]
    if command["script"] == "run_classifier":
        assert cfg["stages"] == ["theseus"] and cfg["replace_prob"] == float(flags.get("replace_prob", 1.0))
        assert cfg["student_num_hidden_layers"] == int(flags["num_hidden_layers"]) // 4
    if command["script"] == "task_teacher" and cfg["do_train"]:
        assert cfg["teacher_model"] == flags["model_load_dir"] and cfg["teacher_num_attention_heads"] == 12
    if command["script"] == "task_student_kd_lstm":
        assert cfg["seq_length"] == 32 and cfg["teacher_seq_length"] == 128 and cfg["student_vocab_size"] == 10003
        assert cfg["train_data_dir_lstm"] == flags["train_data_dir_lstm"]
    if command["script"] in ("task_student_kd", "task_student_bert-pkd", "task_student_tinybert"):
        assert cfg["student_hidden_size"] == int(flags["student_hidden_size"])
        assert cfg["student_num_attention_heads"] == int(flags["student_num_attention_heads"])
    if "num_epochs" in flags:  # empty in the two evaluation scripts: ignored there (the original default 3)
        assert cfg["num_epochs"] == (float(flags["num_epochs"]) if flags["num_epochs"] else 3.0)
    if command["script"] in ("task_student_kd", "task_student_kd_lstm", "task_lstm"):
        assert cfg["student_model"] is None  # the original never reads --student_model there
    if command["script"] in ("task_student_bert-pkd", "task_student_tinybert") and cfg["do_train"]:
        assert cfg["student_model"] == flags["student_model"]


@pytest.mark.parametrize("script, alpha", [("task_student_kd", 0.9), ("task_student_kd_lstm", 0.1),
                                           ("task_student_bert-pkd", 0.5)])
def test_original_defaults_per_script(script, alpha):
    cfg = original.parse_original(["--task_name=CoLA"], script)
    assert (cfg.kd_alpha, cfg.learning_rate, cfg.num_epochs, cfg.train_example_num) == (alpha, 1e-4, 3, 88614)
    assert cfg.do_train is False and cfg.do_eval is False and cfg.seq_length == (32 if "lstm" in script else 512)
    assert original.parse_original([], "run_classifier").replace_prob == 0.0


def test_the_modern_recipes_keep_their_defaults():
    from knowledge_distill_util.training import parse_config

    cfg = parse_config([], recipe="kd")
    assert (cfg.kd_alpha, cfg.learning_rate, cfg.results_format, cfg.stages) == (0.8, 5e-5, "kdu", None)
    assert parse_config([], recipe="theseus").replace_prob == 0.5


@pytest.mark.parametrize("argv, message", [
    (["--model_save=x"], "unknown flag --model_save for task_student_kd.py"),
    (["--gpu_num_per_node=2"], "OneFlow's launcher"),
    (["--num_nodes=2"], "OneFlow's launcher"),
    (["--do_train=maybe"], "expected True or False"),
    (["--use_fp16=True"], "use_fp16=True is not supported"),
])
def test_original_flags_are_checked(argv, message):
    with pytest.raises((ConfigError, SystemExit)) as error:
        original.parse_original(argv, "task_student_kd")
    assert message in str(error.value)


def test_model_is_not_an_abbreviation_and_booleans_take_both_forms():
    cfg = original.parse_original(["--model=Glue_SST-2", "--do_train", "--do_eval='False'",
                                   "--intermediate_distill", "--pred_distill=True"], "task_student_tinybert")
    assert cfg.model_save_dir.startswith("./output/model_save-") and cfg.do_train and not cfg.do_eval
    assert cfg.stages == ["combined"]
    assert original.parse_original(["--pred_distill='True'"], "task_student_tinybert").stages == ["pred"]


def test_every_flag_has_a_mapping_and_the_original_default():
    listed = json.load(open(os.path.join(HERE, "original_cli", "flags.json"), encoding="utf-8"))
    for script, flags in listed.items():
        parser = original_flags.build_original_parser(original_flags.SCRIPTS[script])
        defaults = vars(parser.parse_args([]))
        assert sorted(flags) == sorted(original_flags.SCRIPTS[script].flags), script
        for name, default in flags.items():
            assert name in defaults and original_flags.FLAGS[name].maps_to, (script, name)
            if name != "model_save_dir":
                assert defaults[name] == default, (script, name, defaults[name], default)


def test_add_distill_args_adds_only_missing_flags():
    import argparse

    from knowledge_distill_util import add_distill_args

    parser = argparse.ArgumentParser()
    parser.add_argument("--kd_alpha", type=float, default=0.9)
    parser.add_argument("--temperature", type=float, default=2.0)
    args = add_distill_args(parser).parse_args(["--intermediate_distill='True'", "--pred_distill"])
    assert (args.kd_alpha, args.temperature, args.kd_beta, args.intermediate_distill, args.pred_distill) == \
        (0.9, 2.0, 10.0, True, True)
    assert add_distill_args(argparse.ArgumentParser()).parse_args(["--pred_distill='False'"]).pred_distill is False


# ----------------------------------------------------------------------------- end to end, tiny
L, VOCAB = 16, 30


def _features(rows, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB, size=(rows, L))
    ids[:, 0] = 2
    mask = np.ones_like(ids)
    mask[:, 12:] = 0
    ids[:, 12:] = 0
    return Features(ids, mask, np.zeros_like(ids), rng.integers(0, 2, size=rows))


@pytest.fixture(scope="module")
def original_tree(tmp_path_factory):
    """glue_ofrecord/SST-2/{train,eval} and a 4-layer teacher snapshot (hidden 32, 2 heads)."""
    root = tmp_path_factory.mktemp("original")
    write_ofrecord_parts(_features(24, 0), root / "glue_ofrecord" / "SST-2" / "train", part_num=2, prefix=TRAIN_PREFIX)
    write_ofrecord_parts(_features(16, 1), root / "glue_ofrecord" / "SST-2" / "eval", prefix=EVAL_PREFIX)
    flow.manual_seed(0)
    teacher = BertForSequenceClassification(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=4,
                                            num_attention_heads=2, intermediate_size=64, max_position_embeddings=32,
                                            label_num=2)
    save_snapshot(teacher, root / "model" / "before" / "snapshot_best", scope="teacher")
    return root


def _common(root):
    data = root / "glue_ofrecord" / "SST-2"
    return ["--do_train='True'", "--do_eval='True'", "--model=Glue_SST-2", "--task_name=SST-2",
            "--gpu_num_per_node=1", "--num_epochs=1", f"--train_data_dir={data / 'train'}",
            "--train_data_part_num=2", "--train_example_num=67349", f"--eval_data_dir={data / 'eval'}",
            "--eval_example_num=872", "--batch_size_per_device=8", "--eval_batch_size_per_device=8",
            "--loss_print_every_n_iter", "10", "--seq_length=16", "--learning_rate=2e-5",
            "--weight_decay_rate", "0.0001", "--max_steps=2", "--device=cpu"]


_STUDENT = ["--student_num_hidden_layers=2", "--student_num_attention_heads=2", "--student_hidden_size=16",
            "--student_hidden_size_per_head=8", "--teacher_num_hidden_layers=4", "--teacher_num_attention_heads=2",
            "--teacher_hidden_size=32"]


def _check_outputs(save_dir, result_dir, snapshot="snapshot_best"):
    results = json.loads((result_dir / "results_eval.json").read_text())
    assert set(results) == {"accuracy", "MCC", "precision", "recall", "f_1", "modelSize", "reasoningTime"}
    assert all(isinstance(v, str) for v in results.values()) and len(results["accuracy"].split(".")[1]) == 2
    assert (result_dir / "results_train.json").is_file()
    assert json.loads((result_dir / "results_eval_kdu.json").read_text())["num_examples"] == 16
    assert list_snapshot_variables(save_dir / snapshot)


def test_kd_end_to_end_and_eval_only(original_tree, tmp_path):
    out = tmp_path / "kd"
    argv = _common(original_tree) + [f"--teacher_model={original_tree / 'model/before/snapshot_best'}",
                                     f"--model_save_dir={out}", "--result_dir=", "--kd_alpha=0.8",
                                     "--serve_for_online='True'"] + _STUDENT
    assert original.main("task_student_kd", argv) == 0
    _check_outputs(out, out)
    student = BertForSequenceClassification(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2,
                                            num_attention_heads=2, intermediate_size=1200,
                                            max_position_embeddings=32, label_num=2)
    assert load_snapshot(student, out / "snapshot_best").scope == "student"
    # the original eval script: no teacher, --do_train='False', the snapshot as --model_save_dir, --result_dir=
    evaluated = out / "snapshot_best"
    argv = ["--do_train='False'", "--do_eval='True'", "--model=Glue_SST-2", "--task_name=SST-2",
            f"--eval_data_dir={original_tree / 'glue_ofrecord/SST-2/eval'}", "--eval_example_num=872",
            f"--model_save_dir={evaluated}", "--result_dir=", "--seq_length=16", "--device=cpu"] + _STUDENT
    assert original.main("task_student_kd", argv) == 0
    assert json.loads((evaluated / "results_eval.json").read_text())["f_1"]


def test_tinybert_end_to_end_is_one_combined_stage(original_tree, tmp_path):
    out = tmp_path / "tinybert"
    argv = _common(original_tree) + [f"--teacher_model={original_tree / 'model/before/snapshot_best'}",
                                     f"--model_save_dir={out}", "--result_dir=", "--intermediate_distill='True'",
                                     "--pred_distill='True'"] + _STUDENT
    assert original.main("task_student_tinybert", argv) == 0
    _check_outputs(out, out)
    assert (out / "combined_losses.csv").read_text().startswith(  # the stage's DistillationConfig terms
        "step,epoch,lr,seconds,loss,soft_cross_entropy,match0_att_distill_loss,match1_layer_distill_loss")
    assert not (out / "intermediate_losses.csv").exists()


def _read(folder, name):
    return np.fromfile(folder / name / "out", "<f4")


def test_init_stu_names_the_successor_layers_by_the_teachers_index(original_tree, tmp_path, capsys):
    """The original's init_stu.py builds ``bert-encoder-student-layer_<i>`` from teacher layer ``i`` (its
    renaming pattern never matches that name): --layer_list=1,3 gives successor layers 1 and 3, which a
    Theseus run (successor layers 0..n-1) refuses in one sentence."""
    init = tmp_path / "student_init"
    teacher = original_tree / "model/before/snapshot_best"
    assert original_init.main("theseus", [f"--teacher_model={teacher}", f"--student_model={init}",
                                          "--layer_list=1,3"]) == 0
    assert "named by the teacher's index (bert-encoder-student-layer_1/_3)" in capsys.readouterr().err
    names = list_snapshot_variables(init)
    successor = sorted({n.split("-")[3] for n in names if n.startswith("bert-encoder-student-layer_")})
    assert successor == ["layer_1", "layer_3"]
    for i in (1, 3):
        wanted = _read(teacher, f"bert-encoder-layer_{i}-attention-self-query-weight")
        np.testing.assert_array_equal(_read(init, f"bert-encoder-student-layer_{i}-attention-self-query-weight"),
                                      wanted)
    assert not np.array_equal(_read(teacher, "bert-encoder-layer_1-attention-self-query-weight"),
                              _read(teacher, "bert-encoder-layer_3-attention-self-query-weight"))
    out = tmp_path / "student_v1"
    argv = _common(original_tree) + [f"--model_load_dir={init}", f"--model_save_dir={out}", "--num_hidden_layers=4",
                                     "--num_attention_heads=2", "--compress_ratio=2", "--replace_prob=0.5"]
    assert original.main("run_classifier", argv) == 2
    assert ("holds successor layers [1, 3] (bert-encoder-student-layer_<i>, named by the teacher's index as "
            "init_stu.py names them) but a successor reads layers 0..n-1; write it with init_stu.py "
            "--layer_list=0,1") in capsys.readouterr().err
    assert not (out / "results_eval.json").exists()  # refused before any training step


def test_theseus_end_to_end_from_init_stu(original_tree, tmp_path):
    init = tmp_path / "student_init"
    teacher = original_tree / "model/before/snapshot_best"
    assert original_init.main("theseus", [f"--teacher_model={teacher}", f"--student_model={init}",
                                          "--layer_list=0,1"]) == 0
    names = list_snapshot_variables(init)
    assert {"bert-encoder-student-layer_1-output-dense-bias", "bert-encoder-layer_3-output-dense-bias"} <= set(names)
    np.testing.assert_array_equal(_read(init, "bert-encoder-student-layer_1-attention-self-key-weight"),
                                  _read(teacher, "bert-encoder-layer_1-attention-self-key-weight"))
    out, results = tmp_path / "student_v1", tmp_path / "result"
    argv = _common(original_tree) + [f"--model_load_dir={init}", f"--model_save_dir={out}",
                                     f"--result_dir={results}", "--save_last_snapshot=True", "--num_hidden_layers=4",
                                     "--num_attention_heads=2", "--compress_ratio=2", "--replace_prob=0.5"]
    assert original.main("run_classifier", argv) == 0
    _check_outputs(out, results, snapshot="snapshot_last_snapshot")


def test_bert_pkd_student_generation(original_tree, tmp_path):
    student = tmp_path / "bert_pkd_3"
    assert original_init.main("bert-pkd", [f"--teacher_model={original_tree / 'model/before/snapshot_best'}",
                                           f"--student_model={student}", "--layer_list=0,2"]) == 0
    names = list_snapshot_variables(student)
    assert "student-bert-encoder-layer_1-output-dense-bias" in names
    assert not any(n.startswith("student-bert-encoder-layer_2") for n in names)
    assert original_init.main("bert-pkd", [f"--teacher_model={original_tree / 'model/before/snapshot_best'}",
                                           f"--student_model={tmp_path / 'x'}", "--layer_list=2,6,10"]) == 2


def test_tinybert_combined_loss_is_the_sum_of_the_two_stages_and_mse_for_regression():
    from types import SimpleNamespace

    from knowledge_distill_util.training.attention_objectives import tinybert_intermediate_loss, tinybert_pred_loss
    from knowledge_distill_util.training.objectives import TINYBERT_COMBINED

    rng = np.random.default_rng(3)
    args = SimpleNamespace(temperature=1.0, teacher_temperature=None, student_temperature=None)
    t = lambda *shape: flow.tensor(rng.normal(size=shape).astype(np.float32))  # noqa: E731
    atts = lambda: [flow.softmax(t(2, 2, 4, 4), dim=-1) for _ in range(2)]  # noqa: E731
    tensors = dict(student_logits=t(2, 3), teacher_logits=t(2, 3), student_reps=[t(2, 4, 8) for _ in range(3)],
                   teacher_reps=[t(2, 4, 8) for _ in range(3)], student_atts=atts(), teacher_atts=atts(),
                   labels=flow.tensor([0, 2]))
    terms = TINYBERT_COMBINED(args, **tensors)
    first = tinybert_intermediate_loss(args, **{k: tensors[k] for k in ("student_reps", "teacher_reps",
                                                                          "student_atts", "teacher_atts")})
    second = tinybert_pred_loss(args, tensors["student_logits"], tensors["teacher_logits"])
    np.testing.assert_allclose(terms["loss"].numpy(), first["loss"].numpy() + second["loss"].numpy(),
                               rtol=1.3e-6, atol=1e-5)
    scores = rng.normal(size=2)
    tensors.update(student_logits=t(2, 1), teacher_logits=t(2, 1), labels=flow.tensor(scores.astype(np.float32)))
    regression = TINYBERT_COMBINED(args, **tensors)
    reference = np.mean((tensors["student_logits"].numpy().astype(np.float64).reshape(-1) - scores) ** 2)
    np.testing.assert_allclose(regression["pred_distill"].numpy(), reference, rtol=1.3e-6, atol=1e-5)


def test_task_lstm_trains_the_lstm_without_a_teacher(original_tree, tmp_path):
    """The original's task_lstm.py: the LSTM on the labels alone (the ``lstm`` recipe), no teacher."""
    out = tmp_path / "lstm"
    argv = _common(original_tree) + [f"--model_save_dir={out}", "--result_dir=", "--student_hidden_size=16",
                                     f"--student_vocab_size={VOCAB}"]
    assert original.main("task_lstm", argv) == 0
    _check_outputs(out, out)
    config = json.loads((out / "model_config.json").read_text())
    assert config["recipe"] == "lstm" and config["architecture"] == "lstm"
    assert config["config"]["vocab_size"] == VOCAB + 1 and config["config"]["hidden_size"] == 16


# ---------------------------------------------------------------- issue 18: the original lines' behaviour
def _command(source, script):
    return next(c for c in COMMANDS if c["source"] == source and c["script"] == script)


#: what shrinks the shipped student lines to original_tree (a 4-layer teacher, hidden 32, 2 heads); argparse
#: takes the last value of a repeated flag
_TINY_STUDENT = ["--seq_length=16", "--batch_size_per_device=8", "--eval_batch_size_per_device=8",
                 "--train_data_part_num=2", "--num_epochs=1", "--max_steps=2", "--device=cpu"] + _STUDENT


@pytest.mark.parametrize("student", ["missing", "other_shape"])
def test_shipped_kd_line_ignores_student_model(original_tree, tmp_path, capsys, student):
    """run_train_student_kd.sh passes --student_model=./models/bert_pkd_3/SST-2; the original KD script builds
    its student from scratch and never reads it: the run trains whether the folder exists or not, whatever it
    holds, and says so once."""
    folder = tmp_path / "models" / "bert_pkd_3" / "SST-2"
    if student == "other_shape":  # a BERT-PKD student snapshot of the teacher: hidden 32, not the KD student's 16
        assert original_init.main("bert-pkd", [f"--teacher_model={original_tree / 'model/before/snapshot_best'}",
                                               f"--student_model={folder}", "--layer_list=0,2"]) == 0
    capsys.readouterr()
    out = tmp_path / "student_model"
    argv = _expand(_command("run_train_student_kd.sh", "task_student_kd"), str(original_tree),
                   TMP_STUDENT_DIR=str(folder), STUDENT_DIR=str(out), TRAIN_LOG_DIR=str(tmp_path / "log"))
    assert f"--student_model={folder}" in argv
    assert original.main("task_student_kd", argv + _TINY_STUDENT) == 0
    err = capsys.readouterr().err
    assert err.count("--student_model is accepted and has no effect") == 1, err
    assert (out / "results_eval.json").is_file() and list_snapshot_variables(out / "snapshot_best")
    assert (folder.is_dir()) == (student == "other_shape")  # the folder is neither read nor written
    for script in ("task_student_kd_lstm", "task_lstm"):  # the original never reads it there either
        assert original.parse_original([f"--student_model={folder}"], script).student_model is None


def test_bare_boolean_flags_take_each_original_const():
    """The original's nargs='?' flags: const=True for --do_train, --do_eval, --use_fp16, --use_xla,
    --do_lower_case, --intermediate_distill, --pred_distill; const=False for --aug_train, --serve_for_online
    and --from_scratch (a bare --from_scratch still reads the student)."""
    wanted = {"aug_train": False, "serve_for_online": False, "from_scratch": False, "do_train": True,
              "do_eval": True, "use_fp16": True, "use_xla": True, "do_lower_case": True,
              "intermediate_distill": True, "pred_distill": True}
    for script in ("task_student_bert-pkd", "task_student_tinybert"):
        parser = original_flags.build_original_parser(original_flags.SCRIPTS[script])
        for name, const in wanted.items():
            if name in original_flags.SCRIPTS[script].flags and name != "use_fp16":
                assert getattr(parser.parse_args([f"--{name}"]), name) is const, (script, name)
    cfg = original.parse_original(["--do_train", "--from_scratch", "--aug_train", "--serve_for_online",
                                   "--student_model=s"], "task_student_bert-pkd")
    assert cfg.do_train and cfg.student_model == "s"
    assert original.parse_original(["--do_train", "--from_scratch=True", "--student_model=s"],
                                   "task_student_bert-pkd").student_model is None
    assert original.parse_original(["--aug_train=True"], "task_student_tinybert").aug_train is True
    assert original.parse_original(["--aug_train"], "task_student_tinybert").aug_train is False


def test_shipped_pkd_line_with_a_bare_from_scratch_reads_the_student(tmp_path, capsys):
    argv = _expand(_command("run_train_student_bert_pkd.sh", "task_student_bert-pkd"), str(tmp_path))
    code, out = _print_config("task_student_bert-pkd", argv + ["--from_scratch", "--aug_train"], capsys)
    assert code == 0 and yaml.safe_load(out)["student_model"] == f"{tmp_path}/models/bert_pkd_3/SST-2"


@pytest.mark.parametrize("source, script", [("run_eval_student_bert_pkd.sh", "task_student_bert-pkd"),
                                            ("run_eval_theseus.sh", "run_classifier")])
def test_evaluation_lines_ignore_an_empty_num_epochs(tmp_path, capsys, source, script):
    argv = _expand(_command(source, script), str(tmp_path))
    assert "--num_epochs=" in argv
    code, out = _print_config(script, argv, capsys)
    assert code == 0 and yaml.safe_load(out)["num_epochs"] == 3.0
    with pytest.raises(ConfigError, match=r"--num_epochs= is empty but this run trains \(--do_train true\) and "
                                          r"uses it; give a value, e.g. --num_epochs=3"):
        original.parse_original(argv + ["--do_train=True"], script)
    with pytest.raises(ConfigError, match="argument --eval_example_num: invalid int value: ''"):
        original.parse_original(argv + ["--eval_example_num="], script)  # a flag the evaluation uses


def test_empty_flag_is_logged_once(tmp_path, capsys):
    argv = _expand(_command("run_eval_theseus.sh", "run_classifier"), str(tmp_path))
    _print_config("run_classifier", argv, capsys)
    with pytest.raises(SystemExit):
        original.main("run_classifier", argv + ["--print_config"])
    err = capsys.readouterr().err
    assert err.count("--num_epochs= (empty) is ignored: an evaluation-only run (--do_train false) does not use "
                     "it") == 1, err


def test_original_optimizer_in_the_original_path_only(monkeypatch):
    """The original's CreateOptimizer: AdamW epsilon 1e-6, gradients clipped at global norm 1.0; kdu-train's
    recipes keep AdamW's 1e-8 and no clipping."""
    from knowledge_distill_util.training import run as run_module
    from knowledge_distill_util.training import parse_config

    tcfg = run_module._trainer_config(original.parse_original(["--do_train"], "task_student_kd"), 1, 1e-4)
    assert (tcfg.adam_epsilon, tcfg.max_grad_norm) == (1e-6, 1.0)
    tcfg = run_module._trainer_config(parse_config([], recipe="kd"), 1, 1e-4)
    assert (tcfg.adam_epsilon, tcfg.max_grad_norm) == (1e-8, 0.0)


def test_clip_gradients_is_one_global_norm_over_every_group():
    from knowledge_distill_util.engine.optim import clip_gradients, make_optimizer

    model = flow.nn.Sequential(flow.nn.Linear(3, 2), flow.nn.LayerNorm(2))
    optimizer = make_optimizer(model, 1e-3, 0.01, eps=1e-6, max_grad_norm=1.0)
    assert len(optimizer.param_groups) == 2 and optimizer.param_groups[0]["eps"] == 1e-6
    grads = [np.full(tuple(p.shape), 3.0 * (i + 1), np.float32) for i, p in enumerate(model.parameters())]
    for parameter, grad in zip(model.parameters(), grads):
        parameter.grad = flow.tensor(grad)
    norm = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    clip_gradients(optimizer, 1.0)
    for parameter, grad in zip(model.parameters(), grads):  # one factor for all: 1 / the global norm
        np.testing.assert_allclose(parameter.grad.numpy(), grad / norm, rtol=1e-5)
    clip_gradients(optimizer, 0.0)  # off: unchanged
    np.testing.assert_allclose(list(model.parameters())[0].grad.numpy(), grads[0] / norm, rtol=1e-5)
