"""A run never reads or destroys another's files (issue 16): directories that coincide or nest destructively
are refused before anything is created, a file that is not a teacher-logits cache is never overwritten, a
damaged cache is rebuilt, a student's cache goes to its own directory (never the teacher's), and the
Distilled-BiLSTM teacher reads the BERT parts whatever the two sequence lengths (issue 18 item 2)."""
import hashlib
import logging
import os
import re

import numpy as np
import oneflow as flow
import pytest

from knowledge_distill_util.data import Features
from knowledge_distill_util.data.loading import TaskData
from knowledge_distill_util.data.ofrecord import EVAL_PREFIX, TRAIN_PREFIX, write_ofrecord_parts
from knowledge_distill_util.models import BertForSequenceClassification
from knowledge_distill_util.models.snapshot import save_snapshot
from knowledge_distill_util.cli import original
from knowledge_distill_util.training import run as run_module
from knowledge_distill_util.training import teacher_cache
from knowledge_distill_util.config.schema import ConfigError, TrainConfig
from knowledge_distill_util.engine.evaluate import predict
from knowledge_distill_util.training.validation import validate_config
from training.conftest import recipe_args, tiny_bert, tiny_features, train_cli


def _tree_digest(root):
    """Every file under ``root`` with its bytes' hash (what must stay untouched)."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as stream:
                found[os.path.relpath(path, root)] = hashlib.sha1(stream.read()).hexdigest()
    return found


def _one_line_exit_2(done, pattern):
    assert done.returncode == 2, (done.stdout[-1000:], done.stderr[-2000:])
    assert re.search(pattern, done.stderr), done.stderr
    assert done.stderr.count("\n") <= 2 and "Traceback" not in done.stderr, done.stderr


# ------------------------------------------------------------------------------------- nested directories
def test_result_dir_inside_the_models_weights_is_refused_before_anything_is_created(tmp_path):
    model = tmp_path / "model"
    cfg = TrainConfig(model_save_dir=str(model), result_dir=str(model / "weights" / "results"))
    with pytest.raises(ConfigError, match=r"^--result_dir .*model/weights/results lies inside .*model/weights, which "
                                          r"the run replaces in --model_save_dir .*model \(its files would be lost\); "
                                          r"pass a --result_dir outside it"):
        validate_config(cfg)
    assert not model.exists()
    cfg = TrainConfig(model_save_dir=str(model), result_dir=str(model / "weights"))
    with pytest.raises(ConfigError, match=r"--result_dir .*model/weights lies inside"):
        validate_config(cfg)
    for entry in ("checkpoints/kd", "snapshot_best", "stage_intermediate/x"):
        with pytest.raises(ConfigError, match=r"which the run replaces"):
            validate_config(TrainConfig(model_save_dir=str(model), result_dir=str(model / entry)))
    assert not model.exists()
    validate_config(TrainConfig(model_save_dir=str(model), result_dir=str(model)))  # the original's fallback
    validate_config(TrainConfig(model_save_dir=str(model), result_dir=str(model / "results")))


def test_result_dir_inside_weights_through_the_cli(workspace):
    args = recipe_args(workspace, "kd", "paths_weights")
    model = workspace["root"] / "paths_weights" / "model"
    args[args.index("--result_dir") + 1] = model / "weights" / "results"
    _one_line_exit_2(train_cli(*args), r"--result_dir .*/model/weights/results lies inside .*/model/weights")
    assert not model.exists()


def test_model_save_dir_equal_to_the_teacher_with_overwrite_is_refused(workspace):
    before = _tree_digest(workspace["teacher"])
    args = recipe_args(workspace, "kd", "paths_teacher")
    args[args.index("--model_save_dir") + 1] = workspace["teacher"]
    _one_line_exit_2(train_cli(*args, "--overwrite"),
                     rf"--model_save_dir {re.escape(workspace['teacher'])} is --teacher_model "
                     rf"{re.escape(workspace['teacher'])}; .* pass a --model_save_dir that neither is, lies inside "
                     rf"nor contains")
    assert _tree_digest(workspace["teacher"]) == before


@pytest.mark.parametrize("key, relation", [("teacher_model", "is"), ("teacher_model", "lies inside"),
                                           ("student_model", "contains"), ("data_dir", "is"),
                                           ("train_data_dir", "contains"), ("train_data_dir_lstm", "lies inside")])
def test_model_save_dir_may_not_be_inside_or_contain_an_input(tmp_path, key, relation):
    given = tmp_path / "input"
    given.mkdir()
    save = {"is": given, "lies inside": given / "out", "contains": tmp_path}[relation]
    cfg = TrainConfig(model_save_dir=str(save), result_dir=str(tmp_path / "r"), **{key: str(given)})
    with pytest.raises(ConfigError, match=rf"^--model_save_dir {re.escape(str(save))} {relation} --{key} "
                                          rf"{re.escape(str(given))};"):
        validate_config(cfg)
    assert not (tmp_path / "r").exists() and not (given / "out").exists()


def test_symbolic_links_are_resolved_before_comparing(tmp_path):
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (tmp_path / "link").symlink_to(teacher)
    cfg = TrainConfig(model_save_dir=str(tmp_path / "link"), result_dir=str(tmp_path / "r"),
                      teacher_model=str(teacher))
    with pytest.raises(ConfigError, match=r"--model_save_dir .*link is --teacher_model .*teacher"):
        validate_config(cfg)


def test_result_dir_and_log_dir_may_not_be_an_input(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(ConfigError, match=r"^--result_dir .*data is --data_dir .*data, an input the run must never "
                                          r"write; pass a --result_dir outside"):
        validate_config(TrainConfig(model_save_dir=str(tmp_path / "m"), result_dir=str(data), data_dir=str(data)))
    with pytest.raises(ConfigError, match=r"^--log_dir .*data/log lies inside --data_dir"):
        validate_config(TrainConfig(model_save_dir=str(tmp_path / "m"), result_dir=str(tmp_path / "r"),
                                    data_dir=str(data), log_dir=str(data / "log")))
    assert not (tmp_path / "m").exists()
    # a result directory holding the data is fine: the run writes only its own files there
    validate_config(TrainConfig(model_save_dir=str(tmp_path / "m"), result_dir=str(tmp_path), data_dir=str(data)))


def test_teacher_logits_inside_an_input_or_a_replaced_entry_is_refused(tmp_path):
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    dirs = dict(model_save_dir=str(tmp_path / "m"), result_dir=str(tmp_path / "r"), teacher_model=str(teacher))
    with pytest.raises(ConfigError, match=r"--teacher_logits .*teacher/x.npz lies inside --teacher_model .*teacher, "
                                          r"an input"):
        validate_config(TrainConfig(teacher_logits=str(teacher / "x.npz"), **dirs))
    with pytest.raises(ConfigError, match=r"--teacher_logits .*m/weights/x.npz lies inside .*m/weights"):
        validate_config(TrainConfig(teacher_logits=str(tmp_path / "m" / "weights" / "x.npz"), **dirs))


def test_the_teacher_recipes_keywords_are_not_paths(tmp_path):
    validate_config(TrainConfig(recipe="teacher", teacher_model="scratch", model_save_dir=str(tmp_path / "scratch"),
                                result_dir=str(tmp_path / "r")))


def test_evaluation_only_may_write_beside_the_model_it_evaluates(tmp_path):
    """The original's evaluation scripts pass the snapshot as --model_save_dir and --result_dir."""
    model = tmp_path / "snapshot_best"
    validate_config(TrainConfig(do_train=False, model_save_dir=str(model), result_dir=str(model),
                                student_model=str(model)))


