"""End-to-end runs of every recipe (``--quick``, tiny data, tiny models) through ``kdu-train``'s module, in
subprocesses with timeouts, and the bad inputs that must stop a run with one clear sentence before training
starts."""
import json
import os
import shutil
import subprocess

import pytest

from training.conftest import PYTHON, TIMEOUT, TINY_STUDENT, TINY_TEACHER, recipe_args, train_cli

STAGES = {"baseline": ["baseline"], "kd": ["kd"], "bilstm": ["bilstm"], "bert_pkd": ["bert_pkd"],
          "tinybert": ["intermediate", "pred"], "theseus": ["theseus", "successor"],
          "minilm": ["minilm", "pred"]}
#: MiniLM with a student half the teacher's width (16 vs 32, both 2 heads): no projection is needed (the same
#: width: the minilm job of tests/training/test_compression.py).
NARROW = ["--student_hidden_size", "16", "--student_intermediate_size", "32"]


def assert_a_quick_run(results_dir, model_dir, recipe):
    """The outputs of a finished ``--quick`` run of ``recipe`` (3 steps in each stage of :data:`STAGES`):
    the evaluation's keys, the configuration, each stage's loss log and plot, the model, the progress file.
    Checked on the run below and on every job of ``kdu-compress --quick``
    (tests/training/test_compression.py::test_run_compression_quick), which runs each recipe once."""
    results = json.loads((results_dir / "results_eval.json").read_text())
    for key in ("accuracy", "mcc", "precision", "recall", "f1", "modelSize", "reasoningTime"):
        assert key in results, key
    assert 0.0 <= results["accuracy"] <= 1.0 and results["modelSize"] > 0
    config = json.loads((results_dir / "config.json").read_text())
    assert config["recipe"] == recipe and config["max_steps"] == 3
    for stage in STAGES[recipe]:
        rows = (results_dir / f"{stage}_losses.csv").read_text().splitlines()
        assert len(rows) == 1 + 3 and rows[0].startswith("step,epoch,lr,seconds,loss")   # --quick: 3 steps
        assert (results_dir / f"{stage}_losses.png").stat().st_size > 0
    assert (model_dir / "model_config.json").is_file()
    progress = json.loads((results_dir / "progress.json").read_text())
    assert progress["stage"] == STAGES[recipe][-1] and progress["step"] == progress["total"] == 3


def test_minilm_runs_end_to_end_with_a_narrower_student(workspace):
    """The recipes' end-to-end runs are the jobs of ``kdu-compress --quick`` (:func:`assert_a_quick_run`);
    this one is MiniLM's with a student narrower than its teacher (:data:`NARROW`)."""
    done = train_cli(*recipe_args(workspace, "minilm", "minilm"), *NARROW)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_a_quick_run(workspace["root"] / "minilm" / "results", workspace["root"] / "minilm" / "model", "minilm")
    _assert_a_narrower_minilm_student(workspace["root"] / "minilm")


def test_graph_and_resume_and_an_existing_run_needs_resume_or_overwrite(workspace):
    """A finished run (nn.Graph) started again is refused without ``--resume``/``--overwrite`` and with
    ``--resume`` and another setting; ``--resume --max_steps 5`` continues its 3 steps; ``--overwrite``
    (eager) starts it again."""
    args = recipe_args(workspace, "kd", "kd_graph") + ["--use_graph"]
    first = train_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    _assert_stops_before_training(train_in_process(*args),
                                  r"already holds a run; pass --resume to continue it, --overwrite")
    changed = train_in_process(*args, "--resume", "--learning_rate", "0.5")
    _assert_stops_before_training(changed, r"--resume would change the run in .*\(learning_rate 5e-05 -> 0\.5\)")
    again = train_cli(*args, "--resume", "--max_steps", "5")   # continue the finished 3 steps to 5
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from" in again.stderr and "at step 3/5" in again.stderr
    rows = (workspace["root"] / "kd_graph" / "results" / "kd_losses.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5"]
    done = train_cli(*recipe_args(workspace, "kd", "kd_graph"), "--overwrite")
    assert done.returncode == 0, done.stderr[-2000:]


