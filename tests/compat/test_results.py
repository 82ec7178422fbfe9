"""``results_<desc>.json`` in the original's keys and strings (knowledge_distill_util/compat/results.py)."""
from knowledge_distill_util.compat.results import original_results


def test_original_results_format():
    out = original_results({"accuracy": 0.5, "mcc": 0.0, "precision": 0.25, "recall": 1.0, "f1": 0.4,
                            "modelSize": 2.1, "reasoningTime": 10.0})
    assert out == {"accuracy": "0.50", "MCC": "0.00", "precision": "0.25", "recall": "1.00", "f_1": "0.40",
                   "modelSize": "2", "reasoningTime": "10.00"}
