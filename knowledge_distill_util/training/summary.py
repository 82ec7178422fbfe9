"""The summary table of a compression run: one row per model (teacher, labels-only student, one per
recipe) with its metric, layers, hidden size, parameters, size, compression ratio and speed-up against
the teacher, printed and written as Markdown and JSON, and plotted (:func:`plot_summary`: ``summary.png``).
"""
import json
import math
import os
import textwrap
from typing import Dict, List, Optional, Sequence, Tuple

from .._io import atomic_write_text

__all__ = ["SUMMARY_COLUMNS", "summary_rows", "mean_and_spread", "seeds_note", "format_markdown", "write_summary",
           "plot_summary", "write_summary_plot"]

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
        base_entry = by_name.get(entry.get("baseline") or baseline, {})
        base = base_entry.get("results", {})
        if entry["model"] not in labels_only | {teacher} and value is not None and base.get(metric) is not None:
            row["delta_vs_labels_only"] = round(value - base[metric], 4)
        if entry.get("seed_results"):
            _seed_columns(row, entry, base_entry, metric, compared=entry["model"] not in labels_only | {teacher})
        rows.append(row)
    return rows


def mean_and_spread(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    """``(mean, sample standard deviation)`` of ``values`` (spread None for one value).

    >>> mean_and_spread([0.5, 0.7, 0.6])
    (0.6, 0.1)
    """
    mean = sum(values) / len(values)
    if len(values) < 2:
        return round(mean, 4), None
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return round(mean, 4), round(spread, 4)


def _seed_columns(row: Dict, entry: Dict, base_entry: Dict, metric: str, compared: bool) -> None:
    """A row run with several seeds (``entry["seed_results"]``, the run's seed first): ``metric_value`` the
    mean over the seeds, ``metric_spread`` their sample standard deviation, ``metric_values`` each seed's,
    ``seeds`` their count; ``delta_vs_labels_only`` the mean of the per-seed differences to the reference
    row's same seed (its ``seed_results``) and ``delta_spread`` their sample standard deviation."""
    values = [results.get(metric) for results in entry["seed_results"]]
    if any(value is None for value in values):
        return
    row["metric_values"] = values
    row["seeds"] = len(values)
    row["metric_value"], row["metric_spread"] = mean_and_spread(values)
    references = [results.get(metric) for results in base_entry.get("seed_results", [])]
    if compared and len(references) == len(values) and None not in references:
        row["delta_vs_labels_only"], row["delta_spread"] = mean_and_spread([v - r for v, r in zip(values, references)])
    elif compared:
        row["delta_vs_labels_only"], row["delta_spread"] = None, None  # no reference over the same seeds


def seeds_note(rows: Sequence[Dict]) -> str:
    """What the header says when a row ran with several seeds (empty otherwise)."""
    counts = sorted({row["seeds"] for row in rows if row.get("seeds", 1) > 1})
    if not counts:
        return ""
    return (f"; a value 'm ± s (n seeds)' is the mean and sample standard deviation over n = "
            f"{'/'.join(map(str, counts))} seeds (the run's seed and the next ones), and its vs labels-only the "
            f"mean and spread of the per-seed differences to the labels-only row of the same seeds")


def _cell(key: str, value, row: Optional[Dict] = None) -> str:
    row = row or {}
    if value is None:
        return "-"
    if key == "metric_value":
        if row.get("metric_spread") is not None:
            return f"{value:.4f} ± {row['metric_spread']:.4f} ({row['seeds']} seeds)"
        return f"{value:.4f}"
    if key == "delta_vs_labels_only":
        if row.get("delta_spread") is not None:
            return f"{value:+.4f} ± {row['delta_spread']:.4f}"
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
        lines.append("| " + " | ".join(_cell(key, row.get(key), row) for key, _ in SUMMARY_COLUMNS) + " |")
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


def _spread(points: Sequence, gap: float) -> List[float]:
    """Label heights (axes fraction) for ``points`` = [(x, y)] of one cluster: the points' own heights,
    pushed apart to at least ``gap`` from the top one down (so the column does not rise into the labels
    above it), then shifted back up inside [0.03, 0.97] if needed."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][1], points[i][0]))
    heights: List[float] = [0.0] * len(points)
    previous = None
    for i in order:
        heights[i] = points[i][1] if previous is None else min(points[i][1], previous - gap)
        previous = heights[i]
    shift = min(max(0.0, 0.03 - min(heights)), 0.97 - max(heights))
    return [h + shift for h in heights]


def _label_points(axis, xs: Sequence[float], ys: Sequence[float], names: Sequence[str]) -> None:
    """Annotate each point with its name; points closer than 8% of the axis width form a cluster whose
    labels stand in one column beside it (right of it, or left when it is in the right third), with
    leader lines, so equal or close points keep readable labels."""
    to_axes = axis.transAxes.inverted()
    where = [tuple(to_axes.transform(axis.transData.transform((x, y)))) for x, y in zip(xs, ys)]
    clusters: List[List[int]] = []
    for i in sorted(range(len(where)), key=lambda i: where[i][0]):
        if clusters and where[i][0] - where[clusters[-1][-1]][0] < 0.08:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    for cluster in clusters:
        heights = _spread([where[i] for i in cluster], gap=0.075)
        right = max(where[i][0] for i in cluster) < 0.67
        column = (max if right else min)(where[i][0] for i in cluster) + (0.05 if right else -0.05)
        for i, height in zip(cluster, heights):
            axis.annotate(names[i], xy=(xs[i], ys[i]), xytext=(column, height), textcoords="axes fraction",
                          ha="left" if right else "right", va="center", fontsize=8,
                          arrowprops=dict(arrowstyle="-", color="0.55", linewidth=0.6, shrinkA=1, shrinkB=3))


def plot_summary(rows: Sequence[Dict], write, title: str = "", teacher: str = "teacher") -> bool:
    """Plot the summary ``rows`` (as :func:`summary_rows` returns them): the metric against the parameters
    (millions) and against the measured inference speed-up over the teacher, one labelled point per model,
    the teacher a red star. ``write(figure)`` saves it (e.g. ``figure.savefig(stream, format="png")``
    inside :func:`~knowledge_distill_util._io.atomic_write_file`). Rows without a metric, parameters or
    speed-up are left out; returns False (nothing written) when no row has all three."""
    from matplotlib.figure import Figure  # no pyplot state: drawn to a file only

    shown = [r for r in rows if None not in (r.get("metric_value"), r.get("parameters"), r.get("speedup"))]
    if not shown:
        return False
    metric = shown[0].get("metric", "metric")
    names = [r["model"] for r in shown]
    ys = [r["metric_value"] for r in shown]
    is_teacher = [r["model"].split(" (")[0] == teacher for r in shown]
    fig = Figure(figsize=(13, 5.2))
    axes = fig.subplots(1, 2)
    for axis, key, label in ((axes[0], "parameters", "parameters (millions)"),
                             (axes[1], "speedup", "inference speed-up over the teacher (x, measured)")):
        xs = [r[key] / 1e6 if key == "parameters" else r[key] for r in shown]
        for x, y, marked in zip(xs, ys, is_teacher):
            axis.scatter([x], [y], s=150 if marked else 45, marker="*" if marked else "o",
                         color="tab:red" if marked else "tab:blue", zorder=3)
        span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 0.1
        axis.set_xlim(min(xs) - 0.12 * span_x, max(xs) + 0.12 * span_x)
        axis.set_ylim(min(ys) - 0.15 * span_y, max(ys) + 0.15 * span_y)
        axis.set_xlabel(label)
        axis.set_ylabel(f"dev {metric}")
        axis.grid(alpha=0.3)
        _label_points(axis, xs, ys, names)
    title = title or f"dev {metric} of every model (red star: the teacher)"
    fig.suptitle("\n".join(textwrap.fill(line, 150) for line in title.splitlines()), fontsize=10)
    fig.tight_layout()
    write(fig)
    return True


def write_summary_plot(rows: Sequence[Dict], result_dir: str, title: str = "",
                       name: str = "summary.png") -> Optional[str]:
    """``<result_dir>/<name>`` (:func:`plot_summary`), written atomically; its path, or None when no row
    can be plotted."""
    from .._io import atomic_write_file

    path = os.path.join(result_dir, name)
    written = []
    plot_summary(rows, lambda fig: atomic_write_file(path, lambda stream: fig.savefig(stream, format="png", dpi=100))
                 or written.append(path), title)
    return written[0] if written else None
