"""How several OneFlow processes share the CPU: the setting, who sets it, and that it keeps the values."""
import json
import os
import subprocess
import sys

import pytest

from knowledge_distill_util import _device
from knowledge_distill_util.training import compression, run as run_module
from knowledge_distill_util.config.schema import TrainConfig

KEY = "ONEFLOW_VM_COMPUTE_ON_WORKER_THREAD"


@pytest.fixture
def environ(monkeypatch):
    """A private copy of ``os.environ`` without the setting."""
    env = {k: v for k, v in os.environ.items() if k != KEY}
    monkeypatch.setattr(os, "environ", env)
    return env


def test_share_cpu_cores_sets_the_setting_unless_the_user_did(environ):
    assert _device.share_cpu_cores() == {KEY: "0"} and environ[KEY] == "0"
    mine = {KEY: "1"}
    assert _device.share_cpu_cores(mine) == {} and mine == {KEY: "1"}


def test_is_cpu():
    assert _device.is_cpu("cpu") and _device.is_cpu(" CPU ")
    assert not _device.is_cpu("tpu")  # invalid: the run's validation reports it
    assert _device.is_cpu(None) == (_device.resolve_device(None).type == "cpu")


def test_a_data_parallel_run_on_the_cpu_shares_the_cores(environ, monkeypatch):
    seen = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(run_module, "_run_distributed", lambda cfg, progress: seen.append(environ.get(KEY)))
    run_module.run(TrainConfig(recipe="kd", device="cpu"))
    assert seen == ["0"]


def test_a_one_process_run_keeps_oneflows_default(environ, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(run_module, "validate_config",
                        lambda cfg, **checks: (_ for _ in ()).throw(RuntimeError("stop")))
    with pytest.raises(RuntimeError, match="stop"):
        run_module.run(TrainConfig(recipe="kd", device="cpu"))
    assert KEY not in environ


@pytest.mark.parametrize("share", [True, False])
def test_compression_student_jobs_share_the_cores_when_several_run(tmp_path, monkeypatch, environ, share):
    seen = {}

    class FakePopen:
        pid = 0

        def __init__(self, command, stdout, stderr, env, start_new_session):
            seen.update(env)
            (tmp_path / "results_eval.json").write_text(json.dumps({"accuracy": 0.5}))

        def wait(self, timeout=None):
            return 0

        def poll(self):
            return 0

    monkeypatch.setattr(compression.subprocess, "Popen", FakePopen)
    job = compression.Job("kd", "kd", "KD", None, {"result_dir": str(tmp_path), "device": "cpu"})
    compression._run_job(job, timeout=10, share_cores=share)
    assert (seen.get(KEY) == "0") is share


def test_the_setting_leaves_the_values_unchanged():
    """The same eager training steps with and without the setting give bit-identical weights."""
    code = ("import os, sys, numpy as np\n"
            "import oneflow as flow\n"
            "flow.manual_seed(0)\n"
            "layer = flow.nn.Linear(16, 4)\n"
            "opt = flow.optim.Adam(layer.parameters(), lr=0.1)\n"
            "x = flow.tensor(np.random.default_rng(0).normal(size=(8, 16)).astype('float32'))\n"
            "for _ in range(5):\n"
            "    loss = layer(x).softmax(-1).square().sum(); loss.backward(); opt.step(); opt.zero_grad()\n"
            "sys.stdout.write(layer.weight.numpy().tobytes().hex())\n")
    outputs = []
    for setting in ("1", "0"):
        env = dict(os.environ, GLOG_minloglevel="3", **{KEY: setting})
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1] and len(outputs[0]) == 16 * 4 * 8
