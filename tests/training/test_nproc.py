"""``kdu-train --nproc`` (knowledge_distill_util/cli/main.py with engine/launch.py): a bad value is one sentence
and exit status 2 before any work; ``auto`` resolves from the configuration; ``--nproc 2`` runs the job under
OneFlow's launcher and rank 0 writes the model and results."""
import json
import os
import subprocess

import pytest

from knowledge_distill_util.cli import main as entry
from knowledge_distill_util.engine import launch

from .conftest import PYTHON, recipe_args


def _train(capsys, *args):
    status = entry.main(["train", *[str(a) for a in args]])
    return status, capsys.readouterr().err


@pytest.mark.parametrize("nproc, sentence", [
    ("0", "--nproc must be a positive number of processes or 'auto', got '0'"),
    ("-1", "--nproc must be a positive number of processes or 'auto', got '-1'"),
    ("abc", "--nproc must be a positive number of processes or 'auto', got 'abc'"),
    ("999", "--nproc 999 is more than the {cpus} CPU cores this process may use; pass at most {cpus} or --nproc auto"),
])
def test_a_bad_nproc_is_one_sentence_and_exit_2_before_any_work(workspace, capsys, nproc, sentence):
    args = recipe_args(workspace, "kd", f"nproc_bad_{nproc}")
    status, err = _train(capsys, *args, "--nproc", nproc)
    assert status == 2
    assert err.strip().splitlines() == ["error: " + sentence.format(cpus=launch.usable_cpus())]
    assert not os.path.exists(workspace["root"] / f"nproc_bad_{nproc}")


def test_a_batch_that_does_not_split_and_conflicting_flags_are_refused(workspace, capsys, monkeypatch):
    monkeypatch.setattr(launch, "usable_cpus", lambda: 2)
    args = recipe_args(workspace, "kd", "nproc_refused")
    status, err = _train(capsys, *args, "--batch_size_per_device", "7", "--nproc", "2")
    assert status == 2 and err.strip() == (
        "error: --nproc 2 cannot split the batch of 7 rows (--batch_size_per_device) into 2 equal parts; pass a batch "
        "divisible by 2, another --nproc or --nproc auto")
    status, err = _train(capsys, *args, "--nproc", "2", "--gpu_num_per_node", "2")
    assert status == 2 and err.strip() == ("error: --nproc and the original --gpu_num_per_node both set the "
                                           "processes; pass one of them")
    status, err = _train(capsys, "--recipe", "tinybert_general", "--quick", "--nproc", "2")
    assert status == 2 and err.strip() == "error: --nproc 2: recipe 'tinybert_general' runs in one process; pass --nproc 1"
    monkeypatch.setenv("KDU_NPROC", "two")
    status, err = _train(capsys, *args)
    assert status == 2 and err.strip().startswith("error: environment variable KDU_NPROC='two' must be")
    assert not os.path.exists(workspace["root"] / "nproc_refused")


def test_nproc_outside_kdu_train_is_refused(workspace, capsys):
    from knowledge_distill_util.cli.train import main

    status = main([str(a) for a in recipe_args(workspace, "kd", "nproc_in_run")] + ["--nproc", "2"])
    assert status == 2 and "--nproc is read by kdu-train (python -m knowledge_distill_util train) on its command line " \
                           "only" in capsys.readouterr().err


def test_auto_resolves_from_the_configuration(workspace, monkeypatch, tmp_path):
    monkeypatch.setattr(launch, "usable_cpus", lambda: 2)
    args = [str(a) for a in recipe_args(workspace, "kd", "nproc_auto")]  # --quick: batch 8
    assert entry._processes(args, "auto", explicit=False) == (2, 8)
    assert entry._processes(args + ["--batch_size_per_device", "9"], "auto", explicit=False) == (1, 9)
    assert entry._processes(args + ["--do_train", "false"], "auto", explicit=False) == (1, 8)
    assert entry._processes(args + ["--device", "tpu"], "auto", explicit=False) is None  # the run says why
    assert entry._processes(args + ["--no_such_key", "1"], "auto", explicit=False) is None
    assert entry._processes(args + ["--seq_length", "0"], "auto", explicit=False) is None  # validate_config's
    assert entry._processes(args + ["--gpu_num_per_node", "2"], "auto", explicit=False) is None
    # no task or no data directory: the one-process run says so, before any process starts
    assert entry._processes(args + ["--task_name", ""], "auto", explicit=False) is None
    assert entry._processes(args + ["--data_dir", str(tmp_path / "absent")], "auto", explicit=False) is None
    # --resume: the processes the run was started with (its run_config.json holds the batch per process)
    resumed = args + ["--resume", "--model_save_dir", str(tmp_path)]
    (tmp_path / "run_config.json").write_text(json.dumps({"batch_size_per_device": 8}))
    assert entry._processes(resumed, "auto", explicit=False) == (1, 8)
    (tmp_path / "run_config.json").write_text(json.dumps({"batch_size_per_device": 4}))
    assert entry._processes(resumed, "auto", explicit=False) == (2, 8)
    (tmp_path / "run_config.json").write_text("{not json")
    assert entry._processes(resumed, "auto", explicit=False) == (2, 8)


def test_nproc_2_trains_under_the_launcher_and_rank_0_writes_the_model_and_results(workspace):
    tag = "nproc_two"
    args = recipe_args(workspace, "kd", tag) + ["--max_steps", "2", "--nproc", "2"]
    env = dict(os.environ, GLOG_minloglevel="3", KDU_MASTER_PORT=str(launch.free_port()))
    done = subprocess.run([PYTHON, "-m", "knowledge_distill_util", "train", *[str(a) for a in args]],
                          capture_output=True, text=True, env=env, timeout=300, start_new_session=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "starting 2 processes, 4 rows each of every batch of 8 (--nproc 2): " in done.stderr
    assert "oneflow.distributed.launch --nproc_per_node 2" in done.stderr
    assert "OMP_NUM_THREADS" not in done.stderr + done.stdout  # the launcher's banner (engine.launch.LauncherOutput)
    model, results = workspace["root"] / tag / "model", workspace["root"] / tag / "results"
    assert (model / "model_config.json").is_file() and (model / "weights" / "model.safetensors").is_file()
    assert json.loads((model / "run_config.json").read_text())["batch_size_per_device"] == 4
    evaluated = json.loads((results / "results_eval.json").read_text())
    assert evaluated and not list(results.glob("*.tmp*"))
