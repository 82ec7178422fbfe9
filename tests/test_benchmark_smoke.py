"""scripts/benchmark.py --quick runs end to end (tiny shapes) and writes the documented JSON rows."""
import json
import os
import sys

import pytest

from conftest import run_retrying_signals

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "benchmark.py")
KEYS = {"case", "shape", "ours_ms", "original_ms", "torch_ms", "speedup_vs_original",
        "ours_peak_mb", "original_peak_mb", "memory_ratio", "graph_ms", "eager_step_ms", "eager_step_none_ms"}


def _run(*extra, timeout=300):
    env = dict(os.environ, GLOG_minloglevel="3")
    return run_retrying_signals([sys.executable, SCRIPT, *extra], timeout=timeout, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("benchmark") / "rows.json"
    done = _run("--quick", "--device", "cpu", "--json", str(path))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    with open(path) as f:
        return done, json.load(f)


def test_quick_run_writes_every_case_with_the_documented_keys(quick_run):
    done, rows = quick_run
    assert [row["case"] for row in rows] == ["soft_ce", "soft_ce", "layer_distill", "att_distill", "kl_div",
                                             "attention_kl", "relation_kl", "kl_div:kernel", "relation_kl:kernel"]
    for row in rows:
        assert KEYS <= set(row), KEYS - set(row)
        for key in ("ours_ms", "original_ms", "graph_ms", "eager_step_ms", "eager_step_none_ms"):
            assert row[key] is not None and row[key] > 0, (row["case"], key, row[key], done.stderr[-3000:])
        assert row["speedup_vs_original"] == pytest.approx(row["original_ms"] / row["ours_ms"])
        if row["ours_peak_mb"] is not None and row["original_peak_mb"]:
            assert row["memory_ratio"] == pytest.approx(row["ours_peak_mb"] / row["original_peak_mb"])
        # PyTorch is optional: a number, or null with a note saying why
        assert (row["torch_ms"] is not None and row["torch_ms"] > 0) or "torch" in (row["note"] or "")


def test_quick_run_prints_the_same_rows_as_a_table(quick_run):
    done, rows = quick_run
    lines = done.stdout.splitlines()
    assert lines[0].split()[:4] == ["case", "shape", "ours", "ms"]
    body = [line for line in lines[2:] if not line.startswith("note:")]
    assert [line.split()[0] for line in body] == [row["case"] for row in rows]


def test_invalid_repeat_is_rejected_with_a_message():
    done = _run("--repeat", "0", timeout=60)
    assert done.returncode == 2
    assert "--repeat must be at least 1, got 0" in done.stderr


def test_only_measures_the_named_cases(tmp_path):
    path = tmp_path / "rows.json"
    done = _run("--quick", "--device", "cpu", "--no-graph", "--only", "attention_kl,kl_div", "--repeat", "1",
                "--json", str(path))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    with open(path) as f:
        rows = json.load(f)
    assert [row["case"] for row in rows] == ["kl_div", "attention_kl"]
    assert all(row["ours_ms"] > 0 and row["original_ms"] > 0 and row["graph_ms"] is None for row in rows)


def test_only_rejects_unknown_case_names():
    done = _run("--quick", "--only", "attention_kl,nope", timeout=60)
    assert done.returncode != 0
    assert "--only: unknown case name(s) ['nope']" in done.stderr


def test_the_original_formulas_use_the_package_maps_and_threshold():
    """The benchmark writes the original formulas out (they are the baseline); their layer maps and mask
    threshold must be the package's."""
    import importlib.util

    from knowledge_distill_util.functional import ATTENTION_MASK_THRESHOLD, attention_layer_map, hidden_layer_map

    spec = importlib.util.spec_from_file_location("benchmark", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for student, teacher in ((4, 12), (3, 6), (2, 2)):
        assert bench._hidden_pairs(student, teacher) == hidden_layer_map(student + 1, teacher + 1)
        assert bench._attention_pairs(student, teacher) == attention_layer_map(student, teacher)
    assert bench.MASK_THRESHOLD == ATTENTION_MASK_THRESHOLD


def test_scaling_quick_rows(tmp_path):
    """``benchmark_scaling.py`` measures the three layouts against the one-process row (``--quick``: a tiny
    teacher and student, 11 s here; the full sizes took 33 s)."""
    path = tmp_path / "scaling.json"
    script = os.path.join(REPO, "scripts", "benchmark_scaling.py")
    done = run_retrying_signals([sys.executable, script, "--quick", "--modes", "eager", "--recipes", "kd", "--steps",
                                 "3", "--warmup", "1", "--json", str(path)], timeout=600,
                                env=dict(os.environ, GLOG_minloglevel="3"), cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    rows = json.loads(path.read_text())
    assert [(r["layout"], r["processes"], r["global_batch"]) for r in rows] == [
        ("one", 1, 4), ("data_parallel", 2, 8), ("jobs", 2, 4)]
    assert rows[0]["efficiency"] == 1.0
    for row in rows[1:]:
        assert row["samples_per_s"] > 0 and row["steps_timed"] == 2
        assert row["efficiency"] == pytest.approx(row["samples_per_s"] / (2 * rows[0]["samples_per_s"]), abs=1e-3)
    assert "| kd | eager | jobs | 2 | 4 |" in done.stdout


def _benchmark_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("kdu_benchmark_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_worker_killed_by_a_signal_is_run_again_for_the_cases_it_did_not_reach(monkeypatch):
    benchmark = _benchmark_module()
    calls = []

    def fake_run_once(python, impl, indices, args):
        calls.append(list(indices))
        if len(calls) == 1:  # measures case 0, then dies by SIGSEGV
            return -11, [{"ms": 1.0, "peak_mb": None}], "Segmentation fault"
        return 0, [{"ms": 2.0, "peak_mb": None} for _ in indices], ""

    monkeypatch.setattr(benchmark, "_run_once", fake_run_once)
    results = benchmark._run("python", "graph", [4, 5, 6], args=None)
    assert calls == [[4, 5, 6], [5, 6]]
    assert [r["ms"] for r in results] == [1.0, 2.0, 2.0]


def test_an_ordinary_worker_failure_is_not_run_again(monkeypatch):
    benchmark = _benchmark_module()
    calls = []

    def fake_run_once(python, impl, indices, args):
        calls.append(list(indices))
        return 1, [], "Traceback: ValueError"

    monkeypatch.setattr(benchmark, "_run_once", fake_run_once)
    assert benchmark._run("python", "ours", [0, 1], args=None) == [None, None]
    assert calls == [[0, 1]]


def test_a_worker_that_keeps_crashing_is_given_up_after_the_allowed_tries(monkeypatch):
    benchmark = _benchmark_module()
    calls = []
    monkeypatch.setattr(benchmark, "_run_once", lambda *a: calls.append(1) or (-11, [], "Segmentation fault"))
    assert benchmark._run("python", "graph", [0], args=None) == [None]
    assert len(calls) == benchmark.WORKER_TRIES


E2E_KEYS = {"case", "mode", "samples_per_s", "peak_rss_mb", "torch_samples_per_s", "ratio_vs_torch"}


def test_e2e_quick_measures_the_kd_step_in_eager_graph_and_on_two_processes(tmp_path):
    """``--e2e --quick``: one row per (case, mode) with the documented keys and measured values (``dp2``: 2
    data-parallel processes under the launcher, the first case only); without PyTorch the torch columns are null."""
    path = tmp_path / "e2e.json"
    done = _run("--e2e", "--quick", "--torch-python", "none", "--json", str(path))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    rows = json.loads(path.read_text())
    assert [(r["case"], r["mode"]) for r in rows] == [("seq8_cached", "eager"), ("seq8_cached", "graph"),
                                                      ("seq8_cached", "dp2"), ("seq16_online", "eager"),
                                                      ("seq16_online", "graph")]  # --quick: dp2 for one case
    for row in rows:
        assert E2E_KEYS <= set(row), E2E_KEYS - set(row)
        assert row["samples_per_s"] > 0 and row["peak_rss_mb"] > 0, (row, done.stderr[-3000:])
        assert row["torch_samples_per_s"] is None and row["ratio_vs_torch"] is None
    assert "note: torch: skipped (--torch-python none)" in done.stdout
    assert "| seq16_online | graph |" in done.stdout


def test_e2e_ratio_is_samples_per_s_over_torch_with_two_threads(monkeypatch):
    """The ratio columns divide by the PyTorch runs of the same case (2 threads; 1 thread)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("kdu_e2e", os.path.join(REPO, "scripts", "_e2e_benchmark.py"))
    e2e = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(e2e)
    speeds = {"eager": 10.0, "graph": 12.0, "dp2": 20.0, "torch2": 40.0, "torch1": 20.0}
    monkeypatch.setattr(e2e, "_measure", lambda python, mode, index, args: {"samples_per_s": speeds[mode] + index,
                                                                            "peak_rss_mb": 100.0})
    args = type("Args", (), {"quick": True, "rounds": 1})()
    rows = e2e.collect(args, torch_python="python")
    assert [(r["case"], r["mode"]) for r in rows][:2] == [("seq8_cached", "eager"), ("seq8_cached", "graph")]
    assert rows[1]["ratio_vs_torch"] == pytest.approx(12.0 / 40.0)
    assert rows[1]["ratio_vs_torch_1thread"] == pytest.approx(12.0 / 20.0)
    assert rows[2]["mode"] == "dp2" and rows[2]["ratio_vs_torch"] == pytest.approx(20.0 / 40.0)
    assert rows[4]["ratio_vs_torch"] == pytest.approx(13.0 / 41.0)


def test_e2e_rejects_zero_steps():
    done = _run("--e2e", "--e2e-steps", "0", timeout=60)
    assert done.returncode == 2
    assert "--e2e-steps must be at least 1, got 0" in done.stderr


def test_e2e_rejects_a_cuda_device():
    done = _run("--e2e", "--device", "cuda", timeout=60)
    assert done.returncode == 2
    assert "--e2e measures on the CPU only, got --device cuda; drop --device" in done.stderr
