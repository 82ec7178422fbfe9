"""Evaluation metrics against hand computations."""
import numpy as np

from knowledge_distill_util.training.evaluate import compute_metrics


def test_metrics_binary_and_multiclass():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    m = compute_metrics(logits, np.array([0, 1, 0, 1]), "classification")   # tp 1, fp 1, fn 1, tn 1
    assert (m["accuracy"], m["precision"], m["recall"], m["f1"], m["mcc"]) == (0.5, 0.5, 0.5, 0.5, 0.0)
    three = compute_metrics(np.eye(3)[[0, 1, 2, 2]], np.array([0, 1, 2, 1]), "classification")
    assert three["accuracy"] == 0.75
    np.testing.assert_allclose(three["f1"], np.mean([1.0, 2 / 3, 2 / 3]))   # macro over classes
    reg = compute_metrics(np.array([[1.0], [2.0], [4.0]]), np.array([1.5, 2.0, 3.0]), "regression")
    np.testing.assert_allclose(reg["pearson"], np.corrcoef([1, 2, 4], [1.5, 2, 3])[0, 1])