def test_the_original_scripts_pass_through_the_same_check(tmp_path, capsys):
    snapshot = tmp_path / "teacher" / "snapshot_best"
    snapshot.mkdir(parents=True)
    argv = ["--do_train='True'", "--task_name=SST-2", f"--train_data_dir={tmp_path / 'train'}",
            f"--eval_data_dir={tmp_path / 'eval'}", f"--teacher_model={snapshot}", f"--model_save_dir={snapshot}",
            "--result_dir=", "--device=cpu"]
    assert original.main("task_student_kd", argv) == 2
    assert re.search(rf"--model_save_dir {re.escape(str(snapshot))} is --teacher_model", capsys.readouterr().err)
    assert os.listdir(snapshot) == []


# ---------------------------------------------------------------------------------------- caches
def test_a_teacher_logits_file_that_is_not_a_cache_is_never_overwritten(workspace, tmp_path):
    important = tmp_path / "important.txt"
    important.write_text("my notes\n")
    args = recipe_args(workspace, "kd", "paths_important") + ["--teacher_logits", important]
    _one_line_exit_2(train_cli(*args), rf"{re.escape(str(important))} exists but is not a teacher-logits cache of "
                                       rf"this package .*; it is left untouched: move it away, or pass another "
                                       rf"--teacher_logits")
    assert important.read_text() == "my notes\n"
    assert not (workspace["root"] / "paths_important" / "model" / "weights").exists()


def _tiny_setup(tmp_path, **overrides):
    teacher_dir = tmp_path / "teacher"
    teacher_dir.mkdir(exist_ok=True)
    features = tiny_features(n=12, length=6)
    data = TaskData(None, None, None, features, features, "fp-0")
    cfg = TrainConfig(model_save_dir=str(tmp_path / "student"), result_dir=str(tmp_path / "r"), seq_length=6,
                      eval_batch_size=5, teacher_model=str(teacher_dir), **overrides)
    return cfg, tiny_bert(layers=1), data, str(teacher_dir)


