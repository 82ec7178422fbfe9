"""Evaluation like the original scripts: ``results_eval.json`` with accuracy, MCC, precision, recall, f1
(scikit-learn), Pearson/Spearman for regression (SciPy), ``modelSize`` (MB of the saved model) and
``reasoningTime`` (inference samples per second; the original's name for it).

Precision/recall/f1: binary tasks score class 1 (``average="binary"``), tasks with more classes the
unweighted mean over classes (``average="macro"``).

A metric that is undefined (Pearson/Spearman of constant scores or predictions, a throughput with no timed
batch) is written as ``null``, never ``NaN`` (not JSON), and ``"notes"`` maps its name to the reason, e.g.
``"pearson": null, "notes": {"pearson": "undefined: the dev scores are constant (all 2.5)"}``. The results
file is written atomically (``_io.atomic_write_json``): a kill leaves the previous file or the new one.
"""
import math
import os
import time
import warnings
from typing import Dict, Optional, Tuple

import numpy as np
import oneflow as flow
import oneflow.nn as nn

from .._io import atomic_write_json
from . import distributed

__all__ = ["predict", "compute_metrics", "directory_size_mb", "count_parameters", "evaluate_model",
           "write_results", "undefined_to_null"]


def predict(model: nn.Module, features, batch_size: int) -> Tuple[np.ndarray, float]:
    """Logits ``[N, C]`` of ``model`` (eval mode, no_grad) over ``features`` and the samples/s.

    The throughput is measured over every batch after the first (a warm-up), or over all of them
    when there is only one. Under the launcher every rank predicts its block of rows and the logits
    are gathered (every rank gets all ``N``; the samples/s are rank 0's).
    """
    if distributed.is_distributed():
        block = distributed.row_block(len(features))
        if block.stop == block.start:  # no rows for this rank: predict one (discarded) for the shape
            block = slice(len(features) - 1, len(features))
        logits, speed = _predict_rows(model, features, batch_size, block)
        return distributed.gather_rows(logits, len(features)), speed
    return _predict_rows(model, features, batch_size, slice(0, len(features)))


def _predict_rows(model: nn.Module, features, batch_size: int, rows: slice) -> Tuple[np.ndarray, float]:
    device = next(model.parameters()).device
    model.eval()
    outputs, timed, timed_rows = [], 0.0, 0
    count = rows.stop - rows.start
    with flow.no_grad():
        for number, start in enumerate(range(rows.start, rows.stop, batch_size)):
            batch = features.as_dict(slice(start, min(start + batch_size, rows.stop)))
            tensors = [flow.tensor(batch[k], device=device) for k in ("input_ids", "input_mask", "segment_ids")]
            began = time.perf_counter()
            out = model(*tensors)
            logits = (out[0] if isinstance(out, (tuple, list)) else out).numpy()
            elapsed = time.perf_counter() - began
            if number > 0 or count <= batch_size:
                timed, timed_rows = timed + elapsed, timed_rows + len(logits)
            outputs.append(logits)
    speed = timed_rows / timed if timed > 0 else float("nan")
    return np.concatenate(outputs).astype(np.float64), speed


