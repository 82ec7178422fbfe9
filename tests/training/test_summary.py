"""The summary table of a compression run."""
from knowledge_distill_util.training.summary import format_markdown, summary_rows


def test_summary_table():
    entry = lambda name, acc, params, speed: {"model": name, "layers": 2, "hidden_size": 8, "results": {  # noqa: E731
        "accuracy": acc, "parameters": params, "modelSize": params / 1e6, "reasoningTime": speed}}
    rows = summary_rows([entry("teacher", 0.9, 4e6, 100.0), entry("labels-only student", 0.6, 1e6, 300.0),
                         entry("KD", 0.65, 1e6, 310.0)], "accuracy")
    assert (rows[2]["compression"], rows[2]["speedup"], rows[2]["delta_vs_labels_only"]) == (4.0, 3.1, 0.05)
    text = format_markdown(rows)
    assert text.splitlines()[0].startswith("| model | accuracy | layers")
    assert "| KD | 0.6500 | 2 | 8 | 1.00M | 1.0 | 4.00x | 310.0 | 3.10x | +0.0500 |" in text


def test_summary_compares_a_row_with_its_own_labels_only_student():
    entry = lambda name, acc, **kw: {"model": name, "layers": 1, "hidden_size": 8, **kw, "results": {  # noqa: E731
        "accuracy": acc, "parameters": 1e6, "modelSize": 1.0, "reasoningTime": 100.0}}
    rows = summary_rows([entry("teacher", 0.9), entry("labels-only student", 0.6),
                         entry("labels-only BiLSTM", 0.5, baseline="labels-only student"),
                         entry("Distilled-BiLSTM", 0.55, baseline="labels-only BiLSTM"),
                         entry("KD", 0.7, baseline="labels-only student")], "accuracy")
    assert [row["delta_vs_labels_only"] for row in rows] == [None, None, None, 0.05, 0.1]
