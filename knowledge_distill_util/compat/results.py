"""Results as the original toolkit writes them (``--results_format original``, set by its script names).

The original's ``run_eval_job`` writes ``<result_dir>/results_<desc>.json`` (``desc`` ``eval`` on the dev
split, ``train`` on the training split) with these keys, every value a string:

| key | value |
|---|---|
| ``accuracy``, ``MCC``, ``precision``, ``recall``, ``f_1`` | ``"%.2f"`` of the metric |
| ``modelSize`` | ``"%d"``: MiB (2**20 bytes) of the model on disk (``model_bytes``: the original snapshot's folder) |
| ``reasoningTime`` | ``"%.2f"``: evaluated examples per second; ``run_classifier.py``: seconds (``seconds=True``) |

Regression tasks (which the original's scripts do not score) get ``pearson``, ``spearmanr``, ``mse`` the
same way. Everything this package measures besides (floats, parameters, origin, timings...) goes to
``results_<desc>_kdu.json`` beside it, the file ``kdu-compress`` reads when it exists.
"""
import json
import os
from typing import Dict, Optional

from .._io import atomic_write_text

__all__ = ["ORIGINAL_KEYS", "original_results", "write_original_results", "kdu_results_path"]

#: this package's metric name -> the original's key.
ORIGINAL_KEYS = {"accuracy": "accuracy", "mcc": "MCC", "precision": "precision", "recall": "recall", "f1": "f_1",
                 "pearson": "pearson", "spearmanr": "spearmanr", "mse": "mse"}


def original_results(results: Dict, model_bytes: Optional[int] = None, seconds: bool = False) -> Dict[str, str]:
    """The original's ``save_dict`` of this package's ``results`` (see the module doc). ``model_bytes``: the
    model's size on disk as the original measures it (else ``results["modelSize"]``, MB); ``seconds``:
    ``reasoningTime`` as the seconds the evaluation took (``num_examples`` / examples per second), as
    ``run_classifier.py`` writes it, instead of examples per second.

    >>> original_results({"accuracy": 0.875, "mcc": 0.5, "precision": 1.0, "recall": 0.75, "f1": 0.857,
    ...                   "modelSize": 2.5, "reasoningTime": 1234.567})
    {'accuracy': '0.88', 'MCC': '0.50', 'precision': '1.00', 'recall': '0.75', 'f_1': '0.86', 'modelSize': '2', 'reasoningTime': '1234.57'}
    >>> original_results({"reasoningTime": 400.0, "num_examples": 872}, model_bytes=3 * 2 ** 20, seconds=True)
    {'modelSize': '3', 'reasoningTime': '2.18'}
    """
    out = {ORIGINAL_KEYS[key]: None if results[key] is None else "%.2f" % results[key]  # None: undefined
           for key in ORIGINAL_KEYS if key in results}
    if model_bytes is not None:
        out["modelSize"] = "%d" % (model_bytes / 2 ** 20)
    elif "modelSize" in results:
        out["modelSize"] = "%d" % (results["modelSize"] * 1e6 / 2 ** 20)
    if results.get("reasoningTime") is not None:
        speed = results["reasoningTime"]
        out["reasoningTime"] = "%.2f" % ((results["num_examples"] / speed if speed else 0.0) if seconds else speed)
    return out


def kdu_results_path(result_dir: str, desc: str = "eval") -> str:
    """``<result_dir>/results_<desc>_kdu.json``: this package's full figures of an original-format run."""
    return os.path.join(result_dir, f"results_{desc}_kdu.json")


def write_original_results(results: Dict, result_dir: str, model_dir: str, desc: str = "eval",
                           model_bytes: Optional[int] = None, seconds: bool = False) -> str:
    """Write ``results_<desc>.json`` (the original's keys and strings: :func:`original_results`) and
    ``results_<desc>_kdu.json`` (``results`` unchanged, plus ``model_dir``) into ``result_dir``, each atomically
    (``_io``); returns the first path."""
    path = os.path.join(result_dir, f"results_{desc}.json")
    original = json.dumps(original_results(results, model_bytes, seconds))
    full = json.dumps(dict(results, model_dir=model_dir), indent=2, sort_keys=True)
    atomic_write_text(path, original)
    atomic_write_text(kdu_results_path(result_dir, desc), full)
    return path
