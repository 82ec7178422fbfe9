"""The original scripts' snapshots across runs: BERT-of-Theseus's whole model (the second run of
run_train_theseus.sh reads the first run's snapshot_last_snapshot; run_eval_theseus.sh evaluates it) and
snapshot_best written at the best epoch (as the original task scripts), also across a killed and resumed run.

The command lines are the original run scripts' (tests/compat/original_cli/commands.json), expanded by bash
with the scripts' variables pointing at tiny OFRecord parts and a tiny teacher snapshot, followed by the few
flags that shrink them (sizes, batch, --device=cpu): argparse takes the last value of a repeated flag.
"""
import json
import os
import shlex
import subprocess

import numpy as np
import oneflow as flow
import pytest

from knowledge_distill_util.data.ofrecord import EVAL_PREFIX, TRAIN_PREFIX, write_ofrecord_parts
from knowledge_distill_util.models import BertForSequenceClassification
from knowledge_distill_util.models.snapshot import (build_from_snapshot, list_snapshot_variables,
                                                    read_snapshot_variable, save_snapshot)
from knowledge_distill_util.compat import init as original_init
from knowledge_distill_util.cli import original
from knowledge_distill_util.engine import loop as loop_module
from knowledge_distill_util.cli.train import main as train_main
from knowledge_distill_util.training import run as run_module
from knowledge_distill_util.models.artifacts import load_trained
from knowledge_distill_util.engine.evaluate import compute_metrics, predict
from knowledge_distill_util.compat.log import OriginalSummary
from knowledge_distill_util.compat.models import BestSnapshot, best_metric
from knowledge_distill_util.models.theseus import TheseusModel

from . import test_flags as cli
from .test_flags import COMMANDS, VOCAB, _features, _variables

original_tree = cli.original_tree  # the fixture: tiny OFRecord parts and a 4-layer teacher snapshot

