"""The package works from a wheel, outside the repository: ``pip wheel .`` installed into a fresh virtual
environment runs ``kdu-train --recipe kd --quick`` and ``kdu-compress --quick`` from a temporary directory.

The fresh environment gets the wheel without its dependencies; those come from this environment's
site-packages through a ``.pth`` line (no download, and this checkout's editable install is not visible
there: only ``.pth`` files of the environment's own site-packages are processed)."""
import glob
import json
import os
import re
import shutil
import site
import subprocess
import sys

import pytest

from conftest import run_retrying_signals

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _two_job_plan():
    """The packaged run plan with only the teacher and KD left."""
    from knowledge_distill_util.training import RECIPES
    with open(os.path.join(REPO, "knowledge_distill_util", "configs", "default_run.json"), encoding="utf-8") as stream:
        plan = json.load(stream)
    kept = ("teacher", "kd")
    plan["jobs"] = {name: job for name, job in plan["jobs"].items() if name in kept}
    plan["skip"] = [name for name in RECIPES.names() if name not in kept]
    plan["launch_first"] = []
    return plan


@pytest.mark.slow
def test_wheel_runs_the_console_scripts_outside_the_repository(tmp_path):
    source = tmp_path / "source"  # pip wheel writes build/ into the tree it builds: not into this checkout
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "output",
                                                                 "__pycache__", ".pytest_cache", ".hypothesis"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w",
                    str(tmp_path / "wheel")], check=True, timeout=300)
    env_dir, packages = _fresh_env(tmp_path)
    wheel = glob.glob(str(tmp_path / "wheel" / "*.whl"))[0]
    subprocess.run(_pip_install(env_dir) + [wheel], check=True, timeout=300)
    work = tmp_path / "outside"
    work.mkdir()
    env = dict(os.environ, GLOG_minloglevel="3", PYTHONPATH="")
    python = str(env_dir / "bin" / "python")
    where = subprocess.run([python, "-c", "import knowledge_distill_util as k; print(k.__file__)"], cwd=work,
                           capture_output=True, text=True, env=env, timeout=120)
    assert where.returncode == 0 and where.stdout.startswith(packages), (where.stdout, where.stderr[-2000:])
    plan = work / "plan.json"  # the packaged plan cut to the teacher and KD: the whole plan's quick run is
    plan.write_text(json.dumps(_two_job_plan()), encoding="utf-8")  # test_compression's job
    done = run_retrying_signals([str(env_dir / "bin" / "kdu-compress"), "--quick", "--plan", str(plan),
                                 "--result_dir", "out"], cwd=work, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (work / "out" / "summary.md").is_file()
    teacher = str(work / "out" / "teacher" / "model")
    data = str(work / "out" / "data")
    with open(os.path.join(data, "data_info.json"), encoding="utf-8") as stream:
        task = json.load(stream)["task_name"]
    done = run_retrying_signals([str(env_dir / "bin" / "kdu-train"), "--recipe", "kd", "--quick", "--data_dir", data,
                                 "--task_name", task, "--teacher_model", teacher, "--model_save_dir", "kd",
                                 "--result_dir", "kd_results"], cwd=work, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (work / "kd_results" / "results_eval.json").is_file()


def _source_copy(tmp_path):
    source = tmp_path / "source"  # builds write build/ and *.egg-info into the tree: not into this checkout
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "output",
                                                                 "__pycache__", ".pytest_cache", ".hypothesis",
                                                                 "site"))
    return source


def _fresh_env(tmp_path):
    """A new virtual environment whose dependencies come from this one's site-packages (a ``.pth`` line);
    it has no pip of its own (installing pip into it took 5-9 s): :func:`_pip_install` installs into it."""
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=300)
    packages = glob.glob(str(env_dir / "lib" / "python*" / "site-packages"))[0]
    with open(os.path.join(packages, "dependencies.pth"), "w", encoding="utf-8") as stream:
        stream.write("\n".join(site.getsitepackages()) + "\n")
    return env_dir, packages


def _pip_install(env_dir):
    """``pip install -q --no-deps`` into the environment ``env_dir`` (this environment's pip, ``--python``)."""
    return [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "-q", "--no-deps",
            "--disable-pip-version-check"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["pip install -e .", "setup.py develop"])  # a regular install: the wheel test
def test_setup_py_and_pyproject_install_both_ways(tmp_path, how):
    """``setup.py`` is a shim over pyproject.toml: an editable install and the original users'
    ``python setup.py develop`` each give the package and its console scripts (a regular install from a built
    wheel: :func:`test_wheel_runs_the_console_scripts_outside_the_repository`) (dependencies not installed:
    ``--no-deps``; ``pip`` builds with setuptools from PyPI, ``develop`` with the environment's own)."""
    source = _source_copy(tmp_path)
    env_dir, _ = _fresh_env(tmp_path)
    python = str(env_dir / "bin" / "python")
    command = {"pip install -e .": _pip_install(env_dir) + ["-e", str(source)],
               "setup.py develop": [python, "setup.py", "-q", "develop", "--no-deps"]}[how]
    done = subprocess.run(command, cwd=source, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    work = tmp_path / "outside"
    work.mkdir()
    env = dict(os.environ, GLOG_minloglevel="3", PYTHONPATH="")
    where = subprocess.run([python, "-c", "import knowledge_distill_util as k; print(k.__file__)"], cwd=work,
                           capture_output=True, text=True, env=env, timeout=120)
    expected = str(source)
    assert where.returncode == 0 and where.stdout.startswith(expected), (where.stdout, where.stderr[-2000:])
    helped = subprocess.run([str(env_dir / "bin" / "kdu-train"), "--help"], cwd=work, capture_output=True, text=True,
                            env=env, timeout=120)
    assert helped.returncode == 0 and re.search(r"^ +tinybert +TinyBERT: ", helped.stdout, re.M), helped.stderr[-2000:]