def _write_cache(path, logits, fingerprint, teacher):
    np.savez(path, logits=logits, fingerprint=np.array(fingerprint), teacher=np.array(teacher))


def test_a_student_caches_under_its_own_model_save_dir_and_never_writes_the_teacher(tmp_path):
    cfg, teacher, data, teacher_dir = _tiny_setup(tmp_path)
    logits = teacher_cache.teacher_logits(cfg, teacher, {"seq_length": 6}, data, teacher_dir)
    np.testing.assert_array_equal(logits, predict(teacher, data.train, 5)[0])
    assert os.listdir(teacher_dir) == []
    stored = np.load(tmp_path / "student" / "teacher_logits.npz")
    np.testing.assert_array_equal(stored["logits"], logits)
    # a valid cache written by the teacher's own run is read (and still not written)
    own = os.path.join(teacher_dir, "train_logits.npz")
    marked = logits + 1
    _write_cache(own, marked, "fp-0", teacher_cache._teacher_identity(teacher_dir))
    np.testing.assert_array_equal(teacher_cache.teacher_logits(cfg, teacher, {"seq_length": 6}, data, teacher_dir),
                                  marked)


@pytest.mark.parametrize("bad", ["wrong shape", "wrong dtype", "nan", "inf"])
def test_a_damaged_cache_of_the_right_fingerprint_is_rebuilt_with_one_warning(tmp_path, caplog, bad):
    cfg, teacher, data, teacher_dir = _tiny_setup(tmp_path)
    expected = predict(teacher, data.train, 5)[0]
    stored = {"wrong shape": expected[:5], "wrong dtype": expected.astype(np.float64),
              "nan": np.where(np.arange(expected.size).reshape(expected.shape) == 4, np.nan, expected),
              "inf": np.full_like(expected, np.inf)}[bad].astype(np.float64 if bad == "wrong dtype" else np.float32)
    identity = teacher_cache._teacher_identity(teacher_dir)
    os.makedirs(cfg.model_save_dir)
    cache = os.path.join(cfg.model_save_dir, "teacher_logits.npz")
    _write_cache(cache, stored, "fp-0", identity)
    _write_cache(os.path.join(teacher_dir, "train_logits.npz"), stored, "fp-0", identity)  # the teacher's, too
    before = _tree_digest(teacher_dir)
    with caplog.at_level(logging.WARNING, logger="knowledge_distill_util"):
        logits = teacher_cache.teacher_logits(cfg, teacher, {"seq_length": 6}, data, teacher_dir)
    np.testing.assert_array_equal(logits, expected)
    np.testing.assert_array_equal(np.load(cache)["logits"], expected)        # rebuilt in place
    assert _tree_digest(teacher_dir) == before                                  # the teacher's is never written
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2 and all("computing them again" in w for w in warnings), warnings  # one per file


def test_a_cache_of_another_teacher_or_data_is_not_used(tmp_path):
    cfg, teacher, data, teacher_dir = _tiny_setup(tmp_path)
    expected = predict(teacher, data.train, 5)[0]
    os.makedirs(cfg.model_save_dir)
    cache = os.path.join(cfg.model_save_dir, "teacher_logits.npz")
    for fingerprint, identity in (("fp-0", "/elsewhere@1"), ("fp-1", teacher_cache._teacher_identity(teacher_dir))):
        _write_cache(cache, expected + 1, fingerprint, identity)
        np.testing.assert_array_equal(teacher_cache.teacher_logits(cfg, teacher, {"seq_length": 6}, data, teacher_dir),
                                      expected)


@pytest.mark.parametrize("content", [b"my notes\n", b"PK\x03\x04 truncated", "npz of other keys", "npy"])
def test_a_file_that_is_not_a_cache_is_refused_and_left_untouched(tmp_path, content):
    target = tmp_path / "important.npz"
    cfg, teacher, data, teacher_dir = _tiny_setup(tmp_path, teacher_logits=str(target))
    if content == "npz of other keys":
        np.savez(target, embeddings=np.zeros(3))
    elif content == "npy":
        np.save(open(target, "wb"), np.zeros(3))
    else:
        target.write_bytes(content)
    before = target.read_bytes()
    for check in (lambda: run_module.check_run_directory(cfg),
                  lambda: teacher_cache.teacher_logits(cfg, teacher, {"seq_length": 6}, data, teacher_dir)):
        with pytest.raises(ConfigError, match=rf"^{re.escape(str(target))} exists but is not a teacher-logits cache"):
            check()
    assert target.read_bytes() == before


