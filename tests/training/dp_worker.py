"""Entry point of the data-parallel tests, started by OneFlow's launcher: ``kdu-train`` with

- ``KDU_TEST_EXTRA_ARGS_<rank>``: extra flags for that rank only (to give the ranks different configurations);
- ``KDU_TEST_RAISE_AT_STEP_<rank>``: that rank raises ``RuntimeError`` at this training step (a failing rank);
- ``KDU_TEST_DEVICE_KIND_<rank>``: the device kind that rank reports (a node without the others' GPUs).
"""
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "3")

from knowledge_distill_util.engine.loop import Loop  # noqa: E402
from knowledge_distill_util.cli.train import main  # noqa: E402
from knowledge_distill_util.training import run  # noqa: E402

RANK = int(os.environ.get("RANK", "0"))


def _inject_failure(at_step: int) -> None:
    calls = [0]

    def failing(original):
        def step(*args, **kwargs):
            calls[0] += 1
            if calls[0] >= at_step:
                raise RuntimeError(f"injected failure on rank {RANK} at step {calls[0]}")
            return original(*args, **kwargs)
        return step

    Loop._eager_step, Loop._graph_step = failing(Loop._eager_step), failing(Loop._graph_step)


if __name__ == "__main__":
    if os.environ.get(f"KDU_TEST_RAISE_AT_STEP_{RANK}"):
        _inject_failure(int(os.environ[f"KDU_TEST_RAISE_AT_STEP_{RANK}"]))
    if os.environ.get(f"KDU_TEST_DEVICE_KIND_{RANK}"):
        run.device_kind = lambda cfg: os.environ[f"KDU_TEST_DEVICE_KIND_{RANK}"]
    extra = os.environ.get(f"KDU_TEST_EXTRA_ARGS_{RANK}", "").split()
    sys.exit(main(sys.argv[1:] + extra, prog="dp_worker"))
