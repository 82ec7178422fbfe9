"""Fault injection: runs killed with SIGKILL at random moments resume to the uninterrupted result (also with
dropout on, under --reseed_dropout), and corrupted files give one sentence naming the file, or are rebuilt."""
import os
import random
import subprocess
import time

import numpy as np
import pytest

from knowledge_distill_util.models.init import read_state
from training.conftest import PYTHON, recipe_args, train_cli
from training.test_run import train_in_process

EXTRA = ["--max_steps", "24", "--num_epochs", "6", "--checkpoint_every", "1"]


def _weights(path):
    state = read_state(str(path))
    return {k: v.numpy() for k, v in state.items()}


def _max_diff(a, b):
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def _kill_randomly(args, kills, seed, progress_file, total):
    """``kills`` times: start (or resume) the run and SIGKILL it once ``progress.json`` reports a randomly
    chosen step (checkpoints are written every step, so the kill can land inside a checkpoint write)."""
    import json

    rng = random.Random(seed)
    env = dict(os.environ, GLOG_minloglevel="3")
    killed, reached = 0, 0
    for attempt in range(kills):
        target = rng.randint(reached + 1, max(reached + 1, total - kills + attempt))
        process = subprocess.Popen([PYTHON, "-m", "knowledge_distill_util", "train", *map(str, args),
                                    *(["--resume"] if attempt else [])],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.time() + 300
        while process.poll() is None and time.time() < deadline:
            try:
                with open(progress_file, encoding="utf-8") as stream:
                    step = json.load(stream)["step"]
            except (OSError, ValueError):
                step = 0
            if step >= target:
                time.sleep(rng.uniform(0.0, 0.05))  # somewhere inside the next step or its checkpoint
                break
            time.sleep(0.005)
        process.kill()
        killed += process.wait(timeout=60) == -9
        reached = target
    return killed


@pytest.mark.slow
@pytest.mark.parametrize("dropout", ["0.2"], ids=["dropout-reseeded"])  # the harder case; no dropout: test_run.py
def test_random_sigkills_resume_to_the_uninterrupted_weights(workspace, dropout):
    flags = EXTRA + ["--student_hidden_dropout_prob", dropout, "--student_attention_probs_dropout_prob", dropout]
    if dropout != "0":
        flags.append("--reseed_dropout")
    whole = train_cli(*recipe_args(workspace, "kd", f"fault_whole_{dropout}"), *flags)
    assert whole.returncode == 0, whole.stderr[-2000:]
    args = recipe_args(workspace, "kd", f"fault_cut_{dropout}") + flags
    progress = workspace["root"] / f"fault_cut_{dropout}" / "results" / "progress.json"
    assert _kill_randomly(args, kills=3, seed=int(float(dropout) * 10), progress_file=progress, total=24) == 3
    resumed = train_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    root = workspace["root"]
    a = _weights(root / f"fault_whole_{dropout}" / "model" / "weights")
    b = _weights(root / f"fault_cut_{dropout}" / "model" / "weights")
    assert _max_diff(a, b) == 0.0
    rows = (root / f"fault_cut_{dropout}" / "results" / "kd_losses.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(i) for i in range(1, 25)]


def test_a_truncated_teacher_cache_is_neither_used_nor_written(workspace, tmp_path):
    teacher = tmp_path / "teacher"
    import shutil

    shutil.copytree(workspace["teacher"], teacher)
    cache = teacher / "train_logits.npz"
    cache.write_bytes(cache.read_bytes()[:100])
    args = recipe_args(workspace, "kd", "fault_logits")
    args[args.index("--teacher_model") + 1] = teacher
    done = train_cli(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "the teacher's cache is not used" in done.stderr and len(cache.read_bytes()) == 100  # an input: untouched
    own = workspace["root"] / "fault_logits" / "model" / "teacher_logits.npz"
    assert np.load(own)["logits"].shape[0] > 0                                  # computed, cached in the run's own


def test_a_truncated_checkpoint_stops_the_resume_and_deletes_nothing(workspace):
    args = recipe_args(workspace, "kd", "fault_ckpt")
    assert train_cli(*args).returncode == 0
    checkpoint = workspace["root"] / "fault_ckpt" / "model" / "checkpoints" / "kd" / "step-00000003"
    for name in os.listdir(checkpoint / "model"):
        target = checkpoint / "model" / name
        for piece in ([target] if target.is_file() else [target / f for f in os.listdir(target)]):
            piece.write_bytes(piece.read_bytes()[:7])
    done = train_cli(*args, "--resume")
    assert done.returncode == 2 and "no readable checkpoint under" in done.stderr, done.stderr[-2000:]
    assert checkpoint.is_dir()


def test_a_corrupt_model_config_names_the_file(workspace, tmp_path):
    import shutil

    teacher = tmp_path / "teacher"
    shutil.copytree(workspace["teacher"], teacher)
    (teacher / "model_config.json").write_text('{"architecture": "bert", ')
    args = recipe_args(workspace, "kd", "fault_meta")
    args[args.index("--teacher_model") + 1] = teacher
    done = train_in_process(*args)  # refused before any work: no OneFlow start-up of its own
    assert done.returncode == 2 and f"{teacher}/model_config.json is not valid JSON" in done.stderr, done.stderr
