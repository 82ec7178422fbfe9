"""What ``kdu-compress`` shows of its running jobs (:mod:`.compression`), read from each job's
``progress.json`` (written by :func:`~.run.run` at every step): a log line of where they are
(:func:`progress_line`), or on a terminal one tqdm bar per job (:class:`JobBars`).
"""
import json
import os
import sys
from typing import Dict, Optional, Sequence

from .run import PROGRESS_FILE
from .run_plan import Job

__all__ = ["progress_line", "JobBars"]


def _read_progress(job: Job) -> Optional[Dict]:
    """The job's ``progress.json`` (what its run writes at every step), or None before the first one."""
    try:
        with open(os.path.join(job.config["result_dir"], PROGRESS_FILE), encoding="utf-8") as stream:
            state = json.load(stream)
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def progress_line(jobs: Sequence[Job]) -> str:
    """``job: stage step N/M`` of every running job that has written its progress file."""
    states = [(job.name, _read_progress(job)) for job in jobs]
    return "; ".join(_job_progress(name, state) for name, state in states if state is not None)


def _job_details(state: Dict) -> str:
    """``, loss 0.4123, ETA 3m12s`` (what of the two a job's ``progress.json`` holds)."""
    from .trainer import format_duration

    text = ""
    if isinstance(state.get("loss"), (int, float)):
        text += f", loss {state['loss']:.4f}"
    if isinstance(state.get("eta_seconds"), (int, float)):
        text += f", ETA {format_duration(state['eta_seconds'])}"
    return text


def _job_progress(name: str, state: Dict) -> str:
    """``teacher: stage teacher step 120/675, loss 0.4123, ETA 3m12s`` from a job's ``progress.json``."""
    return f"{name}: stage {state.get('stage')} step {state.get('step')}/{state.get('total')}" + _job_details(state)


class JobBars:
    """On a terminal: one tqdm bar per running job, ``kd: 42%|####      | 120/285 stage kd, loss 0.4123,
    ETA 3m12s``, read from the job's ``progress.json`` at each :meth:`update` (a new stage restarts its bar)."""

    FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n}/{total}{postfix}"

    def __init__(self, names: Sequence[str], stream=None):
        from tqdm import tqdm

        self.bars = {name: tqdm(total=1, desc=name, position=i, leave=True, file=stream or sys.stderr,
                                bar_format=self.FORMAT, postfix="starting") for i, name in enumerate(names)}
        self.stages: Dict[str, str] = {}

    def update(self, jobs: Dict[str, Job]) -> None:
        for name, bar in self.bars.items():
            state = _read_progress(jobs[name])
            step, total = (state or {}).get("step"), (state or {}).get("total")
            if not (isinstance(step, int) and isinstance(total, int) and total > 0):
                continue
            if self.stages.get(name) != state.get("stage") or bar.total != total:
                self.stages[name] = state.get("stage")
                bar.reset(total=total)
            bar.n = min(step, total)
            bar.set_postfix_str(f"stage {state.get('stage')}{_job_details(state)}", refresh=False)
            bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