def test_killed_run_resumes_to_the_uninterrupted_result(workspace):
    """SIGKILL a run after its first checkpoint; ``--resume`` ends with the uninterrupted run's weights."""
    import time

    import numpy as np

    from knowledge_distill_util.models.init import read_state

    extra = ["--max_steps", "24", "--num_epochs", "4", "--checkpoint_every", "4", "--student_hidden_dropout_prob", "0",
             "--student_attention_probs_dropout_prob", "0"]
    whole = train_cli(*recipe_args(workspace, "kd", "kd_whole"), *extra)
    assert whole.returncode == 0, whole.stderr[-2000:]
    args = [PYTHON, "-m", "knowledge_distill_util", "train", *map(str, recipe_args(workspace, "kd", "kd_kill")), *extra]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=dict(os.environ, GLOG_minloglevel="3"))
    latest = workspace["root"] / "kd_kill" / "model" / "checkpoints" / "kd" / "LATEST"
    deadline = time.time() + TIMEOUT
    while not latest.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.kill()
    process.wait(timeout=30)
    resumed = train_cli(*recipe_args(workspace, "kd", "kd_kill"), *extra, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert process.returncode == -9        # killed mid-run: 20 steps were still to go
    assert "resumed from" in resumed.stderr
    rows = (workspace["root"] / "kd_kill" / "results" / "kd_losses.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(i) for i in range(1, 25)]
    a = read_state(workspace["root"] / "kd_whole" / "model" / "weights")
    b = read_state(workspace["root"] / "kd_kill" / "model" / "weights")
    assert max(float(np.abs(a[k].numpy() - b[k].numpy()).max()) for k in a) == 0.0


@pytest.mark.parametrize("recipe", ["theseus", "tinybert"])
def test_two_stage_recipes_in_graph(workspace, recipe):
    """Theseus (replacement coins as a graph input) and TinyBERT (teacher inside the graph) in nn.Graph."""
    done = train_cli(*recipe_args(workspace, recipe, f"{recipe}_graph"), "--use_graph")
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads((workspace["root"] / f"{recipe}_graph" / "results" / "config.json").read_text())
    assert config["use_graph"] is True


def _assert_a_narrower_minilm_student(run):
    """The MiniLM run in ``run`` (flags :data:`NARROW`) logged its losses and saved a 16-wide task model."""
    rows = (run / "results" / "minilm_losses.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,lr,seconds,loss,match0_attention_kl,match1_relation_kl") and len(rows) == 4
    assert all(float(row.split(",")[-1]) > 0 for row in rows[1:])
    config = json.loads((run / "model" / "model_config.json").read_text())["config"]
    assert config["hidden_size"] == 16 and not config.get("is_student")


def test_minilm_distils_a_narrower_student_in_graph(workspace):
    """:data:`NARROW` under nn.Graph (eager: :func:`test_minilm_runs_end_to_end_with_a_narrower_student`)."""
    done = train_cli(*recipe_args(workspace, "minilm", "minilm_narrow_graph"), *NARROW, "--use_graph")
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_a_narrower_minilm_student(workspace["root"] / "minilm_narrow_graph")


def test_minilm_needs_the_teachers_head_count(workspace):
    done = train_in_process(*recipe_args(workspace, "minilm", "minilm_heads"), "--student_num_attention_heads", "4")
    _assert_stops_before_training(done, r"student_num_attention_heads is 4 but teacher .* has 2 heads; MiniLM "
                                        r"compares attention heads one to one: pass --student_num_attention_heads 2")


def test_minilm_v2_distils_a_narrower_student_with_other_heads(workspace):
    """MiniLMv2: student 16 wide with 4 heads, teacher 32 wide with 2, 4 relation heads, teacher layer 0 of 2."""
    done = train_cli(*recipe_args(workspace, "minilm_v2", "minilm_v2"), "--student_hidden_size", "16",
                     "--student_intermediate_size", "32", "--student_num_attention_heads", "4",
                     "--num_relation_heads", "4", "--minilm_teacher_layer", "0")
    assert done.returncode == 0, done.stderr[-2000:]
    results = workspace["root"] / "minilm_v2" / "results"
    rows = (results / "minilm_v2_losses.csv").read_text().splitlines()
    # the matches of the queries, the keys and the values (training/stage_configs.py)
    assert rows[0].startswith("step,epoch,lr,seconds,loss,match0_relation_kl,match1_relation_kl,match2_relation_kl")
    assert len(rows) == 4 and len((results / "pred_losses.csv").read_text().splitlines()) == 4
    assert json.loads((results / "config.json").read_text())["minilm_teacher_layer"] == 0


@pytest.mark.parametrize("flags, pattern", [
    (["--num_relation_heads", "12"], r"num_relation_heads 12 does not divide student_hidden_size 32; pass a "
                                     r"--num_relation_heads dividing both 32 and 32"),
    (["--num_relation_heads", "2", "--minilm_teacher_layer", "2"],
     r"minilm_teacher_layer 2 is not a layer of teacher .*, which has 2; pass a layer from 0 to 1 \(-1: the last\)"),
    (["--num_relation_heads", "0"], r"--num_relation_heads must be a positive integer, got 0"),
])
def test_minilm_v2_bad_relation_settings_stop_before_training(workspace, flags, pattern):
    done = train_in_process(*recipe_args(workspace, "minilm_v2", "minilm_v2_bad"), *flags)
    _assert_stops_before_training(done, pattern)


def train_in_process(*args):
    """``kdu-train ARGS`` in this process (:func:`knowledge_distill_util.cli.main.main`, which ``python -m
    knowledge_distill_util train`` runs): its exit status (a ``SystemExit``'s code) and what it printed, as
    from :func:`train_cli`. For runs refused before any work only (a subprocess costs OneFlow's start-up,
    1-1.5 s); a run that trains goes through :func:`train_cli`. The refusal of a second run while the first
    is running (:func:`test_two_runs_on_one_directory`) stays a subprocess, which checks the exit status 2
    of the real process."""
    import contextlib
    import io

    from knowledge_distill_util.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["train", *map(str, args)])
        except SystemExit as done:
            code = done.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def _assert_stops_before_training(done, pattern):
    import re

    assert done.returncode == 2, (done.stdout[-1000:], done.stderr[-1000:])
    assert re.search(pattern, done.stderr), done.stderr
    assert "stage " not in done.stderr and done.stderr.count("\n") <= 2   # one line; no stage started


def test_missing_data_dir(workspace):
    args = recipe_args(workspace, "kd", "err1")
    args[args.index("--data_dir") + 1] = workspace["root"] / "nowhere"
    _assert_stops_before_training(train_in_process(*args),
                                  r"data directory '.*nowhere' does not exist; pass --data_dir")
    assert not (workspace["root"] / "err1").exists()   # a refused run creates no output directory


def _bad_copy(workspace, name, line):
    bad = workspace["root"] / name
    shutil.copytree(workspace["data"], bad)
    with open(bad / "train.tsv", "a", encoding="utf-8") as stream:
        stream.write(line)
    return bad


def test_wrong_column_count(workspace):
    bad = _bad_copy(workspace, "bad_columns", "a line without any tab\n")
    args = recipe_args(workspace, "kd", "err2")
    args[args.index("--data_dir") + 1] = bad
    _assert_stops_before_training(train_in_process(*args), r"train\.tsv, line \d+: expected 2 tab-separated columns")


def test_unknown_label(workspace):
    bad = _bad_copy(workspace, "bad_label", "some text\tno_such_label\n")
    args = recipe_args(workspace, "kd", "err3")
    args[args.index("--data_dir") + 1] = bad
    _assert_stops_before_training(train_in_process(*args), r"train\.tsv, line \d+: unknown label 'no_such_label'")


def test_teacher_that_does_not_fit(workspace):
    args = recipe_args(workspace, "bert_pkd", "err4") + ["--student_num_hidden_layers", "3"]
    _assert_stops_before_training(train_in_process(*args),
                                  r"teacher checkpoint .*teacher has 2 layers, not a multiple of student_num_hidden_layers=3")
    broken = workspace["root"] / "broken_teacher"
    shutil.copytree(workspace["teacher"], broken)
    meta = json.loads((broken / "model_config.json").read_text())
    meta["config"]["intermediate_size"] = 48
    (broken / "model_config.json").write_text(json.dumps(meta))
    args = recipe_args(workspace, "kd", "err5")
    args[args.index("--teacher_model") + 1] = broken
    _assert_stops_before_training(train_in_process(*args), r"teacher checkpoint .*broken_teacher does not fit "
                                                           r"its model_config\.json: saved tensor .* has shape")


def test_unknown_config_key(workspace):
    config = workspace["root"] / "bad_config.json"
    config.write_text(json.dumps({"recipe": "kd", "kd_alpah": 0.8}))
    args = recipe_args(workspace, "kd", "err6")
    args += ["--config", config]
    _assert_stops_before_training(train_in_process(*args),
                                  r"unknown configuration key 'kd_alpah' in .*bad_config\.json; did you mean 'kd_alpha'")


def test_regression_task_sts_b(tmp_path):
    """STS-B (one output, scores 0-5): teacher and a distilled student train and report Pearson/Spearman."""
    import numpy as np

    rng = np.random.default_rng(0)
    words = ["cat", "dog", "car", "tree", "house", "river", "music", "code"]
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    data = tmp_path / "sts"
    data.mkdir()
    for split, count in (("train", 40), ("dev", 16)):
        lines = [header]
        for i in range(count):
            a, b = rng.choice(words, 4), rng.choice(words, 4)
            score = 5.0 * len(set(a) & set(b)) / 4
            lines.append(f"{i}\tg\tf\t2020\t{i}\ts\ts\t{' '.join(a)}\t{' '.join(b)}\t{score:.2f}\n")
        (data / f"{split}.tsv").write_text("".join(lines))
    teacher = tmp_path / "teacher"
    done = train_cli("--recipe", "teacher", "--quick", "--data_dir", data, "--task_name", "sts-b", "--model_save_dir",
                     teacher, "--result_dir", tmp_path / "teacher_results", *TINY_TEACHER)
    assert done.returncode == 0, done.stderr[-2000:]
    done = train_cli("--recipe", "kd", "--quick", "--data_dir", data, "--task_name", "sts-b", "--teacher_model",
                     teacher, "--model_save_dir", tmp_path / "kd", "--result_dir", tmp_path / "kd_results", *TINY_STUDENT)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "kd_results" / "results_eval.json").read_text())
    assert {"pearson", "spearmanr", "mse", "modelSize", "reasoningTime"} <= set(results)
    assert results["main_metric"] == "pearson"


