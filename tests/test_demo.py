"""The argparse demo runs end to end (tiny sizes) and prints every loss term."""
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "demo_distill.py"


def test_demo_runs_and_prints_the_three_loss_terms():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--teacher_steps", "2", "--num_steps", "2", "--num_examples", "256",
         "--batch_size_per_device", "32", "--temperature", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "student step    1  total" in result.stdout
    for term in ("pred ", "layer ", "att "):
        assert term in result.stdout
    assert "dev accuracy: teacher" in result.stdout
