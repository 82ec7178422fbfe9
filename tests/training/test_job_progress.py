"""What kdu-compress shows of its running jobs (knowledge_distill_util/training/job_progress.py): a log line or
one tqdm bar per job, read from each job's progress.json."""
import io
import json

from knowledge_distill_util.training.job_progress import JobBars, progress_line
from knowledge_distill_util.training.run_plan import Job


def test_the_progress_line_names_each_job_with_a_progress_file(tmp_path):
    jobs = [Job(name, name, name, None, {"result_dir": str(tmp_path / name)}) for name in ("teacher", "kd", "bad")]
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "progress.json").write_text(json.dumps({"stage": "teacher", "step": 120, "total": 675,
                                                                     "loss": 0.41234, "eta_seconds": 192.0}))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "progress.json").write_text("[1, 2]")  # not a progress record: left out, as a missing one
    assert progress_line(jobs) == "teacher: stage teacher step 120/675, loss 0.4123, ETA 3m12s"


def test_job_bars_show_each_jobs_step_loss_and_eta(tmp_path):
    """On a terminal kdu-compress draws one bar per running job from its progress.json (issue 19)."""
    jobs = {name: Job(name, name, name, None, {"result_dir": str(tmp_path / name)})
            for name in ("kd", "bilstm")}
    (tmp_path / "kd").mkdir()
    (tmp_path / "kd" / "progress.json").write_text(json.dumps({"stage": "kd", "step": 3, "total": 10, "loss": 0.5,
                                                                "eta_seconds": 72.0}))
    stream = io.StringIO()
    bars = JobBars(list(jobs), stream=stream)
    bars.update(jobs)
    (tmp_path / "kd" / "progress.json").write_text(json.dumps({"stage": "kd", "step": 10, "total": 10, "loss": 0.25}))
    bars.update(jobs)
    bars.close()
    text = stream.getvalue()
    assert "kd:  30%|" in text and "| 3/10, stage kd, loss 0.5000, ETA 1m12s" in text
    assert "kd: 100%|" in text and "| 10/10, stage kd, loss 0.2500" in text
    assert "bilstm:   0%|" in text and "starting" in text  # no progress file yet