def compute_metrics(logits: np.ndarray, labels: np.ndarray, output_mode: str) -> Dict[str, float]:
    """Metrics of ``logits [N, C]`` against ``labels [N]``.

    >>> m = compute_metrics(np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]]), np.array([0, 1, 0]), "classification")
    >>> round(m["accuracy"], 4), round(m["f1"], 4)
    (0.6667, 0.6667)
    """
    if output_mode == "regression":
        from scipy.stats import pearsonr, spearmanr

        predictions = logits.reshape(-1)
        gold = np.asarray(labels, dtype=np.float64).reshape(-1)
        with warnings.catch_warnings():  # constant input: NaN, explained by evaluate_model's notes
            warnings.simplefilter("ignore")
            return {
                "pearson": float(pearsonr(predictions, gold)[0]),
                "spearmanr": float(spearmanr(predictions, gold)[0]),
                "mse": float(np.mean((predictions - gold) ** 2)),
            }
    from sklearn.metrics import accuracy_score, matthews_corrcoef, precision_recall_fscore_support

    predictions = logits.argmax(axis=-1)
    gold = np.asarray(labels).astype(np.int64)
    average = "binary" if logits.shape[-1] == 2 else "macro"
    precision, recall, f1, _ = precision_recall_fscore_support(gold, predictions, average=average, zero_division=0)
    return {
        "accuracy": float(accuracy_score(gold, predictions)),
        "mcc": float(matthews_corrcoef(gold, predictions)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }


def directory_size_mb(path: str) -> float:
    """Total size in MB (10**6 bytes) of the files under ``path`` (or of the file ``path``)."""
    if os.path.isfile(path):
        return os.path.getsize(path) / 1e6
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, name)) for name in files)
    return total / 1e6


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of ``model``."""
    return int(sum(p.numel() for p in model.parameters()))


def evaluate_model(model: nn.Module, features, output_mode: str, batch_size: int,
                   saved_model_dir: Optional[str] = None) -> Dict[str, float]:
    """Metrics + ``modelSize`` (MB of ``saved_model_dir``) + ``reasoningTime`` (samples/s)."""
    logits, speed = predict(model, features, batch_size)
    results = compute_metrics(logits, features.labels, output_mode)
    if saved_model_dir is not None:
        results["modelSize"] = round(directory_size_mb(saved_model_dir), 3)
    results["reasoningTime"] = round(speed, 2)
    results["parameters"] = count_parameters(model)
    results["num_examples"] = int(len(features))
    return undefined_to_null(results, _reasons(logits, features.labels, output_mode))


def _constant(values: np.ndarray) -> bool:
    return len(values) > 0 and bool(np.all(values == values.reshape(-1)[0]))


def _reasons(logits: np.ndarray, labels: np.ndarray, output_mode: str) -> Dict[str, str]:
    """Why each metric that can be undefined would be (checked only when it is)."""
    reasons = {"reasoningTime": "undefined: no batch was timed (no dev rows)"}
    if len(labels) == 0:
        return dict(reasons, **{key: "undefined: the dev set is empty" for key in
                                ("accuracy", "mcc", "precision", "recall", "f1", "pearson", "spearmanr", "mse")})
    if output_mode == "regression":
        gold, predictions = np.asarray(labels, dtype=np.float64).reshape(-1), logits.reshape(-1)
        if _constant(gold):
            why = f"undefined: the dev scores are constant (all {gold[0]:g})"
        elif _constant(predictions):
            why = f"undefined: the model predicts the same score for every dev row ({predictions[0]:g})"
        else:
            why = "undefined: not a finite number"
        reasons.update(pearson=why, spearmanr=why)
    return reasons


def undefined_to_null(results: Dict, reasons: Optional[Dict[str, str]] = None) -> Dict:
    """``results`` with every NaN/inf float replaced by ``None`` and ``results["notes"][key]`` = the reason
    (``reasons[key]``, else ``"undefined: not a finite number"``); other values unchanged.

    >>> undefined_to_null({"pearson": float("nan"), "mse": 0.5}, {"pearson": "undefined: constant"})
    {'pearson': None, 'mse': 0.5, 'notes': {'pearson': 'undefined: constant'}}
    """
    reasons = reasons or {}
    out, notes = dict(results), dict(results.get("notes") or {})
    for key, value in results.items():
        if isinstance(value, float) and not math.isfinite(value):
            out[key] = None
            notes[key] = reasons.get(key, "undefined: not a finite number")
    if notes:
        out["notes"] = notes
    return out


def write_results(results: Dict, result_dir: str, name: str = "results_eval.json") -> str:
    """Write ``results`` as JSON into ``result_dir`` atomically (sorted keys; NaN/inf as ``null`` with a
    ``notes`` entry, see :func:`undefined_to_null`); returns the path."""
    os.makedirs(result_dir, exist_ok=True)
    path = os.path.join(result_dir, name)
    results = undefined_to_null(results)
    atomic_write_json(path, {key: results[key] for key in sorted(results)})
    return path