# ------------------------------------------------------------------- the Distilled-BiLSTM teacher's view
L, VOCAB = 16, 30


def _parts(rows, seed, low, high):
    rng = np.random.default_rng(seed)
    ids = rng.integers(low, high, size=(rows, L))
    ids[:, 0] = 2
    mask = np.ones_like(ids)
    mask[:, 12:] = 0
    ids[:, 12:] = 0
    return Features(ids, mask, np.zeros_like(ids), np.random.default_rng(7).integers(0, 2, size=rows))


@pytest.mark.parametrize("student_length", [L, 8])
def test_the_bilstm_teacher_reads_the_bert_parts_whatever_the_lengths(tmp_path, student_length):
    """Issue 18 item 2: with ``--seq_length`` equal to ``--student_seq_length`` the teacher was fed the LSTM
    parts. Its cached logits must equal its logits on the BERT parts; its folder is never written."""
    data = tmp_path / "glue_ofrecord"
    bert, lstm = _parts(20, 0, 5, VOCAB), _parts(20, 1, 3, 12)
    lstm = Features(lstm.input_ids[:, :student_length], lstm.input_mask[:, :student_length],
                    np.ones_like(lstm.input_ids[:, :student_length]), bert.labels)
    write_ofrecord_parts(bert, data / "SST-2" / "train", prefix=TRAIN_PREFIX)
    write_ofrecord_parts(bert, data / "SST-2" / "eval", prefix=EVAL_PREFIX)
    write_ofrecord_parts(lstm, data / f"SST-2_lstm_{student_length}" / "train", prefix=TRAIN_PREFIX)
    write_ofrecord_parts(lstm, data / f"SST-2_lstm_{student_length}" / "eval", prefix=EVAL_PREFIX)
    flow.manual_seed(0)
    teacher = BertForSequenceClassification(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                            num_attention_heads=2, intermediate_size=64, max_position_embeddings=32,
                                            label_num=2)
    teacher_dir = tmp_path / "teacher" / "snapshot_best"
    save_snapshot(teacher, teacher_dir, scope="teacher")
    before = _tree_digest(tmp_path / "teacher")
    out = tmp_path / "student"
    argv = ["--do_train='True'", "--do_eval='True'", "--task_name=SST-2", "--num_epochs=1",
            f"--train_data_dir={data / 'SST-2' / 'train'}", f"--eval_data_dir={data / 'SST-2' / 'eval'}",
            f"--train_data_dir_lstm={data / f'SST-2_lstm_{student_length}' / 'train'}",
            f"--eval_data_dir_lstm={data / f'SST-2_lstm_{student_length}' / 'eval'}",
            f"--teacher_model={teacher_dir}", f"--model_save_dir={out}", "--result_dir=",
            "--batch_size_per_device=8", "--eval_batch_size_per_device=8", f"--seq_length={L}",
            f"--student_seq_length={student_length}", "--student_hidden_size=16", "--student_vocab_size=12",
            "--teacher_num_hidden_layers=2", "--teacher_num_attention_heads=2", "--teacher_hidden_size=32",
            "--max_steps=2", "--device=cpu"]
    assert original.main("task_student_kd_lstm", argv) == 0
    cached = np.load(out / "teacher_logits.npz")["logits"]
    on_bert = predict(teacher, bert, 8)[0]
    np.testing.assert_allclose(cached, on_bert, rtol=1e-5, atol=1e-6)
    if student_length == L:  # the LSTM parts are valid input for the teacher too: the two views differ
        assert np.abs(cached - predict(teacher, lstm, 8)[0]).max() > 1e-3
    assert _tree_digest(tmp_path / "teacher") == before


def test_a_resume_compares_where_paths_point_not_how_they_are_written(tmp_path, monkeypatch):
    """The run's directory and its teacher given relative at the start and absolute on --resume (or the run moved)
    are the same run; another teacher is not."""
    import dataclasses
    import json

    from knowledge_distill_util.training import parse_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "teacher").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "run").mkdir()
    started = parse_config(["--recipe", "kd", "--teacher_model", "teacher", "--model_save_dir", "old/place"])
    (tmp_path / "run" / "run_config.json").write_text(json.dumps(dataclasses.asdict(started)))

    def resume(teacher):
        return parse_config(["--recipe", "kd", "--teacher_model", teacher, "--model_save_dir", str(tmp_path / "run"),
                             "--resume"])

    run_module.check_run_directory(resume(str(tmp_path / "teacher")))
    run_module.check_run_directory(resume("./teacher/"))
    with pytest.raises(ConfigError, match=r"^--resume would change the run in .*\(teacher_model 'teacher' -> "
                                          r"'other'\); resume with its settings"):
        run_module.check_run_directory(resume("other"))
