"""Ranks that would train on different kinds of device (a CPU-only node beside GPU nodes) are refused
before the first step, with one sentence naming the ranks and the fix."""
import os

from .conftest import recipe_args
from .test_distributed_training import launch


def test_ranks_on_different_device_kinds_are_refused(workspace):
    tag = "dp_device_mix"
    job = launch(recipe_args(workspace, "kd", tag) + ["--batch_size_per_device", "4"], timeout=120,
                 KDU_TEST_DEVICE_KIND_1="cuda")
    assert job.returncode != 0
    assert ("the device type (cpu or cuda) of rank(s) [1] differs from rank 0's; pass the same --device to every "
            "rank") in job.stderr, job.stderr[-3000:]
    assert not os.path.exists(workspace["root"] / tag / "model" / "weights"), "nothing was trained"
