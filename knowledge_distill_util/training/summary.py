"""The summary table of a compression run: one row per model (teacher, labels-only student, one per
recipe) with its metric, layers, hidden size, parameters, size, compression ratio and speed-up against
the teacher, printed and written as Markdown and JSON.
"""
import json
import os
from typing import Dict, List, Sequence

from .._io import atomic_write_text

__all__ = ["SUMMARY_COLUMNS", "summary_rows", "format_markdown", "write_summary"]

#: (key, header) of each column.
SUMMARY_COLUMNS = (
    ("model", "model"),
    ("metric_value", "metric"),
    ("layers", "layers"),
    ("hidden_size", "hidden"),
    ("parameters", "parameters"),
    ("size_mb", "size (MB)"),
    ("compression", "compression"),
    ("samples_per_s", "samples/s"),
    ("speedup", "speed-up"),
    ("delta_vs_labels_only", "vs labels-only"),
)


def summary_rows(entries: Sequence[Dict], metric: str, teacher: str = "teacher",
                 baseline: str = "labels-only student") -> List[Dict]:
    """Complete each entry (``model``, ``results``, ``layers``, ``hidden_size``) with the table columns.

    ``compression`` = teacher parameters / model parameters; ``speedup`` = model samples/s / teacher's;
    ``delta_vs_labels_only`` = metric minus the labels-only student's: the row named ``baseline``, or the
    one an entry names in its own ``"baseline"`` key (e.g. a labels-only BiLSTM for the Distilled-BiLSTM);
    None for the teacher and the labels-only rows themselves.

    >>> rows = summary_rows([
    ...     {"model": "teacher", "layers": 6, "hidden_size": 8,
    ...      "results": {"accuracy": 0.9, "parameters": 100, "modelSize": 1.0, "reasoningTime": 10.0}},
    ...     {"model": "labels-only student", "layers": 2, "hidden_size": 8,
    ...      "results": {"accuracy": 0.7, "parameters": 50, "modelSize": 0.5, "reasoningTime": 30.0}},
    ...     {"model": "kd", "layers": 2, "hidden_size": 8,
    ...      "results": {"accuracy": 0.75, "parameters": 50, "modelSize": 0.5, "reasoningTime": 30.0}}],
    ...     "accuracy")
    >>> rows[2]["compression"], rows[2]["speedup"], rows[2]["delta_vs_labels_only"]
    (2.0, 3.0, 0.05)
    """
    by_name = {e["model"]: e for e in entries}
    ref = by_name.get(teacher, {}).get("results", {})
    labels_only = {baseline} | {e["baseline"] for e in entries if e.get("baseline")}
    rows = []
    for entry in entries:
        results = entry.get("results", {})
        value = results.get(metric)
        row = {
            "model": entry["model"],
            "metric": metric,
            "metric_value": value,
            "layers": entry.get("layers"),
            "hidden_size": entry.get("hidden_size"),
            "parameters": results.get("parameters"),
            "size_mb": results.get("modelSize"),
            "samples_per_s": results.get("reasoningTime"),
            "compression": None,
            "speedup": None,
            "delta_vs_labels_only": None,
        }
        if ref.get("parameters") and row["parameters"]:
            row["compression"] = round(ref["parameters"] / row["parameters"], 2)
        if ref.get("reasoningTime") and row["samples_per_s"]:
            row["speedup"] = round(row["samples_per_s"] / ref["reasoningTime"], 2)
        base = by_name.get(entry.get("baseline") or baseline, {}).get("results", {})
        if entry["model"] not in labels_only | {teacher} and value is not None and base.get(metric) is not None:
            row["delta_vs_labels_only"] = round(value - base[metric], 4)
        rows.append(row)
    return rows


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "metric_value":
        return f"{value:.4f}"
    if key == "delta_vs_labels_only":
        return f"{value:+.4f}"
    if key == "parameters":
        return f"{value / 1e6:.2f}M"
    if key in ("compression", "speedup"):
        return f"{value:.2f}x"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def format_markdown(rows: Sequence[Dict]) -> str:
    """The rows as a Markdown table (the metric's name heads its column)."""
    metric = rows[0]["metric"] if rows else "metric"
    headers = [metric if key == "metric_value" else title for key, title in SUMMARY_COLUMNS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(key, row.get(key)) for key, _ in SUMMARY_COLUMNS) + " |")
    return "\n".join(lines)


def write_summary(rows: Sequence[Dict], result_dir: str, header: str = "") -> Dict[str, str]:
    """Write ``summary.md`` and ``summary.json`` into ``result_dir``, each atomically (``_io``); returns
    their paths."""
    md_path = os.path.join(result_dir, "summary.md")
    json_path = os.path.join(result_dir, "summary.json")
    text = json.dumps({"header": header, "rows": list(rows)}, indent=2)  # before anything is written
    atomic_write_text(md_path, (header + "\n\n" if header else "") + format_markdown(rows) + "\n")
    atomic_write_text(json_path, text)
    return {"markdown": md_path, "json": json_path}
