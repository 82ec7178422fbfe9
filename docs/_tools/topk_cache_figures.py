"""Measure the figures of ``docs/topk_cache.md``: bytes per token, cache build rate, the speed-up of a KD
step reading the cache against a live teacher, and the sparse-vs-dense KL difference on real logits.

It reads (never writes) a finished default run (``kdu-compress``'s output directory): its data, its
fine-tuned teacher (all-MiniLM-L6-v2 on the Fortunes topics, 4 classes) and its KD student (2 layers,
initialised from the teacher, word embeddings frozen, so both share the teacher's table). Two settings:

- ``classification``: the models' own logits, V = 4 classes (top-k is nearly trivial there);
- ``masked-LM``: a vocabulary-sized head on the same models, the word-embedding table tied as the output
  layer (``logits = last hidden state @ word_embeddings.T``, V = 30,522; all-MiniLM-L6-v2 ships no MLM head),
  one row per real (non-padding) token.

    PYTHONPATH=. python docs/_tools/topk_cache_figures.py --run_dir output/compression --out figures.json

Everything is written under a fresh temporary directory (removed at the end) and to ``--out``.
"""
import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import oneflow as flow

from knowledge_distill_util import cache_teacher_logits
from knowledge_distill_util._io import atomic_write_json
from knowledge_distill_util.data.loading import load_task_data
from knowledge_distill_util.functional import kl_div, sparse_kl_div
from knowledge_distill_util.models.artifacts import load_trained

KS = (1, 5, 20, 50)


class TiedHead(flow.nn.Module):
    """A BERT's last hidden state times its word-embedding table: masked-LM-sized logits ``[B, L, V]``."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, input_mask, segment_ids):
        _, reps, _ = self.bert(input_ids, input_mask, segment_ids)
        return flow.matmul(reps[-1], self.bert.word_embedding_table().transpose(0, 1))


class Logits(flow.nn.Module):
    """The classifier's logits ``[B, C]`` of a BERT returning ``(logits, reps, atts)``."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, input_mask, segment_ids):
        return self.bert(input_ids, input_mask, segment_ids)[0]


def batches(features, size, limit):
    rows = min(len(features), limit)
    return [{"input_ids": features.input_ids[i:i + size], "input_mask": features.input_mask[i:i + size],
             "segment_ids": features.segment_ids[i:i + size], "labels": features.labels[i:i + size]}
            for i in range(0, rows, size)]


def timed_build(teacher, data, path, top_k, temperature):
    start = time.perf_counter()
    cache = cache_teacher_logits(teacher, data, path, top_k=top_k, temperature=temperature, batches_per_chunk=4)
    return cache, time.perf_counter() - start


def directory_bytes(path):
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".bin"))


def accuracy(student, teacher, data, cache, ks, temperature, token_level):
    """Per row |sparse - dense| KL, mean over the rows (real tokens for token_level), per k and mode."""
    diffs = {(k, m): [] for k in ks for m in ("zero", "uniform")}
    mass = {k: [] for k in ks}  # the teacher's probability in its top k (at the temperature)
    dense_rows = []
    with flow.no_grad():
        for n, batch in enumerate(data):
            inputs = [flow.tensor(batch[key]) for key in ("input_ids", "input_mask", "segment_ids")]
            s, t = student(*inputs), teacher(*inputs)
            keep = batch["input_mask"].astype(bool) if token_level else np.ones(s.shape[:-1], bool)
            dense = kl_div(s, t, student_temperature=temperature, teacher_temperature=temperature,
                           reduction="none").numpy()
            dense_rows.append(dense[keep])
            top_values, top_ids = cache[n]
            lse = cache.logsumexp(n).numpy()[..., None]
            for k in ks:
                values, ids = top_values[..., :k], top_ids[..., :k]
                mass[k].append(np.exp(values.numpy().astype(np.float64) / temperature - lse).sum(-1)[keep])
                for missing in ("zero", "uniform"):
                    sparse = sparse_kl_div(s, values, ids, temperature=temperature, missing=missing,
                                           teacher_logsumexp=cache.logsumexp(n), reduction="none").numpy()
                    diffs[(k, missing)].append(np.abs(sparse - dense)[keep])
    dense_all = np.concatenate(dense_rows)
    return {"rows": int(dense_all.size), "dense_mean": float(dense_all.mean()),
            "mean_abs_diff": {f"k={k} {m}": float(np.concatenate(v).mean()) for (k, m), v in diffs.items()},
            "teacher_top_k_mass": {f"k={k}": float(np.concatenate(v).mean()) for k, v in mass.items()}}


