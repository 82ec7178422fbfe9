"""knowledge_distill_util._io: atomic text/JSON writes and directory replacement (``_replace_dir``, re-exported by
``_io``), and save_model on top of it, including processes SIGKILLed at injected points and at random moments (tests/io_kill_worker.py)."""
import ctypes
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import oneflow as flow
import pytest

from knowledge_distill_util import _io, _replace_dir
from knowledge_distill_util.models import LSTMStudentForSequenceClassification, load_model, save_model

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "io_kill_worker.py")
FILES = [f"part-{i}" for i in range(8)]  # as in io_kill_worker.py


def fill_with(version, files=FILES):
    def fill(directory):
        for name in files:
            with open(os.path.join(directory, name), "w") as handle:
                handle.write(f"{version}\n" * 4096)
    return fill


def dir_version(path):
    """The version held by a directory written by fill_with / the worker; fails unless complete."""
    assert sorted(os.listdir(path)) == FILES, f"{path} holds {sorted(os.listdir(path))}: incomplete"
    versions = set()
    for name in FILES:
        with open(os.path.join(path, name)) as handle:
            lines = handle.read().splitlines()
        assert len(lines) == 4096, f"{name} is truncated ({len(lines)} lines)"
        versions.update(lines)
    assert len(versions) == 1, f"{path} mixes versions {sorted(versions)}"
    return int(versions.pop())


def small_lstm():
    return LSTMStudentForSequenceClassification(vocab_size=50, hidden_size=8, intermediate_size=6, embedding_size=5)


def model_version(path):
    model = load_model(small_lstm(), path)
    values = {float(v) for p in model.parameters() for v in np.unique(p.numpy())}
    assert len(values) == 1, f"{path} mixes versions {sorted(values)}"
    return int(values.pop())


def dead_pid():
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)


# --- atomic_write_text / atomic_write_json --------------------------------------------------------
def test_atomic_write_text_writes_replaces_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "sub" / "LATEST"
    _io.atomic_write_text(str(target), "step-1")
    _io.atomic_write_text(target, "step-2\r\n")  # a PathLike works too; text is written as is
    assert target.read_bytes() == b"step-2\r\n"
    assert os.listdir(target.parent) == ["LATEST"]


def test_atomic_write_text_failure_names_the_file_and_keeps_the_old_content(tmp_path, monkeypatch):
    target = tmp_path / "LATEST"
    _io.atomic_write_text(target, "old")

    def full_disk(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_io.os, "replace", full_disk)
    free = __import__("shutil").disk_usage(tmp_path).free
    with pytest.raises(OSError, match=rf"could not write {tmp_path}/LATEST: the disk is full \(it needs 3 bytes, "
                                      r"\d+ bytes free there\)") as info:
        _io.atomic_write_text(target, "new")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert abs(int(str(info.value.strerror).split("bytes, ")[1].split()[0]) - free) < 10**8
    monkeypatch.undo()
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["LATEST"]