def test_a_resume_on_changed_data_is_refused(workspace, tmp_path):
    """Issue 16: a resume after train.tsv lost rows (or changed one) silently changed the run."""
    data = tmp_path / "data"
    shutil.copytree(workspace["data"], data)
    args = recipe_args(workspace, "kd", "resume_data") + ["--max_train_examples", "0"]  # every row is used
    args[args.index("--data_dir") + 1] = data
    assert train_cli(*args).returncode == 0
    run_config = workspace["root"] / "resume_data" / "model" / "run_config.json"
    stored = json.loads(run_config.read_text())["train_data"]
    train = data / "train.tsv"
    original = train.read_text(encoding="utf-8")
    lines = original.splitlines(keepends=True)
    train.write_text("".join(lines[:-10]), encoding="utf-8")
    _assert_stops_before_training(train_in_process(*args, "--resume", "--max_steps", "4"),
                                  rf"--resume would continue the run in .*resume_data/model on other data \("
                                  rf"{stored['rows']} training rows -> {stored['rows'] - 10}\); restore the data the "
                                  rf"run started with, or start again with --overwrite")
    train.write_text("".join(lines[:1] + [lines[2]] + lines[2:]), encoding="utf-8")  # as many rows, one changed
    _assert_stops_before_training(train_in_process(*args, "--resume", "--max_steps", "4"),
                                  rf"on other data \(the training rows' fingerprint {stored['sha1']} -> [0-9a-f]+\)")
    train.write_text(original, encoding="utf-8")
    assert json.loads(run_config.read_text())["train_data"] == stored
    older = json.loads(run_config.read_text())
    del older["train_data"]                         # a run written before the fingerprint was stored
    run_config.write_text(json.dumps(older))
    resumed = train_cli(*args, "--resume", "--max_steps", "4")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "predates the training data's fingerprint: resuming without checking" in resumed.stderr
    assert json.loads(run_config.read_text())["train_data"] == stored


