"""A data-parallel Distiller under OneFlow's launcher (2 processes on 127.0.0.1, CPU): the weights, losses and
metrics of one process with the same global batch; only rank 0 writes; a failing rank ends the job with one
line naming it. Launches reuse the helpers of tests/training/test_distributed_training.py (free ports, a
timeout, the process group killed)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from knowledge_distill_util.engine.parallel import Ranks
from knowledge_distill_util.engine.batches import split_batch

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "dp_worker.py")
TIMEOUT_S = 240


def _job(tmp_path, tag, nproc, worker=WORKER, **env):
    """Run ``worker out history`` in ``nproc`` processes: ``(status, stderr, out, history)``."""
    from training.test_distributed_training import _env, _free_port, _kill_group

    out, history = tmp_path / tag, tmp_path / f"{tag}.json"
    command = [sys.executable, worker, str(out), str(history)] if nproc == 1 else [
        sys.executable, "-m", "oneflow.distributed.launch", "--nproc_per_node", str(nproc), "--master_addr",
        "127.0.0.1", "--master_port", str(_free_port()), worker, str(out), str(history)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=_env(**env), start_new_session=True)
    try:
        _, err = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        pytest.fail(f"the {nproc}-process job did not end within {TIMEOUT_S} s")
    _kill_group(process)
    return process.returncode, err, out, history


def _weights(out):
    import oneflow as flow
    from knowledge_distill_util.engine.checkpoint import latest_checkpoint, load_checkpoint

    model_state = load_checkpoint(latest_checkpoint(str(out / "checkpoints")))[0]
    return {k: v.numpy() if isinstance(v, flow.Tensor) else np.asarray(v) for k, v in model_state.items()}


def test_one_process_is_the_identity():
    ranks = Ranks(use_graph=True)
    batch = split_batch((np.zeros((4, 2), np.float32), np.arange(4)), "labels", "cpu")
    assert not ranks.active and ranks.writer and ranks.shard(batch) is batch
    assert ranks.values({"loss": 1.0}) == {"loss": 1.0}


@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path):
    code, err, one, one_history = _job(tmp_path, "one", 1)
    assert code == 0, err[-3000:]
    code, err, two, two_history = _job(tmp_path, "two", 2)
    assert code == 0, err[-3000:]
    one_h, two_h = json.loads(one_history.read_text()), json.loads(two_history.read_text())
    for term in ("loss", "kl_div", "hard_label", "match0_hidden_mse"):
        np.testing.assert_allclose(two_h[term], one_h[term], rtol=1e-5, err_msg=term)
    assert two_h["eval"] == one_h["eval"]
    expected = _weights(one)
    for name, value in _weights(two).items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-4, atol=1e-6, err_msg=name)
    assert sorted(os.listdir(two)) == ["checkpoints", "losses.csv", "losses.png"]


@pytest.mark.slow
def test_a_failing_rank_ends_the_job_with_one_line_naming_it(tmp_path):
    code, err, out, _ = _job(tmp_path, "fail", 2, KDU_TEST_RAISE_AT_STEP_1="3")
    assert code != 0
    assert "rank 0: rank 1 failed: RuntimeError: injected failure on rank 1 at step 3; stopping this rank too" in err
    from knowledge_distill_util.engine.checkpoint import latest_checkpoint

    named = out / "checkpoints" / "LATEST"  # rank 0 may be stopped while writing step 2's checkpoint: atomic
    assert not named.exists() or latest_checkpoint(str(out / "checkpoints")) is not None
