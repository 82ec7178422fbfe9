"""Evaluation metrics against hand computations."""
import numpy as np

from knowledge_distill_util.engine.evaluate import compute_metrics


def test_metrics_binary_and_multiclass():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    m = compute_metrics(logits, np.array([0, 1, 0, 1]), "classification")   # tp 1, fp 1, fn 1, tn 1
    assert (m["accuracy"], m["precision"], m["recall"], m["f1"], m["mcc"]) == (0.5, 0.5, 0.5, 0.5, 0.0)
    three = compute_metrics(np.eye(3)[[0, 1, 2, 2]], np.array([0, 1, 2, 1]), "classification")
    assert three["accuracy"] == 0.75
    np.testing.assert_allclose(three["f1"], np.mean([1.0, 2 / 3, 2 / 3]))   # macro over classes
    reg = compute_metrics(np.array([[1.0], [2.0], [4.0]]), np.array([1.5, 2.0, 3.0]), "regression")
    np.testing.assert_allclose(reg["pearson"], np.corrcoef([1, 2, 4], [1.5, 2, 3])[0, 1])


def _regression_model(outputs):
    """A stand-in model whose forward returns fixed scores ``[B, 1]`` (row order)."""
    import oneflow as flow
    import oneflow.nn as nn

    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(flow.zeros(1))
            self.next = 0

        def forward(self, ids, mask, segments):
            rows = outputs[self.next:self.next + ids.shape[0]]
            self.next += ids.shape[0]
            return flow.tensor(np.asarray(rows, dtype=np.float32).reshape(-1, 1)) + self.w

    return Fixed()


def _stsb_features(scores):
    from knowledge_distill_util.data import Features

    n = len(scores)
    ids = np.ones((n, 4), np.int64)
    return Features(ids, ids, np.zeros_like(ids), np.asarray(scores, dtype=np.float64))


def test_constant_dev_scores_give_null_with_a_reason_in_valid_json(tmp_path):
    """An STS-B dev set with constant scores (issue 16): "pearson": null plus a note, never NaN."""
    import json

    from knowledge_distill_util.engine.evaluate import evaluate_model, write_results

    results = evaluate_model(_regression_model([1.0, 2.0, 3.0]), _stsb_features([2.5, 2.5, 2.5]), "regression", 8)
    assert results["pearson"] is None and results["spearmanr"] is None
    assert results["notes"] == {"pearson": "undefined: the dev scores are constant (all 2.5)",
                                "spearmanr": "undefined: the dev scores are constant (all 2.5)"}
    assert results["mse"] == np.mean([1.5 ** 2, 0.5 ** 2, 0.5 ** 2])
    path = write_results(results, str(tmp_path))
    text = open(path).read()
    assert "NaN" not in text
    assert json.loads(text)["pearson"] is None


def test_constant_predictions_are_named_as_such():
    from knowledge_distill_util.engine.evaluate import evaluate_model

    results = evaluate_model(_regression_model([3.0, 3.0, 3.0]), _stsb_features([1.0, 2.0, 3.0]), "regression", 8)
    assert results["pearson"] is None
    assert results["notes"]["pearson"] == "undefined: the model predicts the same score for every dev row (3)"


def test_write_results_never_writes_nan_and_is_atomic(tmp_path, monkeypatch):
    import json

    from knowledge_distill_util import _io
    from knowledge_distill_util.engine import evaluate

    path = evaluate.write_results({"accuracy": 0.5, "reasoningTime": float("nan")}, str(tmp_path))
    assert json.load(open(path)) == {"accuracy": 0.5, "reasoningTime": None,
                                     "notes": {"reasoningTime": "undefined: not a finite number"}}
    calls = []
    monkeypatch.setattr(evaluate, "atomic_write_json", lambda p, obj, **kw: calls.append(p) or _io.atomic_write_json(p, obj))
    evaluate.write_results({"accuracy": 0.75}, str(tmp_path))
    assert calls == [path] and json.load(open(path)) == {"accuracy": 0.75}
