"""Entry point of the engine's data-parallel test, started by OneFlow's launcher: distils the MLP pair of
``conftest`` on random data into ``argv[1]`` (global batch 16, 4 steps, dropout off) and, on rank 0, writes
the history as JSON to ``argv[2]``. ``KDU_TEST_RAISE_AT_STEP_<rank>``: that rank's adaptor raises at that step."""
import json
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: the engine package

from engine.conftest import pair, random_data, tuple_loader  # noqa: E402
from knowledge_distill_util import Distiller, DistillationConfig, TrainingConfig  # noqa: E402
from knowledge_distill_util.engine.distributed import rank  # noqa: E402

RANK = rank()  # os.environ["RANK"] is -1 after importing oneflow in one process
MATCH = {"layer_S": "body.1", "layer_T": "body.3", "feature": "output", "loss": "hidden_mse",
         "proj": ["linear", 32, 128]}


def adaptor(at_step):
    calls = [0]

    def adapt(batch, outputs):
        calls[0] += 1
        if at_step and calls[0] == at_step + 1:  # call 1 is the probe
            raise RuntimeError(f"injected failure on rank {RANK} at step {at_step}")
        return {"logits": outputs}

    return adapt


def main(out: str, history_path: str) -> None:
    x, y = random_data(rows=48)
    teacher, student = pair(inputs=8, classes=3)
    config = DistillationConfig(temperature=2.0, hard_label_weight=0.5, intermediate_matches=[MATCH])
    cfg = TrainingConfig(out, max_steps=4, checkpoint_every=2, learning_rate=1e-2)
    at_step = int(os.environ.get(f"KDU_TEST_RAISE_AT_STEP_{RANK}", "0"))
    distiller = Distiller(teacher, student, config, cfg, adaptor_S=adaptor(at_step))
    history = distiller.train(tuple_loader(x, y, batch_size=16, shuffle=True), eval_data=tuple_loader(x, y))
    if RANK == 0:
        with open(history_path, "w", encoding="utf-8") as stream:
            json.dump(history, stream)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
