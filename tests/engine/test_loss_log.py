"""The loss log: a complete CSV at every instant, the rows up to a checkpoint kept on resume, atomic PNG."""
import csv
import errno
import os

import pytest

from knowledge_distill_util import _io
from knowledge_distill_util.engine import loss_log
from knowledge_distill_util.engine.loss_log import LossLog, plot_losses


def rows(path):
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def write_steps(log, first, last):
    for step in range(first, last + 1):
        log.write(step, 0, 0.001, step * 0.5, {"loss": 1.0 / step, "kd": 2.0 / step})


def test_the_log_is_a_complete_csv_from_the_start_and_after_sync(tmp_path):
    path = str(tmp_path / "train_losses.csv")
    log = LossLog(path, ["loss", "kd"])
    assert open(path, newline="").read() == "step,epoch,lr,seconds,loss,kd\r\n"
    write_steps(log, 1, 3)
    log.sync()
    assert [r["step"] for r in rows(path)] == ["1", "2", "3"] and rows(path)[2]["loss"] == "0.333333"
    write_steps(log, 4, 5)
    log.close()
    assert [r["step"] for r in rows(path)] == ["1", "2", "3", "4", "5"]
    assert os.listdir(tmp_path) == ["train_losses.csv"]


def test_rows_reach_the_file_every_sync_seconds(tmp_path, monkeypatch):
    path = str(tmp_path / "log.csv")
    log = LossLog(path, ["loss"])
    log.write(1, 0, 0.1, 0.0, {"loss": 1.0})
    assert rows(path) == []  # kept in memory for now
    monkeypatch.setattr(loss_log, "SYNC_SECONDS", 0.0)
    log.write(2, 0, 0.1, 0.0, {"loss": 1.0})
    assert [r["step"] for r in rows(path)] == ["1", "2"]


def test_resume_keeps_the_rows_up_to_the_checkpoint(tmp_path):
    path = str(tmp_path / "log.csv")
    log = LossLog(path, ["loss", "kd"])
    write_steps(log, 1, 4)
    log.sync()  # the trainer's sync at the checkpoint of step 4
    write_steps(log, 5, 6)
    log.sync()  # a timed sync, then the run is killed: steps 5, 6 are trained again
    resumed = LossLog(path, ["loss", "kd"], keep_until=4)
    assert [r["step"] for r in rows(path)] == ["1", "2", "3", "4"]
    write_steps(resumed, 5, 7)
    resumed.close()
    assert [r["step"] for r in rows(path)] == ["1", "2", "3", "4", "5", "6", "7"]


def test_a_failed_rewrite_leaves_the_previous_complete_log(tmp_path, monkeypatch):
    path = str(tmp_path / "log.csv")
    log = LossLog(path, ["loss"])
    log.write(1, 0, 0.1, 0.0, {"loss": 1.0})
    log.sync()
    before = open(path, "rb").read()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_io.os, "replace", full)
    log.write(2, 0, 0.1, 0.0, {"loss": 0.5})
    with pytest.raises(OSError, match=r"could not write .*log.csv: the disk is full \(it needs \d+ bytes"):
        log.sync()
    monkeypatch.undo()
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["log.csv"]


def test_devnull_writes_nothing(tmp_path):
    log = LossLog(os.devnull, ["loss"], keep_until=3)
    log.write(1, 0, 0.1, 0.0, {"loss": 1.0})
    log.close()
    assert os.path.exists(os.devnull) and not os.path.isfile(os.devnull)


def test_the_plot_is_written_atomically(tmp_path, monkeypatch):
    path = str(tmp_path / "log.csv")
    log = LossLog(path, ["loss", "kd"])
    write_steps(log, 1, 3)
    log.close()
    png = str(tmp_path / "log.png")
    old = os.umask(0o022)
    try:
        assert plot_losses(path, png, "stage") == png
    finally:
        os.umask(old)
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n" and os.stat(png).st_mode & 0o777 == 0o644
    before = open(png, "rb").read()

    real_fdopen = os.fdopen

    def full_disk_stream(fd, mode):
        stream = real_fdopen(fd, mode)

        def write(data):
            raise OSError(errno.ENOSPC, "No space left on device")

        stream.write = write
        return stream

    monkeypatch.setattr(_io.os, "fdopen", full_disk_stream)
    with pytest.raises(OSError) as info:
        plot_losses(path, png, "stage")
    monkeypatch.undo()
    sentence = _io.write_error_message(info.value)
    assert sentence.startswith(f"could not write {png}: the disk is full (it needs {len(before)} bytes, ")
    assert open(png, "rb").read() == before and sorted(os.listdir(tmp_path)) == ["log.csv", "log.png"]
