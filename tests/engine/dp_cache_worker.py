"""Entry point of the engine's data-parallel teacher-cache test, started by OneFlow's launcher. In the same 2
processes it distils the MLP pair of ``test_teacher_cache`` on 16 rows (a shuffled loader of dict batches with
row ids, global batch 4, 2 epochs, 8 steps) five times, each into ``argv[1]/<mode>``: eagerly uncached, with
``cache_teacher_outputs="memory"`` and with ``"disk"``, then compiled (``use_graph``) uncached and with
``"memory"``. Each rank writes ``argv[2]/rank<r>.json``: per mode, the row ids of every eager student and teacher
forward (the probe first; read from the raw batches the adaptors get), and on rank 0 the history."""
import json
import logging
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: the engine package

from oneflow.utils.data import DataLoader  # noqa: E402

from engine.conftest import pair, random_data  # noqa: E402
from engine.test_teacher_cache import CONFIG, HiddenMLP, Rows, hidden_adaptor  # noqa: E402
from knowledge_distill_util import Distiller, DistillationConfig, TrainingConfig  # noqa: E402
from knowledge_distill_util.engine import distributed  # noqa: E402

MODES = ("off", "memory", "disk", "graph-off", "graph-memory")


class IdMLP(HiddenMLP):
    """The uncached runs' models: called with the row ids too (the cache takes them out of the batch), ignored."""

    def forward(self, features, index=None):
        return HiddenMLP.forward(self, features)  # not super(): nn.Graph calls forward on a proxy of the module


def recorder(seen):
    """The adaptor of the tests, recording the row ids of each eager call (a compiled step's batch has none
    with a cache, and lazy ones without)."""

    def adapt(batch, outputs):
        if "index" in batch and not batch["index"].is_lazy:
            seen.append(batch["index"].numpy().tolist())
        return hidden_adaptor(batch, outputs)

    return adapt


def train(out: str, mode: str):
    cache = mode.replace("graph-", "")
    teacher, student = pair(inputs=8, classes=3, cls=IdMLP if cache == "off" else HiddenMLP)
    x, y = random_data(rows=16, inputs=8, classes=3)
    loader = DataLoader(Rows(x, y), batch_size=4, shuffle=True)
    student_ids, teacher_ids = [], []
    training = TrainingConfig(os.path.join(out, mode), num_epochs=2, seed=0, cache_teacher_outputs=cache,
                              checkpoint_every=100, learning_rate=1e-2, use_graph=mode.startswith("graph"))
    distiller = Distiller(teacher, student, DistillationConfig(**CONFIG), training,
                          adaptor_T=recorder(teacher_ids), adaptor_S=recorder(student_ids))
    history = distiller.train(loader)
    return {"student": student_ids, "teacher": teacher_ids, "history": history}


def main(out: str, records: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    distributed.check_local_rank()
    distributed.start_watchdog()  # one watchdog for the five runs (each train() would start its own)
    runs = {mode: train(out, mode) for mode in MODES}
    os.makedirs(records, exist_ok=True)
    with open(os.path.join(records, f"rank{distributed.rank()}.json"), "w", encoding="utf-8") as stream:
        json.dump(runs, stream)
    distributed.stop_watchdog()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