TEACHER_LAYERS, HEADS = 6, 2  # hidden 64 * 2 = 128 for run_classifier.py (64 * --num_attention_heads)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """glue_ofrecord/SST-2/{train,eval} (one part each) and a 6-layer teacher snapshot at
    model/before/snapshot_best (the scripts' BERT_BASE_DIR), hidden 128 as run_classifier.py builds it."""
    root = tmp_path_factory.mktemp("snapshots")
    write_ofrecord_parts(_features(24, 0), root / "glue_ofrecord" / "SST-2" / "train", prefix=TRAIN_PREFIX)
    write_ofrecord_parts(_features(16, 1), root / "glue_ofrecord" / "SST-2" / "eval", prefix=EVAL_PREFIX)
    flow.manual_seed(0)
    teacher = BertForSequenceClassification(vocab_size=VOCAB, hidden_size=64 * HEADS, num_hidden_layers=TEACHER_LAYERS,
                                            num_attention_heads=HEADS, intermediate_size=256 * HEADS,
                                            max_position_embeddings=32, label_num=2)
    save_snapshot(teacher, root / "model" / "before" / "snapshot_best", scope="teacher")
    return root


def _command(source, script, number=0):
    found = [c for c in COMMANDS if c["source"] == source and c["script"] == script]
    return found[number]


def _expand(command, root, **values):
    """The argv the original script passes, expanded by bash with the scripts' variables (and ``values``)."""
    values = dict(_variables(root), **values)
    assignments = "; ".join(f"{k}={shlex.quote(v)}" for k, v in values.items())
    done = subprocess.run(["bash", "-c", f"{assignments}; printf '%s\\0' {' '.join(command['argv'])}"],
                          capture_output=True, check=True)
    return [a.decode() for a in done.stdout.split(b"\0")[:-1]]


#: what shrinks run_classifier.py's command lines to the tiny data (the run scripts' values otherwise)
_TINY = ["--seq_length=16", "--batch_size_per_device=8", "--eval_batch_size_per_device=8",
         f"--num_hidden_layers={TEACHER_LAYERS}", f"--num_attention_heads={HEADS}", "--compress_ratio=2",
         "--device=cpu"]


def _arrays(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _assert_equal(left, right):
    assert sorted(left) == sorted(right)
    for key in left:
        np.testing.assert_array_equal(left[key], right[key], err_msg=key)


@pytest.fixture
def plans(monkeypatch):
    """Every executed run's plan, with the weights of its whole model as it starts training."""
    seen = []
    execute = run_module.execute

    def recording(plan, progress=None):
        seen.append((plan, _arrays(plan.whole_model)))
        return execute(plan, progress)

    monkeypatch.setattr(run_module, "execute", recording)
    return seen


# ------------------------------------------------------------------------------------ the snapshot itself
def _tiny_theseus():
    flow.manual_seed(1)
    teacher = BertForSequenceClassification(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=4,
                                            num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                                            label_num=2)
    model = TheseusModel(teacher, 2, 0.5)
    with flow.no_grad():  # successor and predecessor differ from the teacher and each other
        for parameter in model.successor.parameters():
            parameter.add_(0.25)
    return model


def test_whole_theseus_snapshot_holds_both_layer_sets_in_the_original_names(tmp_path):
    model = _tiny_theseus()
    path = save_snapshot(model.successor, tmp_path / "whole", scope="theseus", predecessor=model.predecessor)
    names = set(list_snapshot_variables(path))
    assert {"bert-embeddings-word_embeddings", "bert-pooler-dense-weight", "classification-output_weights",
            "bert-encoder-layer_3-output-LayerNorm-gamma", "bert-encoder-student-layer_1-output-LayerNorm-gamma",
            "bert-encoder-layer_0-attention-self-query-weight"} <= names
    assert not any(n.startswith("bert-encoder-layer_4") or n.startswith("bert-encoder-student-layer_2") for n in names)
    assert not any(n.startswith("student-") for n in names)
    # the original's kernels are [in, out]: the predecessor's are stored transposed
    np.testing.assert_array_equal(read_snapshot_variable(path, "bert-encoder-layer_2-intermediate-dense-weight"),
                                  model.predecessor[2].intermediate.dense.weight.numpy().T)
    # read back: the successor (scope theseus) and the predecessor BERT (scope teacher, shared parts)
    successor, _ = build_from_snapshot(path, "theseus", num_attention_heads=2)
    _assert_equal(_arrays(successor), _arrays(model.successor))
    predecessor, report = build_from_snapshot(path, "teacher", num_attention_heads=2)
    _assert_equal(_arrays(predecessor.encoder.layer), _arrays(model.predecessor))
    assert not report.missing and report.unused and all("student-layer" in n for n in report.unused)
    np.testing.assert_array_equal(predecessor.classifier.weight.numpy(), model.successor.classifier.weight.numpy())


def test_predecessor_is_checked(tmp_path):
    model = _tiny_theseus()
    with pytest.raises(ValueError, match="scope='theseus' only.*got scope='teacher'"):
        save_snapshot(model.successor, tmp_path / "a", scope="teacher", predecessor=model.predecessor)
    with pytest.raises(TypeError, match="predecessor must be a non-empty nn.ModuleList of BertLayer.*got Linear"):
        save_snapshot(model.successor, tmp_path / "b", scope="theseus", predecessor=flow.nn.Linear(2, 2))
    other = BertForSequenceClassification(vocab_size=VOCAB, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=16, max_position_embeddings=32, label_num=2)
    with pytest.raises(ValueError, match="predecessor layers have hidden size 8 but the model has 16"):
        save_snapshot(model.successor, tmp_path / "c", scope="theseus", predecessor=other.encoder.layer)
    assert not any((tmp_path / name).exists() for name in "abc")


# ------------------------------------------------------------------------ run_train_theseus.sh, both runs
def _original_getdirsize(directory):
    """run_classifier.py's own getdirsize, as the original writes it (the bert variables, Adam slots aside)."""
    total = 0
    for root, _, files in os.walk(directory):
        sub = root.split("/")[-1]
        if not (sub.endswith("-m") or sub.endswith("-v")) and \
                (("teacher" not in sub) or ("student" in sub) or ("layer" not in sub)) and ("bert" in sub):
            total += sum(os.path.getsize(os.path.join(root, name)) for name in files)
    return total


def test_theseus_second_run_reads_the_first_runs_whole_model(tree, tmp_path, plans, monkeypatch):
    """run_train_theseus.sh's two runs (no --do_eval: the original writes the results files after every epoch)
    and run_eval_theseus.sh (which passes --num_epochs= empty for SST-2)."""
    from knowledge_distill_util.compat import models as original_models

    written, write = [], original_models.write_results_files
    monkeypatch.setattr(original_models, "write_results_files",
                        lambda results, cfg, source, desc="eval": written.append(desc) or write(results, cfg, source,
                                                                                               desc))
    out = tmp_path / "out"
    variables = dict(INIT_STUDENT_DIR=str(out / "student_init"), ONE_TRAIN_MODEL=str(out / "student_v1"),
                     STUDENT_DIR=str(out / "student_v2"), TRAIN_LOG_DIR=str(tmp_path / "log"), EPOCH="2",
                     learning_rate="1e-3")
    init = _expand(_command("run_train_theseus.sh", "init_stu"), tree, **variables)
    assert original_init.main("theseus", init) == 0  # --layer_list="0,1,2": 3 successor layers of 6
    first = _expand(_command("run_train_theseus.sh", "run_classifier", 0), tree, **variables)
    second = _expand(_command("run_train_theseus.sh", "run_classifier", 1), tree, **variables)
    assert "--replace_prob=0.5" in first and "--replace_prob=1.0" in second
    assert f"--model_load_dir={out / 'student_v1' / 'snapshot_last_snapshot'}" in second

    assert original.main("run_classifier", first + _TINY) == 0
    plan1, start1 = plans[0]
    whole1 = plan1.whole_model
    assert isinstance(whole1, TheseusModel) and len(whole1.successor.encoder.layer) == 3
    final_successor, final_predecessor = _arrays(whole1.successor), _arrays(whole1.predecessor)
    start_successor = {k[len("successor."):]: v for k, v in start1.items() if k.startswith("successor.")}
    assert any(not np.array_equal(final_successor[k], start_successor[k]) for k in final_successor)  # it trained
    saved, _ = load_trained(str(out / "student_v1"), "model")  # this package's format: the final successor
    _assert_equal(_arrays(saved), final_successor)
    names = set(list_snapshot_variables(out / "student_v1" / "snapshot_last_snapshot"))
    assert {"bert-encoder-layer_5-output-dense-bias", "bert-encoder-student-layer_2-output-dense-bias"} <= names
    # results every epoch (--result_dir= empty: into --model_save_dir), the original's figures: modelSize the
    # MiB of --model_load_dir's bert variables, reasoningTime the seconds the evaluation took
    assert "--do_eval" not in " ".join(first) and written == ["train", "eval", "train", "eval"]
    for desc, rows in (("train", 24), ("eval", 16)):
        shown = json.loads((out / "student_v1" / f"results_{desc}.json").read_text())
        full = json.loads((out / "student_v1" / f"results_{desc}_kdu.json").read_text())
        assert full["num_examples"] == rows and shown["accuracy"] == "%.2f" % full["accuracy"]
        assert shown["modelSize"] == "%d" % (_original_getdirsize(out / "student_init") / 1024 / 1024)
        assert shown["reasoningTime"] == "%.2f" % (rows / full["reasoningTime"])
    assert _original_getdirsize(out / "student_init") > 2 ** 20  # the figure is not a trivial 0

    assert original.main("run_classifier", second + _TINY) == 0
    plan2, start2 = plans[1]
    assert isinstance(plan2.whole_model, TheseusModel) and plan2.whole_model.replace_prob == 1.0
    loaded_successor = {k[len("successor."):]: v for k, v in start2.items() if k.startswith("successor.")}
    loaded_predecessor = {k[len("predecessor."):]: v for k, v in start2.items() if k.startswith("predecessor.")}
    _assert_equal(loaded_successor, final_successor)  # exactly the first run's trained successor
    _assert_equal(loaded_predecessor, final_predecessor)  # and its (frozen) predecessor
    # the teacher of the second run: the predecessor layers with the first run's trained shared parts
    np.testing.assert_array_equal(plan2.teacher.embeddings.word_embeddings.weight.numpy(),
                                  final_successor["embeddings.word_embeddings.weight"])
    assert (out / "student_v2" / "snapshot_last_snapshot" / "snapshot_done").is_file()

    # run_eval_theseus.sh: --do_train=false on the second run's snapshot evaluates its final successor
    monkeypatch.chdir(tmp_path)  # it passes no --result_dir: the original's default ./result
    last = out / "student_v2" / "snapshot_last_snapshot"
    evaluation = _expand(_command("run_eval_theseus.sh", "run_classifier"), tree, model_load_dir=str(last),
                         compress_ratio="2", epoch="")
    assert "--num_epochs=" in evaluation  # run_eval_theseus.sh leaves ${epoch} unset for SST-2
    assert original.main("run_classifier", evaluation + _TINY) == 0
    evaluated = json.loads((tmp_path / "result" / "results_eval_kdu.json").read_text())
    expected = compute_metrics(predict(plan2.final_model, plan2.data.dev, 8)[0], plan2.data.dev.labels,
                               "classification")
    assert evaluated["accuracy"] == expected["accuracy"] and evaluated["f1"] == expected["f1"]
    assert evaluated["num_examples"] == 16

    # a snapshot of the successor alone (what this package wrote before, or init_stu.py's layers only) still
    # evaluates the same
    alone = tmp_path / "alone"
    save_snapshot(plan2.final_model, alone, scope="theseus")
    assert not any(n.startswith("bert-encoder-layer_") for n in list_snapshot_variables(alone))
    evaluation = _expand(_command("run_eval_theseus.sh", "run_classifier"), tree, model_load_dir=str(alone),
                         compress_ratio="2", epoch="")
    assert original.main("run_classifier", evaluation + _TINY + [f"--result_dir={tmp_path / 'alone_result'}"]) == 0
    alone_results = json.loads((tmp_path / "alone_result" / "results_eval_kdu.json").read_text())
    assert alone_results["accuracy"] == expected["accuracy"]


# ------------------------------------------------------- run_train_student_bert_pkd.sh: fit_dense at 128 -> 128
def test_shipped_pkd_lines_keep_fit_dense_at_equal_widths(tree, tmp_path, monkeypatch):
    """The original PKD student applies student-fit_dense before layer_distill even when the widths are equal
    (768 -> 768 in the shipped script; 128 -> 128 here), clips the gradients at global norm 1.0 and uses Adam
    epsilon 1e-6; kdu-train's bert_pkd recipe keeps its default (no fit_dense at equal widths)."""
    from knowledge_distill_util.training import builders
    from knowledge_distill_util.training import parse_config

    clipped, clip = [], loop_module.clip_gradients
    monkeypatch.setattr(loop_module, "clip_gradients", lambda opt, norm: clipped.append(
        (norm, opt.param_groups[0]["eps"])) or clip(opt, norm))
    student, out = tmp_path / "models" / "bert_pkd_3" / "SST-2", tmp_path / "student_model"
    values = dict(TMP_STUDENT_DIR=str(student), STUDENT_DIR=str(out), TRAIN_LOG_DIR=str(tmp_path / "log"),
                  LAYER_LIST="1,3,5", epoch="1")
    generate = _expand(_command("run_bert-pkd_generate_student_mdoel.sh", "bert-pkd_generate_student_model"), tree,
                       **values)
    assert original_init.main("bert-pkd", generate) == 0
    assert not any(n.startswith("student-fit_dense") for n in list_snapshot_variables(student))
    argv = _expand(_command("run_train_student_bert_pkd.sh", "task_student_bert-pkd"), tree, **values)
    assert "--student_hidden_size=768" in argv and "--teacher_hidden_size=768" in argv  # equal in the script
    tiny = ["--seq_length=16", "--batch_size_per_device=8", "--eval_batch_size_per_device=8", "--max_steps=2",
            "--device=cpu", f"--student_hidden_size={64 * HEADS}", f"--student_num_attention_heads={HEADS}",
            f"--teacher_hidden_size={64 * HEADS}", f"--teacher_num_attention_heads={HEADS}",
            f"--teacher_num_hidden_layers={TEACHER_LAYERS}"]
    assert original.main("task_student_bert-pkd", argv + tiny) == 0
    names = list_snapshot_variables(out / "snapshot_best")
    assert {"student-fit_dense-weight", "student-fit_dense-bias"} <= set(names)
    assert read_snapshot_variable(out / "snapshot_best", "student-fit_dense-weight").shape == (128, 128)
    assert clipped and set(clipped) == {(1.0, 1e-6)}
    # modelSize: the original's getdirsize(model_save_dir), i.e. the snapshot written (here snapshot_best)
    on_disk = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(out / "snapshot_best")
                  for f in files)
    assert on_disk > 2 ** 20
    for desc in ("eval", "train"):
        assert json.loads((out / f"results_{desc}.json").read_text())["modelSize"] == "%d" % (on_disk / 2 ** 20)

    cfg = parse_config(["--student_hidden_size", "128", "--student_num_attention_heads", "2",
                        "--student_num_hidden_layers", "3", "--student_intermediate_size", "512"], recipe="bert_pkd")
    teacher, _ = build_from_snapshot(str(tree / "model/before/snapshot_best"), "teacher", num_attention_heads=HEADS)
    modern = builders.bert_student(cfg, _spec(), teacher, reads_layers=True)
    assert modern.fit_dense is None  # kdu-train's default: no projection at equal widths
    original_cfg = original.parse_original(argv + tiny, "task_student_bert-pkd")
    assert builders.bert_student(original_cfg, _spec(), teacher, reads_layers=True).fit_dense is not None


def _spec():
    from knowledge_distill_util.data import get_task

    return get_task("sst-2")


# ------------------------------------------------------------------------------ snapshot_best: the best epoch
def _teacher_argv(root, out, epochs=4, learning_rate="0.02"):
    """task_teacher.py as run_train_teacher.sh calls it, on the tiny data, dropout off (an exact resume)."""
    data = root / "glue_ofrecord" / "SST-2"
    return ["--do_train=True", "--model=Glue_SST-2", "--task_name=SST-2", "--gpu_num_per_node=1",
            f"--num_epochs={epochs}", f"--train_data_dir={data / 'train'}", "--train_example_num=24",
            f"--eval_data_dir={data / 'eval'}", "--eval_example_num=16", "--batch_size_per_device=8",
            "--eval_batch_size_per_device=8", "--loss_print_every_n_iter", "20", f"--log_dir={out}_log",
            f"--model_load_dir={root / 'model/before/snapshot_best'}", f"--model_save_dir={out}", "--result_dir=",
            "--seq_length=16", "--num_hidden_layers=4", f"--num_attention_heads={HEADS}",
            "--attention_probs_dropout_prob=0", "--hidden_dropout_prob=0", f"--learning_rate={learning_rate}",
            "--weight_decay_rate=0.0001", "--model_save_every_n_iter=2", "--save_last_snapshot=True", "--device=cpu"]


@pytest.fixture
def epochs(monkeypatch):
    """Every epoch-end evaluation: ``(epoch, step, value, the evaluated model's weights)``."""
    seen = []
    call = BestSnapshot.__call__

    def recording(self, epoch, step):
        call(self, epoch, step)
        seen.append((epoch, step, self.history[-1][2], _arrays(self.evaluated)))

    monkeypatch.setattr(BestSnapshot, "__call__", recording)
    return seen


def _snapshot_arrays(path):
    return {name: np.fromfile(os.path.join(folder, "out"), "<f4")
            for name, folder in list_snapshot_variables(path).items()}


def _snapshot_weights(path):
    model, _ = build_from_snapshot(str(path), "teacher", num_attention_heads=HEADS)
    return _arrays(model)


def test_snapshot_best_is_the_best_epoch_and_survives_a_resume(original_tree, tmp_path, epochs, monkeypatch):
    """task_teacher.py, 5 epochs of 2 steps at a large learning rate (the original's AdamW: epsilon 1e-6,
    gradients clipped at norm 1.0): dev accuracy 0.5625, 0.5625, 0.4375, 0.5625, 0.5625. The original keeps the
    first epoch (strictly better than 0.0; the ties later are not better); snapshot_last_snapshot is the final model. A run killed in epoch 4 and resumed writes the same."""
    out = tmp_path / "teacher"
    argv = _teacher_argv(original_tree, out, epochs=5, learning_rate="0.15")
    assert original.main("task_teacher", argv) == 0
    values = [round(v, 4) for _, _, v, _ in epochs]
    assert [(e, s) for e, s, _, _ in epochs] == [(0, 2), (1, 4), (2, 6), (3, 8), (4, 10)]
    assert values == [0.5625, 0.5625, 0.4375, 0.5625, 0.5625]  # the premise: best = first, ties later
    best_weights, final_weights = epochs[0][3], epochs[-1][3]
    assert any(not np.array_equal(best_weights[k], final_weights[k]) for k in best_weights)
    _assert_equal(_snapshot_weights(out / "snapshot_best"), best_weights)
    _assert_equal(_snapshot_weights(out / "snapshot_last_snapshot"), final_weights)
    saved, _ = load_trained(str(out), "teacher")  # this package's format: the final model, as before
    _assert_equal(_arrays(saved), final_weights)
    state = json.loads((out / "checkpoints" / "teacher" / "step-00000010" / "state.json").read_text())
    assert state["epoch_end"] == {"metric": "accuracy", "best": 0.5625, "epoch": 0, "step": 2}

    killed = tmp_path / "killed"
    run_step, calls = loop_module.Loop._eager_step, [0]

    def dying(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 8:  # step 8 of 10, after the checkpoint of step 6 (--model_save_every_n_iter=2)
            raise KeyboardInterrupt("killed")
        return run_step(*args, **kwargs)

    monkeypatch.setattr(loop_module.Loop, "_eager_step", dying)
    # the entry point turns the interrupt into one line and exit status 130, the checkpoints kept
    assert original.main("task_teacher", _teacher_argv(original_tree, killed, epochs=5, learning_rate="0.15")) == 130
    assert (killed / "snapshot_best").is_dir() and not (killed / "snapshot_last_snapshot").exists()
    monkeypatch.setattr(loop_module.Loop, "_eager_step", run_step)
    epochs.clear()
    assert original.main("task_teacher", _teacher_argv(original_tree, killed, epochs=5, learning_rate="0.15")
                         + ["--resume=true"]) == 0
    assert [(e, s) for e, s, _, _ in epochs] == [(3, 8), (4, 10)]  # resumed at step 6: epochs 4 and 5 evaluated
    for name in ("snapshot_best", "snapshot_last_snapshot"):
        _assert_equal(_snapshot_arrays(killed / name), _snapshot_arrays(out / name))


def test_snapshot_best_falls_back_to_the_final_model_without_a_metric(original_tree, tmp_path, epochs):
    """A task outside the original's acc_tasks / mcc_tasks (here WNLI): no epoch-end evaluation (the original
    saves no best model); snapshot_best is the final model, as before."""
    out = tmp_path / "wnli"
    argv = [a.replace("SST-2", "WNLI") if a.startswith(("--task_name", "--model=")) else a
            for a in _teacher_argv(original_tree, out, epochs=2)]
    assert original.main("task_teacher", argv) == 0
    assert epochs == []
    saved, _ = load_trained(str(out), "teacher")
    _assert_equal(_snapshot_weights(out / "snapshot_best"), _arrays(saved))
    assert best_metric("CoLA", "kd") == "mcc" and best_metric("MRPC", "pred") == "accuracy"
    assert best_metric("SST-2", "intermediate") is None


def test_modern_runs_evaluate_nothing_per_epoch(original_tree, tmp_path, monkeypatch):
    """kdu-train (save_snapshot false): no epoch-end hook, no snapshot."""
    monkeypatch.setattr(BestSnapshot, "__call__", lambda *a: pytest.fail("evaluated an epoch of a kdu-train run"))
    made, real = [], run_module._best_snapshot
    monkeypatch.setattr(run_module, "_best_snapshot", lambda *a: made.append(real(*a)) or made[-1])
    data = original_tree / "glue_ofrecord" / "SST-2"
    out = tmp_path / "modern"
    assert train_main(["--recipe", "teacher", "--teacher_model", str(original_tree / "model/before/snapshot_best"),
                            "--teacher_num_attention_heads", "2", "--train_data_dir", str(data / "train"),
                            "--eval_data_dir", str(data / "eval"), "--task_name", "SST-2", "--seq_length", "16",
                            "--num_epochs", "2", "--batch_size_per_device", "8", "--model_save_dir", str(out),
                            "--result_dir", str(out), "--device", "cpu"]) == 0
    assert made == [None] and not (out / "snapshot_best").exists()


# ---------------------------------------------------------------------------------- <log_dir>/summary.csv
def test_summary_csv_as_the_originals_util_summary(original_tree, tmp_path):
    """task_teacher.py --log_dir: summary.csv with the original's columns; with --loss_print_every_n_iter 2 and
    2 steps per epoch, one throughput and one loss row per epoch (iter = the step within the epoch, from 0),
    the loss the mean over the window's steps (their logged losses)."""
    out, log = tmp_path / "teacher", tmp_path / "log"
    argv = _teacher_argv(original_tree, out, epochs=2, learning_rate="1e-3") + [
        "--loss_print_every_n_iter", "2", f"--log_dir={log}"]
    assert original.main("task_teacher", argv) == 0
    lines = (log / "summary.csv").read_text().splitlines()
    assert lines[0] == "legend,value,iter,epoch"
    assert lines[1].startswith('cfg,"TrainConfig(') and lines[1].endswith(',,')
    rows = [line.split(",") for line in lines[2:]]
    assert [(r[0], r[2], r[3]) for r in rows] == [("finetune_throughput", "1.0", ""), ("finetune_loss", "1.0", "0.0"),
                                                  ("finetune_throughput", "1.0", ""), ("finetune_loss", "1.0", "1.0")]
    steps = [line.split(",") for line in (out / "teacher_losses.csv").read_text().splitlines()]
    losses = [float(r[steps[0].index("loss")]) for r in steps[1:]]
    assert len(losses) == 4
    np.testing.assert_allclose([float(rows[1][1]), float(rows[3][1])],
                               [(losses[0] + losses[1]) / 2, (losses[2] + losses[3]) / 2], rtol=1e-5)
    assert all(float(rows[i][1]) > 0 for i in (0, 2))  # examples per second


def test_summary_flags_and_resume(tmp_path):
    data = ["--task_name=SST-2", "--do_train=True", "--model_save_dir=x"]
    assert original.parse_original(data, "task_teacher").log_dir is None  # the default ./output is not written
    cfg = original.parse_original(data + ["--log_dir=./log", "--loss_print_every_n_iter", "20"], "task_teacher")
    assert (cfg.log_dir, cfg.loss_print_every_n_iter) == ("./log", 20)
    with pytest.raises(ValueError, match="loss_print_every_n_iter must be a positive int, got 0"):
        OriginalSummary(str(tmp_path), "c", steps_per_epoch=2, print_steps=0, batch_size=2)
    first = OriginalSummary(str(tmp_path), "c", steps_per_epoch=2, print_steps=1, batch_size=2)
    for step in (1, 2, 3):
        first(step, 4, {"loss": 1.0})
    resumed = OriginalSummary(str(tmp_path), "c", steps_per_epoch=2, print_steps=1, batch_size=2, resume=True)
    resumed(3, 4, {"loss": 2.0})
    resumed(4, 4, {"loss": 3.0})
    rows = [r.split(",") for r in (tmp_path / "summary.csv").read_text().splitlines()[1:]]
    assert [(r[0], "" if r[0].endswith("throughput") else r[1], r[2], r[3]) for r in rows] == [
        ("cfg", "c", "", ""), ("finetune_throughput", "", "0.0", ""), ("finetune_loss", "1.0", "0.0", "0.0"),
        ("finetune_throughput", "", "1.0", ""), ("finetune_loss", "1.0", "1.0", "0.0"),
        ("finetune_throughput", "", "0.0", ""), ("finetune_loss", "1.0", "0.0", "1.0"),  # the killed run's step 3
        ("finetune_throughput", "", "0.0", ""), ("finetune_loss", "2.0", "0.0", "1.0"),  # the resumed run's
        ("finetune_throughput", "", "1.0", ""), ("finetune_loss", "3.0", "1.0", "1.0")]
    fresh = OriginalSummary(str(tmp_path), "c", steps_per_epoch=2, print_steps=1, batch_size=2)
    fresh(1, 4, {"loss": 5.0})
    assert len((tmp_path / "summary.csv").read_text().splitlines()) == 4


@pytest.mark.graph
def test_snapshot_best_under_nn_graph(original_tree, tmp_path, epochs):
    """--use_graph: the epoch-end evaluation reads the weights the compiled graph updates."""
    out = tmp_path / "graph"
    assert original.main("task_teacher", _teacher_argv(original_tree, out, epochs=3) + ["--use_graph=true"]) == 0
    assert [(e, s) for e, s, _, _ in epochs] == [(0, 2), (1, 4), (2, 6)]
    weights = [w for _, _, _, w in epochs]
    assert any(not np.array_equal(weights[0][k], weights[2][k]) for k in weights[0])  # the graph trained them
    values = [v for _, _, v, _ in epochs]
    best = next(i for i, v in enumerate(values) if v == max(values))  # the first epoch reaching the maximum
    _assert_equal(_snapshot_weights(out / "snapshot_best"), weights[best])
    _assert_equal(_snapshot_weights(out / "snapshot_last_snapshot"), weights[-1])


def _sst2_tsv(rows, seed):
    """A tiny SST-2 in GLUE's TSV form (``sentence<TAB>label``): the label follows a word, so it can be learnt."""
    rng = np.random.default_rng(seed)
    words = ["good", "bad", "movie", "plot", "actor", "scene", "long", "short", "fun", "dull"]
    lines = ["sentence\tlabel"]
    for _ in range(rows):
        sentence = list(rng.choice(words[2:], size=5))
        label = int(rng.integers(0, 2))
        sentence.insert(int(rng.integers(0, 5)), "good" if label else "bad")
        lines.append(" ".join(sentence) + f"\t{label}")
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_snapshot_best_two_processes_equals_one_process(tmp_path, epochs):
    """Under the launcher (2 processes, eager) the epochs are evaluated sharded (15 dev rows) and rank 0 alone
    writes: the same snapshot_best as one process with the same global batch."""
    from training.conftest import TINY_TEACHER
    from training.test_distributed_training import TOLERANCE, launch

    data = tmp_path / "SST-2"
    data.mkdir()
    (data / "train.tsv").write_text(_sst2_tsv(24, 0))
    (data / "dev.tsv").write_text(_sst2_tsv(15, 1))
    common = ["--recipe", "teacher", "--data_dir", str(data), "--task_name", "SST-2", "--seq_length", "16",
              "--num_epochs", "3", "--learning_rate", "2e-2", "--warmup_proportion", "0",
              "--teacher_hidden_dropout_prob", "0", "--teacher_attention_probs_dropout_prob", "0",
              "--save_snapshot", "true", "--device", "cpu", *TINY_TEACHER]
    one, two = tmp_path / "one", tmp_path / "two"
    assert train_main(common + ["--batch_size_per_device", "8", "--model_save_dir", str(one), "--result_dir",
                                     str(one)]) == 0
    done = launch(common + ["--batch_size_per_device", "4", "--model_save_dir", str(two), "--result_dir", str(two)])
    assert done.returncode == 0, done.stderr[-3000:]
    evaluated = [line.split("]")[1] for line in done.stderr.splitlines() if "best so far" in line]
    assert len(evaluated) == 3, done.stderr[-3000:]  # rank 0 alone logs (and writes)
    assert [float(line.split("dev accuracy ")[1].split(",")[0]) for line in evaluated] == \
        [round(value, 4) for _, _, value, _ in epochs]  # the one-process run's epochs
    assert "writing snapshot_best" in evaluated[0] and "writing" not in evaluated[2]  # the best is not the last
    left, right = _snapshot_arrays(one / "snapshot_best"), _snapshot_arrays(two / "snapshot_best")
    assert sorted(left) == sorted(right)
    for name in left:
        np.testing.assert_allclose(right[name], left[name], rtol=TOLERANCE, atol=TOLERANCE, err_msg=name)


def test_a_student_snapshot_gets_the_umask_permissions_not_the_teachers(tmp_path):
    teacher = BertForSequenceClassification(vocab_size=30, hidden_size=8, num_hidden_layers=3, num_attention_heads=2,
                                            intermediate_size=16, max_position_embeddings=10)
    old = os.umask(0o077)
    try:
        save_snapshot(teacher, tmp_path / "teacher", scope="teacher")  # files 0o600, folders 0o700
        os.umask(0o022)
        path = original_init.generate_student_snapshot(str(tmp_path / "teacher"), str(tmp_path / "student"), [0, 2])
    finally:
        os.umask(old)
    modes = {(os.path.isdir(os.path.join(d, n)), os.stat(os.path.join(d, n)).st_mode & 0o777)
             for d, folders, files in os.walk(path) for n in folders + files}
    assert modes == {(True, 0o755), (False, 0o644)} and os.stat(path).st_mode & 0o777 == 0o755
