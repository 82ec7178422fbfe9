"""The whole default compression under --quick, and the plan's jobs and summary order."""
import json
import os
import sys

import pytest

from conftest import run_retrying_signals
from training.test_run import STAGES, assert_a_quick_run
from knowledge_distill_util.training.compression import plan_jobs, read_plan, row_order


def test_plan_jobs_follow_the_registry_and_the_plan():
    run = dict(data_dir="d", task_name="fortunes", seed=0, result_dir="/r", use_graph=False)
    jobs = plan_jobs(read_plan(), run, quick=False)
    launch = [name for name in jobs if "." not in name]
    assert launch[:8] == ["teacher", "tinybert_general", "augment", "tinybert_aug", "tinybert", "bilstm", "theseus",
                          "bert_pkd"]                              # the teacher-free jobs, then the longest first
    assert row_order(jobs) == ["teacher", "baseline", "kd", "bilstm_baseline", "bilstm", "bert_pkd", "tinybert",
                               "tinybert_aug", "theseus", "minilm_baseline", "minilm", "distilbert"]
    assert jobs["bilstm_baseline"].config["kd_alpha"] == 0.0 and jobs["bilstm"].config["kd_alpha"] == 0.7
    assert jobs["kd"].config["learning_rate"] == 1e-3 and jobs["teacher"].config["learning_rate"] == 1e-4
    assert jobs["kd"].config["teacher_model"] == "/r/teacher/model" and "max_steps" not in jobs["kd"].config
    assert plan_jobs(read_plan(), run, quick=True)["kd"].config["max_steps"] == 3


@pytest.mark.slow  # about 45 s: every job of the plan, the recipes' end-to-end checks
def test_run_compression_quick(tmp_path):
    done = run_retrying_signals([sys.executable, "-m", "knowledge_distill_util", "compress", "--quick", "--result_dir",
                                 str(tmp_path)], timeout=400, env=dict(os.environ, GLOG_minloglevel="3"))
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    names = [row["model"] for row in summary["rows"]]
    assert names == ["teacher", "labels-only student", "KD", "labels-only BiLSTM", "Distilled-BiLSTM", "BERT-PKD",
                     "TinyBERT", "TinyBERT (general + augmented)", "BERT-of-Theseus", "labels-only student (hidden 192)",
                     "MiniLM", "DistilBERT"]
    assert (tmp_path / "augment" / "data" / "train_aug.tsv").is_file()      # the step's output, read by tinybert_aug
    rows = {row["model"]: row for row in summary["rows"]}
    assert rows["labels-only BiLSTM"]["delta_vs_labels_only"] is None
    assert rows["Distilled-BiLSTM"]["delta_vs_labels_only"] == round(
        rows["Distilled-BiLSTM"]["metric_value"] - rows["labels-only BiLSTM"]["metric_value"], 4)
    assert "| model |" in done.stdout and (tmp_path / "summary.md").is_file()
    assert (tmp_path / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "summary.md").read_text().startswith("SMOKE RUN (--quick: ")   # not a result to quote
    for recipe in STAGES:  # each recipe's own run, as tests/training/test_run.py checks a kdu-train --quick run
        assert_a_quick_run(tmp_path / recipe, tmp_path / recipe / "model", recipe)


def test_progress_of_a_running_job_is_logged_with_loss_and_eta(tmp_path, caplog):
    """The teacher's progress too: _run_jobs waits on it like on the students (here: a job that sleeps)."""
    import argparse
    import time

    from knowledge_distill_util.training import compression

    job = compression.Job("teacher", "teacher", "teacher", None, {"result_dir": str(tmp_path)})
    (tmp_path / "progress.json").write_text(json.dumps({"stage": "teacher", "step": 3, "total": 10, "loss": 0.5,
                                                        "eta_seconds": 72.0}))
    original = compression._run_job
    compression._run_job = lambda job, timeout, share_cores=False: time.sleep(0.6) or {"seconds": 0.6}
    try:
        with caplog.at_level("INFO", logger="knowledge_distill_util.training.compression"):
            result = compression._run_jobs(argparse.Namespace(job_timeout=10, progress_every=0.1), {"teacher": job},
                                            ["teacher"], workers=1)
    finally:
        compression._run_job = original
    assert result == {"teacher": {"seconds": 0.6}}
    assert "running: teacher: stage teacher step 3/10, loss 0.5000, ETA 1m12s" in [r.getMessage() for r in caplog.records]


def _fake_jobs(tmp_path, after):
    from knowledge_distill_util.training import compression

    return {name: compression.Job(name, "kd", name, None, {"result_dir": str(tmp_path / name)}, tuple(deps))
            for name, deps in after.items()}


def _record_runs(monkeypatch, seconds, fail=()):
    """_run_job replaced by a sleep of ``seconds[name]``; returns the list of (event, name, time) it appends to."""
    import threading
    import time

    from knowledge_distill_util.training import compression

    events, lock = [], threading.Lock()

    def fake(job, timeout, share_cores=False):
        with lock:
            events.append(("start", job.name, time.time()))
        time.sleep(seconds[job.name])
        with lock:
            events.append(("end", job.name, time.time()))
        if job.name in fail:
            raise compression.JobFailed(f"job {job.name} failed")
        return {"seconds": seconds[job.name], "results": {}}

    monkeypatch.setattr(compression, "_run_job", fake)
    return events


def test_jobs_start_once_the_jobs_they_read_from_finished(tmp_path, monkeypatch):
    """Two workers: the teacher-free 'general' runs beside the teacher; 'kd' and 'aug' wait for the teacher,
    'aug' also for 'general'; 'late' (no dependency, last in order) fills a free worker meanwhile."""
    import argparse

    from knowledge_distill_util.training import compression

    jobs = _fake_jobs(tmp_path, {"teacher": [], "general": [], "aug": ["general", "teacher"], "kd": ["teacher"],
                                 "late": []})
    events = _record_runs(monkeypatch, {"teacher": 0.6, "general": 0.2, "aug": 0.2, "kd": 0.2, "late": 0.2})
    done = compression._run_jobs(argparse.Namespace(job_timeout=10, progress_every=0), jobs, list(jobs), workers=2)
    assert set(done) == set(jobs)
    at = {(event, name): when for event, name, when in events}
    order = [name for event, name, _ in events if event == "start"]
    assert order[:3] == ["teacher", "general", "late"]                      # both workers busy from the start
    assert at["start", "aug"] >= at["end", "teacher"] and at["start", "aug"] >= at["end", "general"]
    assert at["start", "kd"] >= at["end", "teacher"]
    assert max(sum(1 for e, n, w in events if e == "start" and w <= t) - sum(1 for e, n, w in events
               if e == "end" and w <= t) for _, _, t in events) <= 2       # never more than 2 at once


def test_a_failed_job_blocks_only_the_jobs_that_read_from_it(tmp_path, monkeypatch, caplog):
    import argparse

    import pytest

    from knowledge_distill_util.training import compression

    jobs = _fake_jobs(tmp_path, {"teacher": [], "general": [], "aug": ["general"], "kd": ["teacher"]})
    events = _record_runs(monkeypatch, dict.fromkeys(jobs, 0.1), fail=("general",))
    with pytest.raises(compression.JobFailed, match="^job general failed$"):
        compression._run_jobs(argparse.Namespace(job_timeout=10, progress_every=0), jobs, list(jobs), workers=2)
    started = {name for event, name, _ in events if event == "start"}
    assert started == {"teacher", "general", "kd"}                           # aug never started, kd still ran
    assert "aug: not started, a job it reads from failed" in [r.getMessage() for r in caplog.records]
