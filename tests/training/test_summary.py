"""The summary table of a compression run."""
from knowledge_distill_util.training.summary import format_markdown, seeds_note, summary_rows


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


def _rows():
    entry = lambda name, acc, params, speed: {"model": name, "results": {  # noqa: E731
        "accuracy": acc, "parameters": params, "reasoningTime": speed}}
    return summary_rows([entry("teacher", 0.9, 4e6, 100.0), entry("labels-only student", 0.6, 1e6, 300.0),
                         entry("KD", 0.65, 1e6, 310.0), entry("broken", None, 1e6, 310.0)], "accuracy")


def test_summary_plot_has_one_labelled_point_per_model_and_marks_the_teacher():
    from knowledge_distill_util.training.summary import plot_summary

    figures = []
    assert plot_summary(_rows(), figures.append, "t")
    by_size, by_speed = figures[0].axes
    for axis, xs in ((by_size, [4.0, 1.0, 1.0]), (by_speed, [1.0, 3.0, 3.1])):
        points = [tuple(c.get_offsets()[0]) for c in axis.collections]
        assert points == [(x, y) for x, y in zip(xs, [0.9, 0.6, 0.65])]   # the row without accuracy is left out
        assert sorted(t.get_text() for t in axis.texts) == ["KD", "labels-only student", "teacher"]
        colours = [tuple(c.get_facecolor()[0][:3]) for c in axis.collections]
        assert colours[0] != colours[1] == colours[2]                      # the teacher stands out
    assert by_size.get_xlabel() == "parameters (millions)" and by_speed.get_ylabel() == "dev accuracy"
    assert not plot_summary([], figures.append)


def test_summary_png_is_written_atomically(tmp_path):
    from knowledge_distill_util.training.summary import write_summary_plot

    path = write_summary_plot(_rows(), str(tmp_path), "title")
    assert path == str(tmp_path / "summary.png") and open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.png"]   # no temporary file left
    assert write_summary_plot([], str(tmp_path / "none")) is None and not (tmp_path / "none").exists()


def test_the_readme_picture_is_drawn_from_the_readme_table():
    """docs/_tools/default_run_summary.py draws docs/img/default_run_summary.png from the numbers of the
    README's table (accuracy, parameters, speed-up): they must agree (a row without a speed-up measured on a
    quiet machine, "-", is not drawn)."""
    import importlib.util
    import os
    import re

    root = os.path.join(os.path.dirname(__file__), "..", "..")
    spec = importlib.util.spec_from_file_location("tool", os.path.join(root, "docs", "_tools", "default_run_summary.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    readme = open(os.path.join(root, "README.md"), encoding="utf-8").read()
    table = {}
    for line in readme.split("## Results of the default run")[1].split("##")[0].splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and re.match(r"0\.\d{4}( ± 0\.\d{4} \(\d+ seeds\))?$", cells[1]) and cells[4] != "-":
            table[cells[0]] = (float(cells[1].split()[0]), cells[2], cells[4])
    drawn = {r["model"]: (r["metric_value"], f"{r['parameters'] / 1e6:.2f}M", f"{r['speedup']:.2f}x")
             for r in tool.rows()}
    assert drawn == table
    assert os.path.isfile(os.path.join(root, "docs", "img", "default_run_summary.png"))


def test_a_row_of_several_seeds_shows_their_mean_and_spread_and_the_paired_differences():
    """Seeds 0, 1, 2: KD 0.75, 0.76, 0.74 against the labels-only 0.74, 0.74, 0.73: mean 0.75, sample standard
    deviation 0.01; differences 0.01, 0.02, 0.01: mean 0.0133, deviation sqrt((2 * (1/300)^2 + (2/300)^2) / 2)."""
    def entry(name, values, **kw):
        results = [{"accuracy": value, "parameters": 1e6, "modelSize": 1.0, "reasoningTime": 100.0} for value in values]
        return {"model": name, "layers": 1, "hidden_size": 8, "results": results[0], "seed_results": results, **kw}

    rows = summary_rows([{"model": "teacher", "results": {"accuracy": 0.9}},
                         entry("labels-only student", [0.74, 0.74, 0.73]), entry("KD", [0.75, 0.76, 0.74])], "accuracy")
    base, kd = rows[1], rows[2]
    assert (kd["metric_value"], kd["metric_spread"], kd["seeds"], kd["metric_values"]) == (0.75, 0.01, 3, [0.75, 0.76, 0.74])
    assert (kd["delta_vs_labels_only"], kd["delta_spread"]) == (0.0133, 0.0058)
    assert (base["metric_value"], base["metric_spread"], base["delta_vs_labels_only"]) == (0.7367, 0.0058, None)
    text = format_markdown(rows)
    assert "| KD | 0.7500 ± 0.0100 (3 seeds) | 1 | 8 |" in text and text.rstrip().endswith("| +0.0133 ± 0.0058 |")
    assert "| teacher | 0.9000 |" in text
    assert "mean and sample standard deviation over n = 3 seeds" in seeds_note(rows) and seeds_note(rows[:1]) == ""


def test_a_row_of_several_seeds_without_its_reference_over_the_same_seeds_has_no_difference():
    results = [{"accuracy": 0.75}, {"accuracy": 0.77}]
    rows = summary_rows([{"model": "labels-only student", "results": {"accuracy": 0.7}},
                         {"model": "KD", "results": results[0], "seed_results": results}], "accuracy")
    assert (rows[1]["metric_value"], rows[1]["metric_spread"], rows[1]["delta_vs_labels_only"]) == (0.76, 0.0141, None)