def test_atomic_write_text_keeps_the_error_subclass(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(_io.tempfile, "mkstemp", denied)
    with pytest.raises(PermissionError, match=r"could not write .*LATEST: Permission denied"):
        _io.atomic_write_text(tmp_path / "LATEST", "x")


def test_atomic_write_text_onto_a_directory(tmp_path):
    (tmp_path / "state.json").mkdir()
    with pytest.raises(IsADirectoryError, match=r"could not write .*state.json: it is a directory"):
        _io.atomic_write_text(tmp_path / "state.json", "{}")


def test_atomic_write_text_refuses_non_text(tmp_path):
    with pytest.raises(TypeError, match=r"text to write to .*LATEST must be a str, got bytes"):
        _io.atomic_write_text(tmp_path / "LATEST", b"x")
    with pytest.raises(TypeError, match=r"path must be a str or os.PathLike, got int"):
        _io.atomic_write_text(3, "x")


def test_atomic_write_json_round_trip_and_errors_name_the_file(tmp_path):
    target = tmp_path / "state.json"
    _io.atomic_write_json(target, {"step": 3, "loss": [0.5]})
    assert json.loads(target.read_text()) == {"step": 3, "loss": [0.5]}
    with pytest.raises(TypeError, match=rf"cannot write {tmp_path}/state.json as JSON: Object of type set is "
                                        r"not JSON serializable"):
        _io.atomic_write_json(target, {"bad": {1}})
    with pytest.raises(ValueError, match=r"cannot write .*state.json as JSON: .*NaN or infinity"):
        _io.atomic_write_json(target, {"loss": float("nan")})
    assert json.loads(target.read_text()) == {"step": 3, "loss": [0.5]}  # unchanged
    assert os.listdir(tmp_path) == ["state.json"]


def test_atomic_write_text_cleans_leftovers_of_killed_writers_only(tmp_path):
    dead, live = dead_pid(), os.getppid()
    (tmp_path / f".LATEST.kdu-tmp-{dead}-abc").write_text("partial")
    (tmp_path / f".LATEST.kdu-tmp-{live}-abc").write_text("a concurrent writer's")
    (tmp_path / f".OTHER.kdu-tmp-{dead}-abc").write_text("another file's")
    _io.atomic_write_text(tmp_path / "LATEST", "x")
    assert sorted(os.listdir(tmp_path)) == [f".LATEST.kdu-tmp-{live}-abc", f".OTHER.kdu-tmp-{dead}-abc", "LATEST"]


def test_read_json_errors_name_the_file(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{"hidden_size": 8,')
    with pytest.raises(ValueError, match=rf"config file {tmp_path}/config.json is not valid JSON \(Expecting "
                                         r"property name enclosed in double quotes at line 1, column 19\); it is "
                                         r"truncated or corrupt"):
        _io.read_json(bad, "config file")
    bad.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ValueError, match=r"JSON file .*config.json is not UTF-8 text"):
        _io.read_json(bad)
    with pytest.raises(FileNotFoundError, match=r"JSON file .*nothing.json does not exist"):
        _io.read_json(tmp_path / "nothing.json")
    with pytest.raises(IsADirectoryError, match=r"JSON file .* is a directory, expected a file"):
        _io.read_json(tmp_path)


# --- replace_directory ----------------------------------------------------------------------------
def test_replace_directory_creates_then_swaps_with_renameat2(tmp_path, monkeypatch):
    assert _io.exchange_supported(), "Linux with glibc >= 2.28 is expected on this machine"
    calls = []
    real = _replace_dir._exchange
    monkeypatch.setattr(_replace_dir, "_exchange", lambda a, b: calls.append(real(a, b)) or calls[-1])
    target = tmp_path / "weights"
    assert _io.replace_directory(target, fill_with(1)) == str(target)
    assert calls == []  # the first write is a plain rename
    _io.replace_directory(target, fill_with(2))
    assert calls == [True] and dir_version(target) == 2
    assert os.listdir(tmp_path) == ["weights"]


def test_replace_directory_falls_back_when_the_file_system_refuses_the_exchange(tmp_path, monkeypatch):
    def refusing(*args):
        ctypes.set_errno(errno.EINVAL)
        return -1

    monkeypatch.setattr(_replace_dir, "_RENAMEAT2", refusing)
    target = tmp_path / "weights"
    _io.replace_directory(target, fill_with(1))
    _io.replace_directory(target, fill_with(2))
    assert dir_version(target) == 2 and os.listdir(tmp_path) == ["weights"]
    monkeypatch.setattr(_replace_dir, "_RENAMEAT2", None)  # no renameat2 at all (macOS, old glibc)
    _io.replace_directory(target, fill_with(3))
    assert dir_version(target) == 3 and os.listdir(tmp_path) == ["weights"]


def test_replace_directory_other_renameat2_errors_are_reported(tmp_path, monkeypatch):
    def failing(*args):
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(_replace_dir, "_RENAMEAT2", failing)
    target = tmp_path / "weights"
    _io.replace_directory(target, fill_with(1))
    with pytest.raises(OSError, match=r"could not write .*weights: could not swap .*weights with its new version"):
        _io.replace_directory(target, fill_with(2))
    assert dir_version(target) == 1 and os.listdir(tmp_path) == ["weights"]


def test_replace_directory_fill_failure_leaves_the_old_content(tmp_path):
    target = tmp_path / "weights"
    _io.replace_directory(target, fill_with(1))

    def broken(directory):
        fill_with(2, FILES[:3])(directory)
        raise RuntimeError("serialisation failed")

    with pytest.raises(RuntimeError, match="serialisation failed"):
        _io.replace_directory(target, broken)

    def full(directory):
        raise OSError(errno.ENOSPC, "No space left on device", os.path.join(directory, "x"))

    with pytest.raises(OSError, match=r"could not write .*weights: the disk is full \(\d+ bytes free there\)"):
        _io.replace_directory(target, full)
    assert dir_version(target) == 1 and os.listdir(tmp_path) == ["weights"]


def test_replace_directory_refuses_a_file_and_a_bad_fill(tmp_path):
    (tmp_path / "weights").write_text("not a directory")
    with pytest.raises(NotADirectoryError, match=r"weights exists and is not a directory; remove it or choose"):
        _io.replace_directory(tmp_path / "weights", fill_with(1))
    assert (tmp_path / "weights").read_text() == "not a directory"
    with pytest.raises(TypeError, match=r"fill must be a function fill\(directory\) .* got str"):
        _io.replace_directory(tmp_path / "other", "fill")


def test_replace_directory_cleans_leftovers_including_the_old_save_model_layout(tmp_path):
    dead, live = dead_pid(), os.getppid()
    keep = [f".weights.kdu-tmp-{live}-x", ".weights.abcdefgh", "notes.txt"]
    for name in (f".weights.kdu-tmp-{dead}-x", f".weights.kdu-old-{dead}-y", ".weights.ab_d1234", keep[0], keep[1]):
        os.makedirs(tmp_path / name / "sub")
    os.makedirs(tmp_path / ".weights.ab_d1234" / "state")
    os.makedirs(tmp_path / ".weights.ab_d1234" / ("old-" + "0" * 32))
    os.rmdir(tmp_path / ".weights.ab_d1234" / "sub")  # the old save_model's staging: state/ and old-<hex>/ only
    (tmp_path / "notes.txt").write_text("user file")
    _io.replace_directory(tmp_path / "weights", fill_with(1))
    assert sorted(os.listdir(tmp_path)) == sorted(keep + ["weights"])


def test_a_failed_write_never_removes_an_interrupted_copy(tmp_path):
    """After a kill in the fallback's window the old content exists only beside the target: a write that
    fails must leave it; the next successful one removes it."""
    copy = tmp_path / f".weights.kdu-old-{dead_pid()}-abc"
    copy.mkdir()
    fill_with(1)(str(copy))

    def broken(directory):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        _io.replace_directory(tmp_path / "weights", broken)
    assert _io.interrupted_copies(tmp_path / "weights") == [str(copy)] and dir_version(copy) == 1
    _io.replace_directory(tmp_path / "weights", fill_with(2))
    assert os.listdir(tmp_path) == ["weights"] and dir_version(tmp_path / "weights") == 2


# --- save_model / load_model ----------------------------------------------------------------------
def test_save_model_uses_replace_directory_and_load_model_reads_it(tmp_path):
    model = small_lstm()
    path = tmp_path / "weights"
    assert save_model(model, path) == str(path)
    with flow.no_grad():
        for p in model.parameters():
            p.fill_(7.0)
    save_model(model, path)
    assert model_version(path) == 7 and os.listdir(tmp_path) == ["weights"]
    with pytest.raises(TypeError, match=r"model must be a oneflow.nn.Module, got dict"):
        save_model({"a": 1}, path)


@pytest.mark.parametrize("cut", ["half", "empty"])
def test_load_model_names_a_truncated_save(tmp_path, cut):
    path = tmp_path / "weights"
    save_model(small_lstm(), path)
    victim = path / "model.safetensors"
    size = victim.stat().st_size
    with open(victim, "r+b") as handle:
        handle.truncate(size // 2 if cut == "half" else 0)
    with pytest.raises(ValueError, match=r"saved model .*weights' is unreadable \(.*\); it is truncated or "
                                         r"corrupt: save the model again"):
        load_model(small_lstm(), path)


# --- SIGKILL --------------------------------------------------------------------------------------
def run_worker(mode, target, kill_at="none", kill_version=0, kill_after=None, timeout=120):
    """Run the worker until it dies; returns (last version it reported saved, its return code)."""
    command = [sys.executable, WORKER, mode, str(target), kill_at, str(kill_version)]
    env = dict(os.environ, GLOG_minloglevel="3")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if kill_after is not None:
        first = process.stdout.readline()  # wait for the first complete save (imports done)
        assert first.startswith("saved"), first + process.stderr.read()
        time.sleep(kill_after)
        process.send_signal(signal.SIGKILL)
        lines = [first]
    else:
        lines = []
    out, err = process.communicate(timeout=timeout)
    lines += out.splitlines()
    assert process.returncode == -signal.SIGKILL, f"worker exited with {process.returncode}:\n{err[-3000:]}"
    saved = [int(line.split()[1]) for line in lines if line.startswith("saved")]
    return (saved[-1] if saved else 0), process.returncode


def check_after_kill(target, last_saved, version_of, save_again, fallback_window=False):
    """The target holds the last saved or the next version, complete; the next save leaves nothing else."""
    parent = os.path.dirname(target)
    if fallback_window:  # the fallback's documented window: target absent, old copy complete beside it
        assert not os.path.exists(target)
        copies = _io.interrupted_copies(target)
        assert len(copies) == 1 and version_of(copies[0]) == last_saved
    elif last_saved == 0 and not os.path.exists(target):
        pass  # killed during the very first save: there was no old content
    else:
        assert version_of(target) in (last_saved, last_saved + 1)
    save_again(target)
    assert sorted(os.listdir(parent)) == ["keep.txt", os.path.basename(target)]


def save_dir_again(target):
    _io.replace_directory(target, fill_with(999))
    assert dir_version(target) == 999


def save_model_again(target):
    model = small_lstm()
    with flow.no_grad():
        for p in model.parameters():
            p.fill_(999.0)
    save_model(model, target)
    assert model_version(target) == 999


def target_in(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("an unrelated file that no cleanup may touch")
    return str(tmp_path / "out" / "weights")


POINTS = ["fill", "before-swap", "after-exchange", "fallback-window", "fallback-after"]


@pytest.mark.parametrize("kill_at, kill_version", [(point, 3) for point in POINTS] + [
    ("fill", 1), ("before-swap", 1),  # the first save (no old content): the other points are not reached
])
def test_replace_directory_sigkill_at_injected_points(tmp_path, kill_at, kill_version):
    target = target_in(tmp_path)
    last, _ = run_worker("dir", target, kill_at, kill_version)
    assert last == kill_version - 1
    check_after_kill(target, last, dir_version, save_dir_again, fallback_window=kill_at == "fallback-window")


@pytest.mark.parametrize("kill_at", POINTS)
def test_save_model_sigkill_at_injected_points(tmp_path, kill_at):
    target = target_in(tmp_path)
    last, _ = run_worker("model", target, kill_at, 3)
    assert last == 2
    if kill_at == "fallback-window":
        with pytest.raises(FileNotFoundError, match=r"a save to it was interrupted and left the previous weights "
                                                    r"at .*\.weights\.kdu-old-.*; rename that directory to"):
            load_model(small_lstm(), target)
    check_after_kill(target, last, model_version, save_model_again, fallback_window=kill_at == "fallback-window")


def test_replace_directory_sigkill_at_random_moments(tmp_path):
    rng = random.Random(0)
    target = target_in(tmp_path)
    for attempt in range(12):
        last, _ = run_worker("dir", target, kill_after=rng.uniform(0.0, 0.2))
        check_after_kill(target, last, dir_version, save_dir_again)


@pytest.mark.slow
def test_save_model_sigkill_at_random_moments(tmp_path):
    rng = random.Random(1)
    target = target_in(tmp_path)
    for attempt in range(10):
        last, _ = run_worker("model", target, kill_after=rng.uniform(0.0, 0.5))
        check_after_kill(target, last, model_version, save_model_again)


def test_atomic_write_file_binary_and_a_failing_writer(tmp_path):
    target = tmp_path / "train_logits.npz"
    _io.atomic_write_file(target, lambda stream: np.savez(stream, logits=np.arange(3.0)))
    with np.load(target) as data:
        assert data["logits"].tolist() == [0.0, 1.0, 2.0]

    def half_then_fail(stream):
        stream.write(b"PK partial")
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError, match="killed while writing"):
        _io.atomic_write_file(target, half_then_fail)
    with np.load(target) as data:  # the old complete file is still there
        assert data["logits"].tolist() == [0.0, 1.0, 2.0]
    assert os.listdir(tmp_path) == ["train_logits.npz"]
    with pytest.raises(TypeError, match=r"write must be a function write\(stream\) producing .*npz, got bytes"):
        _io.atomic_write_file(target, b"data")


# --- permissions under the umask, and a full disk ----------------------------------------------------
@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path):
    return os.stat(path).st_mode & 0o777


def test_current_umask_reads_the_process_umask(umask):
    assert _io.current_umask() == umask
    assert _io.file_mode() == 0o666 & ~umask and _io.directory_mode() == 0o777 & ~umask


def test_written_files_and_directories_get_the_umask_permissions(tmp_path, umask):
    _io.atomic_write_text(tmp_path / "LATEST", "step-1")
    _io.atomic_write_json(tmp_path / "config.json", {"a": 1})
    _io.atomic_write_file(tmp_path / "train_logits.npz", lambda stream: np.savez(stream, x=np.zeros(2)))
    for name in ("LATEST", "config.json", "train_logits.npz"):
        assert mode(tmp_path / name) == 0o666 & ~umask, name
    os.chmod(tmp_path / "LATEST", 0o600)
    _io.atomic_write_text(tmp_path / "LATEST", "step-2")  # a replaced file: the umask's permissions again
    assert mode(tmp_path / "LATEST") == 0o666 & ~umask

    def fill(directory):
        os.makedirs(os.path.join(directory, "step-3", "deep"))
        with open(os.path.join(directory, "step-3", "deep", "w.bin"), "wb") as handle:
            handle.write(b"w")
        flow.save({"w": flow.ones(2)}, os.path.join(directory, "flow"))

    for _ in range(2):  # new, then replaced
        target = _io.replace_directory(tmp_path / "weights", fill)
        for directory, folders, files in os.walk(target):
            assert mode(directory) == 0o777 & ~umask, directory
            for name in files:
                assert mode(os.path.join(directory, name)) == 0o666 & ~umask, name


def test_current_umask_without_proc_falls_back_to_the_umask_at_import(monkeypatch):
    real_open = open

    def no_proc(path, *args, **kwargs):
        if str(path) == "/proc/self/status":
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_proc)
    assert _io.current_umask() == _io._IMPORT_UMASK


def test_a_full_disk_is_one_sentence_with_the_bytes_and_the_old_file_is_intact(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    _io.atomic_write_text(target, "old")
    real_fdopen = os.fdopen

    class FullDisk:
        """The temporary file's stream on a full disk: every write raises ENOSPC."""

        def __init__(self, fd, mode):
            self.stream = real_fdopen(fd, mode)

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.stream, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.stream.close()

    monkeypatch.setattr(_io.os, "fdopen", FullDisk)
    with pytest.raises(OSError) as info:
        _io.atomic_write_text(target, "x" * 5000)
    sentence = _io.write_error_message(info.value)
    assert info.value.errno == errno.ENOSPC
    assert sentence.startswith(f"could not write {target}: the disk is full (it needs 5000 bytes, ")
    assert "bytes free there" in sentence and "\n" not in sentence
    monkeypatch.undo()
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["results.json"]


def test_a_full_disk_in_a_stream_writer_names_the_bytes_written(tmp_path, monkeypatch):
    target = tmp_path / "plot.png"
    _io.atomic_write_text(target, "old")

    def write(stream):
        stream.write(b"a" * 100)
        stream.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=r"the disk is full \(it needs at least 100 bytes, \d+ bytes free there\)"):
        _io.atomic_write_file(target, write)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["plot.png"]


def test_a_full_disk_inside_replace_directory_keeps_the_old_directory(tmp_path, monkeypatch):
    _io.replace_directory(tmp_path / "model", fill_with(1))

    def fill(directory):
        fill_with(2)(directory)
        raise OSError(errno.EDQUOT, "Disk quota exceeded", os.path.join(directory, "part-9"))

    with pytest.raises(OSError) as info:
        _io.replace_directory(tmp_path / "model", fill)
    assert info.value.errno == errno.EDQUOT
    assert _io.write_error_message(info.value).startswith(
        f"could not write {tmp_path / 'model'}: the disk quota is exceeded (it needs at least ")
    assert dir_version(tmp_path / "model") == 1 and os.listdir(tmp_path) == ["model"]


def test_write_error_message_of_a_foreign_oserror(tmp_path):
    sentence = _io.write_error_message(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.png")))
    assert sentence.startswith(f"could not write {tmp_path / 'x.png'}: the disk is full (")


def test_write_error_message_without_a_file_name():
    assert _io.write_error_message(OSError(errno.ENOSPC, "No space left on device")) == (
        "could not write a file: no space left on device; free some space or choose another directory, then run again")
