#!/usr/bin/env python
"""End-to-end KD training step: this package (eager and ``nn.Graph``) vs transformers + TextBrewer's loss on
PyTorch (``scripts/benchmark.py --e2e``).

The step is the one the default run's ``kd`` job takes (``kdu-compress``'s plan, ``common`` settings): a
2-layer, 384-wide student (12 heads, intermediate 1536, frozen word embeddings, dropout 0.1, initialised
from the teacher's layers 0-1) and a teacher of all-MiniLM-L6-v2's shape (6 layers, 384 wide, 12 heads,
intermediate 1536, vocabulary 30522), 2 labels, batch 32; loss ``0.8 * CE + 0.2 * pred_distill`` at
temperature 1, AdamW (lr 1e-3, weight decay 0.01 off biases and LayerNorms) with the linear schedule. The
weights are random (the speed does not depend on them). Cases: sequence length 48 and 128, teacher logits
cached (what ``--recipe kd`` does: the teacher's forward pass runs once before training) or teacher online
(its forward pass in every step, as in the recipes reading hidden states).

Implementations (``mode``), each measured in a fresh process, alternating case by case:

* ``eager`` / ``graph``: this package's :class:`~knowledge_distill_util.training.trainer.LossStep` as the
  objective of a :class:`~knowledge_distill_util.engine.Distiller`, one step of its loop
  (:class:`~knowledge_distill_util.engine.loop.Loop`, what ``kdu-train`` runs; ``graph`` is ``--use_graph``),
  in the interpreter running the script;
* ``dp2``: the eager step on 2 data-parallel processes under OneFlow's launcher, as ``kdu-train --nproc 2``
  runs it: the global batch of 32 rows cut into 2 x 16, the gradients averaged with one all-reduce
  (:class:`~knowledge_distill_util.engine.parallel.Ranks`), ``ONEFLOW_VM_COMPUTE_ON_WORKER_THREAD=0``;
  samples/s of the whole job (global batch x steps / rank 0's seconds), ``peak_rss_mb`` the sum of both
  processes' peaks. With ``--quick`` it is measured for the first case only (the smoke test stays short);
* ``torch2`` / ``torch1``: Hugging Face transformers' ``BertForSequenceClassification`` with the same
  configuration and the TextBrewer KD loss (``kd_ce_loss``: ``-(softmax(t/T) * log_softmax(s/T)).sum(-1).mean()``,
  written inline; TextBrewer itself is not needed), with ``torch.set_num_threads(2)`` / ``(1)``, in the
  ``--torch-python`` interpreter (needs ``torch`` and ``transformers``).

Each worker builds the models, runs ``warmup`` untimed steps (the graph compiles in the first), then times
``steps`` steps, each ending with the loss read on the host (as the training loop logs it): samples/s is
``batch * steps / seconds``; ``peak_rss_mb`` is the process's peak resident set (``VmHWM``) at the end,
models, optimizer state and the compiled plan included. ``--rounds N`` keeps each one's best samples/s
(and the peak RSS of the same run).

Row keys: ``case``, ``mode`` (eager/graph/dp2), ``samples_per_s``, ``peak_rss_mb``, ``torch_samples_per_s``
(PyTorch with 2 threads), ``ratio_vs_torch`` (``samples_per_s / torch_samples_per_s``), and
``torch_1thread_samples_per_s``, ``ratio_vs_torch_1thread``, ``torch_peak_rss_mb``, ``batch``, ``seq_length``,
``load_average`` (the machine's 1-minute load when the row's last measurement ended).

This file is both the driver's helper module (imported by ``benchmark.py``) and the worker script
(``python _e2e_benchmark.py --worker MODE --case I``); it imports only the standard library at the top, so
that the PyTorch interpreter can run it without OneFlow or this package.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_PREFIX = "E2E-RESULT "
ONEFLOW_MODES = ("eager", "graph", "dp2")
DP_PROCESSES = 2  # dp2's processes
TORCH_MODES = {"torch2": 2, "torch1": 1}
WORKER_TRIES = 3  # a worker killed by a signal (OneFlow 0.9's rare graph-runtime segfault) is run again
KD_ALPHA, TEMPERATURE, LEARNING_RATE, WEIGHT_DECAY, NUM_LABELS = 0.8, 1.0, 1e-3, 0.01, 2

#: the default run's shapes: teacher of all-MiniLM-L6-v2's shape, the plan's 2-layer student, batch 32
FULL_SHAPES = dict(vocab_size=30522, hidden_size=384, num_attention_heads=12, intermediate_size=1536,
                   teacher_layers=6, student_layers=2, batch=32, max_position_embeddings=512)
QUICK_SHAPES = dict(vocab_size=120, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                    teacher_layers=2, student_layers=1, batch=4, max_position_embeddings=64)
FULL_CASES: List[Dict] = [
    {"case": "seq48_cached", "seq_length": 48, "cached": True},
    {"case": "seq48_online", "seq_length": 48, "cached": False},
    {"case": "seq128_cached", "seq_length": 128, "cached": True},
    {"case": "seq128_online", "seq_length": 128, "cached": False},
]
QUICK_CASES: List[Dict] = [
    {"case": "seq8_cached", "seq_length": 8, "cached": True},
    {"case": "seq16_online", "seq_length": 16, "cached": False},
]


def _peak_rss_mb() -> Optional[float]:
    try:
        with open("/proc/self/status") as f:
            match = re.search(r"VmHWM:\s+(\d+) kB", f.read())
    except OSError:
        match = None
    if match:
        return int(match.group(1)) / 1024.0
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def _batch(shapes: Dict, seq_length: int):
    """``(input_ids, input_mask, segment_ids, labels, teacher_logits)`` as NumPy arrays, seed 0: the last
    quarter of every row is padding, one sentence (segment 0)."""
    import numpy as np

    rng = np.random.default_rng(0)
    batch = shapes["batch"]
    input_ids = rng.integers(1, shapes["vocab_size"], size=(batch, seq_length), dtype=np.int64)
    input_mask = np.ones((batch, seq_length), dtype=np.int64)
    input_mask[:, seq_length - seq_length // 4:] = 0
    input_ids[input_mask == 0] = 0
    segment_ids = np.zeros((batch, seq_length), dtype=np.int64)
    labels = rng.integers(0, NUM_LABELS, size=(batch,), dtype=np.int64)
    logits = rng.standard_normal((batch, NUM_LABELS)).astype(np.float32)
    return input_ids, input_mask, segment_ids, labels, logits


def _timed(step, warmup: int, steps: int) -> float:
    """Seconds for ``steps`` calls of ``step`` after ``warmup`` untimed ones (each call syncs)."""
    for _ in range(warmup):
        step()
    began = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - began


def oneflow_step(mode: str, shapes: Dict, spec: Dict):
    """The KD step of this package, as ``kdu-train --recipe kd`` runs it: ``step() -> [loss, ce, pred_distill]``
    (``dp2``: this rank's part of the data-parallel step, under the launcher)."""
    import knowledge_distill_util  # noqa: F401  (first: its start-up settings apply before OneFlow's import)
    import oneflow as flow

    from knowledge_distill_util.data import get_task
    from knowledge_distill_util.models import BertForSequenceClassification
    from knowledge_distill_util.training.builders import bert_student, freeze_word_embeddings
    from knowledge_distill_util.training import parse_config
    from knowledge_distill_util.training.objectives import KD
    from knowledge_distill_util.engine import DistillationConfig, Distiller, TrainingConfig
    from knowledge_distill_util.engine.loop import Loop
    from knowledge_distill_util.engine.optim import make_optimizer, make_scheduler
    from knowledge_distill_util.engine.parallel import Ranks
    from knowledge_distill_util.engine.state import BatchStream
    from knowledge_distill_util.training.trainer import LossStep

    flow.manual_seed(0)
    seq = spec["seq_length"]
    cfg = parse_config(["--recipe", "kd", "--seq_length", str(seq), "--batch_size_per_device", str(shapes["batch"]),
                        "--student_num_hidden_layers", str(shapes["student_layers"]),
                        "--student_hidden_size", str(shapes["hidden_size"]),
                        "--student_intermediate_size", str(shapes["intermediate_size"]),
                        "--student_num_attention_heads", str(shapes["num_attention_heads"]),
                        "--student_init", "teacher", "--freeze_word_embeddings", "true",
                        "--kd_alpha", str(KD_ALPHA), "--temperature", str(TEMPERATURE),
                        "--learning_rate", str(LEARNING_RATE), "--weight_decay", str(WEIGHT_DECAY)])
    teacher = BertForSequenceClassification(
        vocab_size=shapes["vocab_size"], seq_length=seq, hidden_size=shapes["hidden_size"],
        num_hidden_layers=shapes["teacher_layers"], num_attention_heads=shapes["num_attention_heads"],
        intermediate_size=shapes["intermediate_size"], max_position_embeddings=shapes["max_position_embeddings"],
        label_num=NUM_LABELS)
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad = False
    student = bert_student(cfg, get_task("sst-2"), teacher, reads_layers=False)
    freeze_word_embeddings(student)
    student.train()
    step = LossStep(student, teacher, KD, cfg, extra_inputs=("teacher_logits",) if spec["cached"] else ())
    optimizer = make_optimizer(student, cfg.learning_rate, cfg.weight_decay)
    scheduler = make_scheduler(optimizer, 1000, 100)
    arrays = _batch(shapes, seq)
    keys = ("input_ids", "input_mask", "segment_ids") + (("teacher_logits",) if spec["cached"] else ())
    batch = dict(zip(keys, (flow.tensor(a) for a in arrays[:3] + arrays[4:])), labels=flow.tensor(arrays[3]))
    tcfg = TrainingConfig(output_dir="unused", max_steps=1000, use_graph=mode == "graph", seed_epochs=False,
                          reseed_dropout=False)  # nothing is written: only the loop's step runs
    distiller = Distiller(teacher, student, DistillationConfig(), tcfg, objective=step)
    ranks = Ranks(mode == "graph")
    if mode == "dp2":  # under the launcher: rank 0's weights everywhere; the loop cuts this rank's rows
        ranks.start(distiller._trainable)
    loop = Loop(distiller, step, optimizer, 1000, 0, ranks, scheduler)
    loop.stream, loop._step = BatchStream([batch], 0, seed_epochs=False), 0
    if mode == "graph":
        layout, names, _ = distiller._probe(step, [batch], 1000)
        loop.build_graph(layout[0], names, layout[1])
    weights = loop.weights(0)
    run = loop._graph_step if mode == "graph" else loop._eager_step
    return lambda: list(run(weights).values())


def torch_step(threads: int, shapes: Dict, spec: Dict):
    """The same step with transformers' BERT and the TextBrewer KD loss: ``step() -> loss`` (a float)."""
    import torch
    import torch.nn.functional as F
    from transformers import BertConfig, BertForSequenceClassification, get_linear_schedule_with_warmup

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    def config(layers: int):
        return BertConfig(vocab_size=shapes["vocab_size"], hidden_size=shapes["hidden_size"],
                          num_hidden_layers=layers, num_attention_heads=shapes["num_attention_heads"],
                          intermediate_size=shapes["intermediate_size"], hidden_act="gelu",
                          hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                          max_position_embeddings=shapes["max_position_embeddings"], num_labels=NUM_LABELS)

    teacher = BertForSequenceClassification(config(shapes["teacher_layers"])).eval()
    teacher.requires_grad_(False)
    student = BertForSequenceClassification(config(shapes["student_layers"]))
    own = student.state_dict()  # initialised from the teacher's first layers, as the package's student
    own.update({k: v for k, v in teacher.state_dict().items() if k in own and v.shape == own[k].shape})
    student.load_state_dict(own)
    student.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    student.train()
    named = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
    no_decay = ("bias", "LayerNorm")
    groups = [{"params": [p for n, p in named if not any(k in n for k in no_decay)], "weight_decay": WEIGHT_DECAY},
              {"params": [p for n, p in named if any(k in n for k in no_decay)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=LEARNING_RATE, eps=1e-8)
    scheduler = get_linear_schedule_with_warmup(optimizer, 100, 1000)
    input_ids, input_mask, segment_ids, labels, cached = (torch.from_numpy(a) for a in _batch(shapes, spec["seq_length"]))

    def kd_ce_loss(logits_s, logits_t, temperature):  # textbrewer.losses.kd_ce_loss
        p_t = F.softmax(logits_t / temperature, dim=-1)
        return -(p_t * F.log_softmax(logits_s / temperature, dim=-1)).sum(dim=-1).mean()

    def step() -> float:
        logits = student(input_ids=input_ids, attention_mask=input_mask, token_type_ids=segment_ids).logits
        if spec["cached"]:
            teacher_logits = cached
        else:
            with torch.no_grad():
                teacher_logits = teacher(input_ids=input_ids, attention_mask=input_mask,
                                         token_type_ids=segment_ids).logits
        loss = KD_ALPHA * F.cross_entropy(logits, labels) + (1 - KD_ALPHA) * kd_ce_loss(logits, teacher_logits,
                                                                                     TEMPERATURE)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def run_worker(mode: str, index: int, quick: bool, warmup: int, steps: int) -> Dict:
    """Measure one (mode, case) in this process; the result is printed as one ``RESULT_PREFIX`` JSON line."""
    shapes = QUICK_SHAPES if quick else FULL_SHAPES
    spec = (QUICK_CASES if quick else FULL_CASES)[index]
    if mode in TORCH_MODES:
        step = torch_step(TORCH_MODES[mode], shapes, spec)
    else:
        step = oneflow_step(mode, shapes, spec)
    seconds = _timed(step, warmup, steps)
    result = {"samples_per_s": shapes["batch"] * steps / seconds, "peak_rss_mb": _peak_rss_mb()}
    if mode == "dp2":  # the job's memory: every rank's peak; rank 0 reports
        from knowledge_distill_util.engine import distributed

        result["peak_rss_mb"] = distributed.mean_across_ranks([result["peak_rss_mb"]])[0] * distributed.world_size()
        if not distributed.is_writer():
            return result
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return result


# ---------------------------------------------------------------------------------------------- driver side
def _measure(python: str, mode: str, index: int, args) -> Optional[Dict]:
    """One fresh worker process (another, up to :data:`WORKER_TRIES`, when one is killed by a signal); its
    result, or ``None`` (with the stderr's tail on ours) when it failed."""
    command = [python, os.path.abspath(__file__), "--worker", mode, "--case", str(index),
               "--warmup", str(args.e2e_warmup), "--steps", str(args.e2e_steps)] + (["--quick"] if args.quick else [])
    path = os.environ.get("PYTHONPATH", "")
    env = dict(os.environ, GLOG_minloglevel="3", PYTHONPATH=REPO + (os.pathsep + path if path else ""))
    if mode == "dp2":  # as kdu-train --nproc 2 starts it (knowledge_distill_util/engine/launch.py)
        command = [python, "-m", "oneflow.distributed.launch", "--nproc_per_node", str(DP_PROCESSES),
                   "--master_addr", "127.0.0.1", "--master_port", str(_free_port())] + command[1:]
        env.setdefault("ONEFLOW_VM_COMPUTE_ON_WORKER_THREAD", "0")  # knowledge_distill_util._device.CPU_SHARING_ENV
    for _ in range(WORKER_TRIES):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, env=env, cwd=REPO)
        except subprocess.TimeoutExpired:
            print(f"[benchmark --e2e] {mode} case {index}: timed out after {args.timeout} s", file=sys.stderr)
            return None
        for line in done.stdout.splitlines():
            if line.startswith(RESULT_PREFIX):
                result = json.loads(line[len(RESULT_PREFIX):])
                print(f"[benchmark --e2e] case {index} {mode}: {json.dumps(result)}", file=sys.stderr, flush=True)
                return result
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        print(f"[benchmark --e2e] {mode} case {index} failed (exit {done.returncode}):\n{tail}", file=sys.stderr)
        if done.returncode >= 0:  # an ordinary failure: running it again would fail again
            return None
    return None


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _modes(index: int, quick: bool, torch_python: Optional[str]) -> List[str]:
    """The implementations measured for case ``index`` (``--quick``: ``dp2`` for the first case only)."""
    modes = [m for m in ONEFLOW_MODES if m != "dp2" or not quick or index == 0]
    return modes + (list(TORCH_MODES) if torch_python else [])


def _best(kept: Optional[Dict], new: Optional[Dict]) -> Optional[Dict]:
    if kept is None or new is None:
        return kept or new
    return kept if kept["samples_per_s"] >= new["samples_per_s"] else new


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def collect(args, torch_python: Optional[str]) -> List[Dict]:
    """Every (case, mode) row; the implementations alternate case by case, ``args.rounds`` times."""
    cases = QUICK_CASES if args.quick else FULL_CASES
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    measured: Dict = {}
    load: Dict[int, float] = {}
    for _ in range(args.rounds):
        for index in range(len(cases)):
            for mode in _modes(index, args.quick, torch_python):
                python = torch_python if mode in TORCH_MODES else sys.executable
                measured[index, mode] = _best(measured.get((index, mode)), _measure(python, mode, index, args))
                load[index] = os.getloadavg()[0]
    rows = []
    for index, spec in enumerate(cases):
        def get(mode, key):
            result = measured.get((index, mode))
            return None if result is None else result[key]

        for mode in _modes(index, args.quick, None):
            speed, torch2, torch1 = get(mode, "samples_per_s"), get("torch2", "samples_per_s"), get("torch1", "samples_per_s")
            rows.append({"case": spec["case"], "mode": mode, "samples_per_s": speed, "peak_rss_mb": get(mode, "peak_rss_mb"),
                         "torch_samples_per_s": torch2, "ratio_vs_torch": _ratio(speed, torch2),
                         "torch_1thread_samples_per_s": torch1, "ratio_vs_torch_1thread": _ratio(speed, torch1),
                         "torch_peak_rss_mb": get("torch2", "peak_rss_mb"), "batch": shapes["batch"],
                         "seq_length": spec["seq_length"], "load_average": round(load.get(index, 0.0), 2)})
    return rows


def format_table(rows: List[Dict]) -> str:
    """A Markdown table of the rows (``-`` where a value is missing)."""
    def cell(value, digits=1):
        return "-" if value is None else f"{value:.{digits}f}"

    lines = ["| case | mode | samples/s | peak RSS MB | PyTorch 2 threads | ratio | PyTorch 1 thread | ratio | "
             "PyTorch RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['mode']} | {cell(r['samples_per_s'])} | {cell(r['peak_rss_mb'], 0)} | "
                     f"{cell(r['torch_samples_per_s'])} | {cell(r['ratio_vs_torch'], 2)} | "
                     f"{cell(r['torch_1thread_samples_per_s'])} | {cell(r['ratio_vs_torch_1thread'], 2)} | "
                     f"{cell(r['torch_peak_rss_mb'], 0)} |")
    return "\n".join(lines)


def main(args, torch_python: Optional[str], note: Optional[str] = None) -> int:
    """``benchmark.py --e2e``: measure, print the table (and ``note``), write ``args.json``; 1 when a
    package value is missing."""
    rows = collect(args, torch_python)
    print(format_table(rows))
    if note:
        print(f"note: {note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0 if all(row["samples_per_s"] is not None for row in rows) else 1


def _worker_main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="one --e2e measurement (internal)")
    parser.add_argument("--worker", required=True, choices=list(ONEFLOW_MODES) + list(TORCH_MODES))
    parser.add_argument("--case", type=int, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    os.environ.setdefault("GLOG_minloglevel", "3")
    run_worker(args.worker, args.case, args.quick, args.warmup, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main())
