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
