"""Every file and folder a quick run writes gets the umask's permissions (files ``0o666 & ~umask``, folders
``0o777 & ~umask``): under umask 022 others on a shared server can load the model."""
import os
import subprocess

import pytest

from training.conftest import PYTHON, TINY_STUDENT
from knowledge_distill_util.data import prepare_default_data


def wrong_modes(root, umask):
    """``(path, mode)`` of every entry under ``root`` whose permissions differ from the umask's."""
    wrong = []
    for directory, folders, files in os.walk(root):
        for path, want in [(directory, 0o777 & ~umask)] + [(os.path.join(directory, f), 0o666 & ~umask)
                                                            for f in files]:
            have = os.stat(path).st_mode & 0o777
            if have != want:
                wrong.append((os.path.relpath(path, root), oct(have)))
    return wrong


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_a_quick_run_writes_everything_with_the_umask_permissions(workspace, tmp_path, umask):
    out = tmp_path / "run"
    command = [PYTHON, "-m", "knowledge_distill_util", "train", "--recipe", "kd", "--quick", "--data_dir",
               workspace["data"], "--task_name", workspace["task"], "--teacher_model", workspace["teacher"],
               "--model_save_dir", str(out / "model"), "--result_dir", str(out / "results"), *TINY_STUDENT]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, preexec_fn=lambda: os.umask(umask),
                          env=dict(os.environ, GLOG_minloglevel="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    names = {name for _, folders, files in os.walk(out) for name in folders + files}
    assert {"config.json", "progress.json", "results_eval.json", "kd_losses.csv", "kd_losses.png"} <= names, names
    assert wrong_modes(out, umask) == []


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_the_data_files_get_the_umask_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        prepare_default_data(str(tmp_path / "data"), seed=0, source="synthetic", max_per_class=10)
    finally:
        os.umask(old)
    assert sorted(os.listdir(tmp_path / "data")) and wrong_modes(tmp_path / "data", umask) == []


def test_a_full_disk_while_plotting_is_one_sentence_and_loses_nothing(workspace, capsys, monkeypatch):
    """ENOSPC in the PNG write of a resumed (finished) run: one sentence naming the PNG and the bytes, exit
    status 2, every file of the finished run unchanged; with space again, --resume finishes."""
    import errno

    from knowledge_distill_util.engine import loss_log
    from knowledge_distill_util.cli.train import main
    from training.conftest import recipe_args

    args = [str(a) for a in recipe_args(workspace, "kd", "full_disk")]
    assert main(args) == 0
    root = workspace["root"] / "full_disk"
    kept = ["model/weights", "model/model_config.json", "results/results_eval.json", "results/kd_losses.csv",
            "results/kd_losses.png"]

    def content(relative):
        path = root / relative
        if path.is_dir():
            return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
        return path.read_bytes()

    before = {relative: content(relative) for relative in kept}
    real = loss_log.atomic_write_file

    def full_disk(path, write, size=None):
        def half(stream):
            stream.write(b"\x89PNG")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, half, size=size)

    monkeypatch.setattr(loss_log, "atomic_write_file", full_disk)
    capsys.readouterr()
    assert main(args + ["--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: could not write {root}/results/kd_losses.png: the disk is full (it needs ")
    assert "bytes free there" in err[-1] and not any("Traceback" in line for line in err)
    assert {relative: content(relative) for relative in kept} == before
    monkeypatch.undo()
    assert main(args + ["--resume"]) == 0
