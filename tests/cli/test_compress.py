"""``kdu-compress``'s command line (knowledge_distill_util/cli/compress.py): its flags and defaults, each bad value
one sentence naming the flag, the value and the fix with exit 2 and nothing written, ``--help``, and the exit
statuses of a failed job and a full disk."""
import errno
import os
import sys

import pytest

from conftest import run_retrying_signals
from knowledge_distill_util._errors import ConfigError
from knowledge_distill_util.cli import compress as cli
from knowledge_distill_util.training import compression


def test_defaults_are_those_of_the_flags():
    args = cli.parse_args([])
    assert vars(args) == {"data_dir": None, "task_name": None, "result_dir": "output/compression", "plan": None,
                          "teacher_model": None, "seed": 0, "jobs": 2, "use_graph": False, "quick": False,
                          "job_timeout": 3600.0, "resume": False, "overwrite": False, "log_level": "INFO",
                          "progress_every": 30.0}
    given = cli.parse_args(["--data_dir", "d", "--task_name=sst-2", "--seed", "7", "--jobs", "1", "--use_graph",
                            "--quick", "--job_timeout", "60", "--resume", "--log_level", "DEBUG",
                            "--progress_every", "0", "--teacher_model", "scratch", "--plan", "p.json"])
    assert (given.data_dir, given.task_name, given.seed, given.jobs, given.use_graph, given.quick, given.job_timeout,
            given.resume, given.log_level, given.progress_every, given.teacher_model, given.plan) == (
        "d", "sst-2", 7, 1, True, True, 60.0, True, "DEBUG", 0.0, "scratch", "p.json")
    assert type(given.seed) is int and type(given.progress_every) is float  # plain values in each job_config.json


@pytest.mark.parametrize("argv, sentence", [
    (["--progress_every", "-1"], "--progress_every must be a finite number of seconds >= 0 (0: no progress lines), "
                                 "got -1.0"),
    (["--progress_every", "nan"], "--progress_every must be a finite number of seconds >= 0 (0: no progress lines), "
                                  "got nan"),
    (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
    (["--seed", "abc"], "--seed must be an integer >= 0, got 'abc'"),
    (["--jobs", "x"], "--jobs must be an integer, got 'x'"),
    (["--job_timeout", "soon"], "--job_timeout must be a finite number of seconds > 0, got 'soon'"),
    (["--job_timeout", "0"], "--job_timeout must be a finite number of seconds > 0, got 0.0"),
    (["--job_timeout", "nan"], "--job_timeout must be a finite number of seconds > 0, got nan"),
    (["--log_level", "LOUD"], "--log_level must be one of DEBUG, INFO, WARNING, ERROR, got 'LOUD'"),
    (["--resume", "--overwrite"], "--resume and --overwrite contradict each other; pass one of them"),
    (["--jobz", "2"], "unknown flag --jobz; did you mean --jobs? kdu-compress --help lists the flags"),
    (["--quick", "x"], "unexpected argument 'x'; kdu-compress takes --flags only (kdu-compress --help lists them)"),
    (["--data_dir"], "--data_dir needs a value"),
])
def test_a_bad_flag_is_one_sentence(argv, sentence):
    with pytest.raises(ConfigError) as caught:
        cli.parse_args(argv)
    assert str(caught.value) == sentence


@pytest.mark.parametrize("jobs", ["0", "-5"])
def test_jobs_below_one_is_refused_before_anything_is_written(tmp_path, capsys, jobs):
    out = tmp_path / "out"
    assert cli.main(["--quick", "--result_dir", str(out), "--jobs", jobs]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --jobs must be at least 1 (the student trainings run at once), got {jobs}; pass e.g. --jobs 2"
    assert not out.exists()


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: kdu-compress") and "Run the whole default compression" in text
    for flag in ("--data_dir", "--task_name", "--result_dir", "--plan", "--teacher_model", "--seed", "--jobs",
                 "--use_graph", "--quick", "--job_timeout", "--resume", "--overwrite", "--log_level",
                 "--progress_every"):
        assert flag in text


def test_bad_progress_every_is_one_sentence_from_the_command(tmp_path):
    done = run_retrying_signals([sys.executable, "-m", "knowledge_distill_util", "compress", "--progress_every", "-1",
                                 "--result_dir", str(tmp_path / "r")], timeout=120)
    assert done.returncode == 2 and done.stderr.strip() == (
        "error: --progress_every must be a finite number of seconds >= 0 (0: no progress lines), got -1.0")
    assert not (tmp_path / "r").exists()


def test_a_full_disk_is_one_sentence_and_releases_the_lock(tmp_path, capsys, monkeypatch):
    target = tmp_path / "out" / "data" / "train.tsv"

    def full_disk(args, plan, result_dir):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(compression, "_data", full_disk)
    assert cli.main(["--quick", "--result_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: could not write {target}: the disk is full (") and "\n" not in err
    assert "bytes free there" in err and os.listdir(tmp_path / "out") == []  # the lock released


def test_a_failed_job_is_reported_without_a_traceback(tmp_path, capsys, monkeypatch):
    def failing(job, timeout, share_cores=False):
        raise compression.JobFailed(f"job {job.name} failed with exit status 2; see {job.config['result_dir']}/run.log")

    monkeypatch.setattr(compression, "_data", lambda args, plan, result_dir: (str(tmp_path / "data"), "sst-2"))
    monkeypatch.setattr(compression, "_run_job", failing)
    assert cli.main(["--quick", "--result_dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"error: job teacher failed with exit status 2; see {tmp_path}/out/teacher/run.log"
    assert "Traceback" not in err and "kd: not started, a job it reads from failed" in err   # before: the jobs left out
    assert os.listdir(tmp_path / "out") == []  # the lock released