def test_two_runs_on_one_directory(workspace):
    """The second writer stops with one sentence naming the first; the first finishes unharmed."""
    import time

    args = recipe_args(workspace, "kd", "kd_two") + ["--max_steps", "40", "--num_epochs", "20"]
    first = subprocess.Popen([PYTHON, "-m", "knowledge_distill_util", "train", *map(str, args)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, GLOG_minloglevel="3"))
    lock = workspace["root"] / "kd_two" / "model" / ".kdu.lock"
    deadline = time.time() + TIMEOUT
    while not lock.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    second = train_cli(*args, "--overwrite")
    assert first.wait(timeout=TIMEOUT) == 0, first.stderr.read()[-2000:]
    _assert_stops_before_training(second, rf"another run \(pid {first.pid} on .*\) is writing to .*kd_two")
    rows = (workspace["root"] / "kd_two" / "results" / "kd_losses.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(i) for i in range(1, 41)]      # one clean log


@pytest.mark.parametrize("flags, message", [
    (["--device", "tpu"], r"--device: unknown device 'tpu'"),
    (["--batch_size_per_device", "0"], r"--batch_size_per_device must be a positive integer, got 0"),
    (["--warmup_proportion", "1.0"], r"--warmup_proportion must be a number in \[0, 1\)"),
])
def test_bad_values_stop_before_any_work(workspace, flags, message):
    _assert_stops_before_training(train_in_process(*recipe_args(workspace, "kd", "err_values"), *flags), message)
    assert not (workspace["root"] / "err_values").exists()


def test_progress_file_has_the_eta(tmp_path):
    from knowledge_distill_util.training.run import _progress_writer

    now = [50.0]
    write = _progress_writer(str(tmp_path / "progress.json"), "kd", clock=lambda: now[0])
    write(4, 10, {"loss": 1.5})
    assert json.loads((tmp_path / "progress.json").read_text()) == {
        "stage": "kd", "step": 4, "total": 10, "loss": 1.5, "eta_seconds": None}
    now[0] = 56.0
    write(7, 10, {"loss": 1.25})                  # 3 steps in 6 s: 3 steps left take 6 s
    assert json.loads((tmp_path / "progress.json").read_text())["eta_seconds"] == 6.0


def test_piped_run_logs_its_progress(tmp_path):
    """Off a terminal (stderr piped), each stage logs step/total, loss, samples/s and ETA lines."""
    from knowledge_distill_util.data import prepare_default_data

    task, _ = prepare_default_data(str(tmp_path / "data"), seed=0, source="synthetic", max_per_class=30)
    done = train_cli("--recipe", "lstm", "--quick", "--data_dir", tmp_path / "data", "--task_name", task,
                     "--model_save_dir", tmp_path / "m", "--result_dir", tmp_path / "r", "--progress_every", "1e-9",
                     *TINY_STUDENT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[knowledge_distill_util.engine.progress] stage lstm: step 3/3 (100%), loss " in done.stderr
    assert " samples/s, ETA 0s" in done.stderr


def test_pkd_patience_runs_with_the_last_strategy(workspace):
    """BERT-PKD as published: a 2-layer student (one intermediate layer matched), strategy 'last', --quick."""
    done = train_cli(*recipe_args(workspace, "pkd_patience", "pkd_patience"), "--student_num_hidden_layers", "2",
                     "--student_init", "scratch", "--pkd_strategy", "last")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = (workspace["root"] / "pkd_patience" / "results" / "pkd_patience_losses.csv").read_text().splitlines()
    assert rows[0].startswith(  # the stage's DistillationConfig terms (training/stage_configs.py)
        "step,epoch,lr,seconds,loss,soft_cross_entropy,hard_label,match0_pkd_patience_loss") and len(rows) == 4
    assert all(float(row.split(",")[-1]) > 0 for row in rows[1:])


def test_multi_teacher_kd_caches_the_weighted_average_of_its_teachers(workspace, tmp_path):
    """Two teachers (the workspace teacher and a copy: the average equals its logits) with weights 1 and 3:
    the combined logits are cached in the student's folder, the teachers' folders are only read."""
    import numpy as np

    second = tmp_path / "teacher_copy"
    shutil.copytree(workspace["teacher"], second)
    args = [a for a in recipe_args(workspace, "multi_teacher_kd", "multi") if a != "--teacher_model"]
    args.remove(workspace["teacher"])
    done = train_cli(*args, "--teacher_models", f"{workspace['teacher']},{second}", "--teacher_weights", "1,3")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 teachers' combined logits cached" in done.stderr
    combined = np.load(workspace["root"] / "multi" / "model" / "teacher_logits.npz")["logits"]
    own = np.load(os.path.join(workspace["teacher"], "train_logits.npz"))["logits"]
    np.testing.assert_allclose(combined, own[:len(combined)], rtol=1e-6, atol=1e-6)
    assert sorted(os.listdir(second)) == sorted(os.listdir(workspace["teacher"]))   # nothing written there
