"""scripts/gpu_check.sh's 2-GPU data-parallel smoke test (scripts/dp_smoke.py), exercised on the CPU."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "dp_smoke.py")
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import dp_smoke  # noqa: E402


def _env():
    return dict(os.environ, GLOG_minloglevel="3", PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))


def test_gpu_check_is_valid_bash_and_runs_the_smoke_test():
    done = subprocess.run(["bash", "-n", os.path.join(ROOT, "scripts", "gpu_check.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with open(os.path.join(ROOT, "scripts", "gpu_check.sh"), encoding="utf-8") as stream:
        assert '"$python" scripts/dp_smoke.py --device cuda --nproc 2' in stream.read()


def test_fewer_gpus_than_processes_skip_with_one_line():
    # no GPU here: what a machine with fewer than 2 GPUs prints
    done = subprocess.run([sys.executable, SCRIPT, "--device", "cuda"], capture_output=True, text=True, env=_env(),
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ("dp_smoke: 2-GPU data-parallel smoke test skipped: OneFlow sees 0 CUDA device(s), "
                                   "2 needed")


def test_bad_arguments_are_refused():
    done = subprocess.run([sys.executable, SCRIPT, "--device", "cpu", "--modes", "eager,lazy"], capture_output=True,
                          text=True, env=_env(), timeout=60)
    assert done.returncode == 2 and "--nproc must be at least 2 and --modes a list of eager/graph, got 2 and " \
                                    "'eager,lazy'" in done.stderr


def test_a_failing_job_is_reported(tmp_path):
    # a teacher that does not exist: both ranks refuse the configuration, the launcher exits non-zero
    ok, line = dp_smoke.smoke(str(tmp_path), str(tmp_path / "data"), "none", str(tmp_path / "no_teacher"), "cpu", 2,
                              "eager", 180, dict(_env(), KDU_DIST_TIMEOUT="20"))
    assert not ok and line.startswith("dp_smoke: eager on 2 x cpu: FAILED, exit "), line[:500]
    assert "--data_dir" in line, "the rank's own sentence is shown"


@pytest.mark.slow
def test_the_smoke_test_passes_on_two_cpu_processes(tmp_path):
    # eager only: a data-parallel run under nn.Graph is tests/training/test_distributed_training.py's
    # test_two_stage_recipes_two_processes_equal_one_process_graph (launcher, two ranks, rank 0's model and results)
    done = subprocess.run([sys.executable, SCRIPT, "--device", "cpu", "--modes", "eager", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, env=_env(), timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["eager on 2 x cpu"], lines
    assert ": ok, exit 0, rank 0 wrote the model and results (" in lines[0], lines
    assert (tmp_path / "kd_eager" / "results" / "results_eval.json").exists()