def loss_times(student, teacher, batch, cache, k, temperature, repeats, token_level):
    """Seconds of the loss alone (forward + backward from fixed logits): dense kl_div vs sparse_kl_div."""
    inputs = [flow.tensor(batch[key]) for key in ("input_ids", "input_mask", "segment_ids")]
    mask = inputs[1] if token_level else None
    with flow.no_grad():
        s, t = student(*inputs), teacher(*inputs)
    values, ids = cache[0]
    results = {}
    for mode in ("dense", "sparse"):
        times = []
        for n in range(repeats + 1):
            logits = s.clone().requires_grad_()
            start = time.perf_counter()
            if mode == "dense":
                loss = kl_div(logits, t, student_temperature=temperature, teacher_temperature=temperature, mask=mask)
            else:
                loss = sparse_kl_div(logits, values[..., :k], ids[..., :k], temperature=temperature, mask=mask)
            loss.backward()
            logits.grad.numpy()
            if n:
                times.append(time.perf_counter() - start)
        results[mode] = float(np.median(times))
    results["top_k"] = k
    return results


def step_times(student, teacher, data, cache, k, temperature, steps, token_level):
    """Seconds per KD step (student forward + backward + SGD step) with the live teacher and with the cache's
    first ``k`` columns."""
    optimizer = flow.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=0.0)  # the work, same weights
    results = {}
    for mode in ("live", "cache"):
        times = []
        for n in range(steps + 1):  # the first step is a warm-up
            batch = data[n % len(data)]
            start = time.perf_counter()
            inputs = [flow.tensor(batch[key]) for key in ("input_ids", "input_mask", "segment_ids")]
            mask = inputs[1] if token_level else None
            logits = student(*inputs)
            if mode == "live":
                with flow.no_grad():
                    target = teacher(*inputs)
                loss = kl_div(logits, target, student_temperature=temperature, teacher_temperature=temperature,
                              mask=mask)
            else:
                values, ids = cache[n % len(data)]
                loss = sparse_kl_div(logits, values[..., :k], ids[..., :k], temperature=temperature, mask=mask)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()
            if n:
                times.append(time.perf_counter() - start)
        results[mode] = float(np.median(times))
    results["top_k"] = k
    results["speedup"] = results["live"] / results["cache"]
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", required=True, help="a finished kdu-compress output directory (read only)")
    parser.add_argument("--out", required=True, help="the JSON file of the figures")
    parser.add_argument("--examples", type=int, default=128, help="training examples measured (the first ones)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4, help="timed KD steps per mode (after one warm-up step)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--settings", nargs="+", default=["classification", "masked-LM"],
                        choices=["classification", "masked-LM"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    flow.manual_seed(0)
    teacher_bert, meta = load_trained(os.path.join(args.run_dir, "teacher", "model"), "teacher")
    student_bert, _ = load_trained(os.path.join(args.run_dir, "kd", "model"), "student")
    for model in (teacher_bert, student_bert):
        model.eval()  # no dropout: the same logits in every pass
    data = load_task_data(os.path.join(args.run_dir, "data"), meta["task_name"], meta["seq_length"],
                          vocab_file=meta["vocab_file"])
    train = batches(data.train, args.batch_size, args.examples)
    tokens = int(sum(b["input_mask"].sum() for b in train))
    figures = {"examples": min(args.examples, len(data.train)), "batches": len(train), "batch_size": args.batch_size,
               "seq_length": meta["seq_length"], "real_tokens": tokens, "temperature": args.temperature,
               "load_average_start": os.getloadavg()[0], "cores": os.cpu_count()}
    work = tempfile.mkdtemp(prefix="kdu-topk-figures-")
    try:
        for setting, wrap, ks, token_level in (("classification", Logits, (1, 2, 4), False),
                                               ("masked-LM", TiedHead, KS, True)):
            if setting not in args.settings:
                continue
            teacher, student = wrap(teacher_bert), wrap(student_bert)
            top = max(ks)  # one cache of the largest k: its first k columns are the top-k (sorted descending)
            cache, seconds = timed_build(teacher, train, os.path.join(work, setting), top, args.temperature)
            size = directory_bytes(cache.path)
            figures[setting] = {
                "vocab_size": cache.vocab_size, "dense_float32_bytes_per_row": 4 * cache.vocab_size,
                "build": {"top_k": top, "seconds": seconds, "rows": cache.rows, "rows_per_s": cache.rows / seconds,
                          "bytes": size, "bytes_per_row": size / cache.rows},
                "accuracy": accuracy(student, teacher, train, cache, ks, args.temperature, token_level),
                "loss_seconds": loss_times(student, teacher, train[0], cache, min(top, 20), args.temperature,
                                           args.steps, token_level),
                "step_seconds": step_times(student, teacher, train, cache, min(top, 20), args.temperature,
                                           args.steps, token_level),
            }
            logging.info("%s: %s", setting, json.dumps(figures[setting], indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures["load_average_end"] = os.getloadavg()[0]
    atomic_write_json(args.out, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
