"""The whole default compression (``kdu-compress``): data, teacher, every registered recipe, the
labels-only references, and the summary table.

The run plan (package data ``configs/default_run.json``, or ``--plan FILE``; its sections, job keys,
``after`` lists, ``seeds`` and steps: :mod:`.run_plan`) gives the jobs. Each training job's configuration is
written to ``<result_dir>/<job>/job_config.json`` and run as ``python -m knowledge_distill_util train --recipe
R --config that_file`` in a subprocess, a step as ``python -m knowledge_distill_util.training.steps NAME
that_file`` (:mod:`.steps`). The jobs run ``--jobs`` at a time, each once the jobs of its ``after`` list
finished (:class:`_Scheduler`), so the jobs that do not read the fine-tuned teacher run beside it
(OneFlow's CPU kernels use one core each; on the CPU,
with ``--jobs`` above 1, each job runs its kernels on OneFlow's scheduler thread, see
:func:`~knowledge_distill_util._device.share_cpu_cores`). Parallel jobs rather than data-parallel jobs:
measured side by side (``scripts/benchmark.py --scaling``), they train as fast and keep every number of
the one-process runs (data-parallel ranks draw other dropout masks); see ``docs/performance.md``.

The command line is :mod:`knowledge_distill_util.cli.compress`; it hands the checked flags to :func:`prepare`
(the plan, ``--result_dir``, its lock, the data) and :func:`execute` (the jobs and the summary).

Each job runs in its own process group (a new session). SIGINT or SIGTERM to ``kdu-compress`` stops the
whole tree (:func:`stop_jobs`): the same signal to every running job's group (each job releases its locks and
keeps its checkpoints, :mod:`.interrupt`), SIGKILL after :data:`STOP_GRACE_S` seconds to a group still
running, then the run's own lock is released and one line printed; exit status 130 (SIGINT) or 143
(SIGTERM). ``--resume`` continues the run. Job names (the plan's ``jobs`` sections) are folder names under
``--result_dir``: plain names only (:data:`JOB_NAME`), checked with ``--jobs`` before anything is written.
"""
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .._device import is_cpu, share_cpu_cores
from .._io import atomic_write_text
from . import interrupt
from ..config.schema import ConfigError, TrainConfig
from ..engine.lock import DirectoryLock
from .job_progress import JobBars, progress_line
from .run_plan import JOB_NAME, Job, _check_job_name, job_needs, plan_jobs, read_plan, row_order, seed_jobs  # noqa: F401
from .steps import RESULTS_FILE as STEP_RESULTS
from .summary import format_markdown, seeds_note, summary_rows, write_summary, write_summary_plot

__all__ = ["Job", "JobFailed", "read_plan", "plan_jobs", "row_order", "prepare", "execute", "stop_jobs", "reset_jobs"]

logger = logging.getLogger(__name__)
#: Seconds a job group has after SIGINT/SIGTERM before it is killed (SIGKILL).
STOP_GRACE_S = 30.0


class JobFailed(RuntimeError):
    """A job ended with a non-zero status, ran over ``--job_timeout`` or was not started (the run stopping)."""


class _Running:
    """The job processes running now, each the leader of its own process group; :meth:`stop` ends them
    all, and no job starts afterwards."""

    def __init__(self):
        self.lock = threading.Lock()
        self.processes: Dict[str, subprocess.Popen] = {}
        self.stopping = False
        self.stopped: List[str] = []

    def start(self, name: str, command: List[str], log, env: Dict[str, str]) -> subprocess.Popen:
        with self.lock:
            if self.stopping:
                raise JobFailed(f"job {name} was not started: the run is stopping")
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            self.processes[name] = process
        return process

    def done(self, name: str) -> None:
        with self.lock:
            self.processes.pop(name, None)

    def stop(self, signum: int = signal.SIGTERM, grace: Optional[float] = None) -> List[str]:
        """Send ``signum`` to every running job's process group, SIGKILL the groups still running after
        ``grace`` seconds (:data:`STOP_GRACE_S`), wait for them; returns the names of every job stopped
        (also by an earlier call)."""
        grace = STOP_GRACE_S if grace is None else grace
        with self.lock:
            self.stopping = True
            running = {name: p for name, p in self.processes.items() if p.poll() is None}
        for process in running.values():
            _signal_group(process, signum)
        deadline = time.time() + grace
        for name, process in running.items():
            try:
                process.wait(max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                logger.warning("%s: still running %.0f s after %s; killing it", name, grace,
                               signal.Signals(signum).name)
                _signal_group(process, signal.SIGKILL)
                process.wait()
        self.stopped += sorted(running)
        return list(self.stopped)


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    """``signum`` to the process group ``process`` leads (not reaped yet, so its id is not reused)."""
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


_RUNNING = _Running()


def _run_job(job: Job, timeout: float, share_cores: bool = False) -> Dict:
    """Run ``job`` in a subprocess (its own process group; ``share_cores``: other jobs run beside it, see
    :func:`~knowledge_distill_util._device.share_cpu_cores`); its results and wall time."""
    os.makedirs(job.config["result_dir"], exist_ok=True)
    config_path = os.path.join(job.config["result_dir"], "job_config.json")
    atomic_write_text(config_path, json.dumps(job.config, indent=2))
    log_path = os.path.join(job.config["result_dir"], "run.log")
    began = time.time()
    logger.info("%s: started (log %s)", job.name, log_path)
    env = dict(os.environ, GLOG_minloglevel=os.environ.get("GLOG_minloglevel", "3"))
    if share_cores and is_cpu(job.config.get("device")):
        share_cpu_cores(env)
    # --nproc 1: each job is one process (jobs run side by side instead: the module doc), whatever kdu-train's default
    command = ([sys.executable, "-m", "knowledge_distill_util.training.steps", job.step, config_path] if job.step else
               [sys.executable, "-m", "knowledge_distill_util", "train", "--recipe", job.recipe, "--config", config_path,
                "--nproc", "1"])
    with open(log_path, "w", encoding="utf-8") as log:
        process = _RUNNING.start(job.name, command, log, env)
        try:
            returncode = process.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
            raise JobFailed(f"job {job.name} ran longer than --job_timeout {timeout:.0f} s and was killed; see "
                               f"{log_path}, raise --job_timeout and resume with --resume") from None
        except KeyboardInterrupt as error:  # SIGINT/SIGTERM while the main thread waits (the teacher)
            _RUNNING.stop(interrupt.exit_status(error) - 128)
            raise
        finally:
            _RUNNING.done(job.name)
    if returncode != 0:
        with open(log_path, encoding="utf-8") as stream:
            tail = "\n".join(stream.read().splitlines()[-15:])
        raise JobFailed(f"job {job.name} failed with exit status {returncode}; see {log_path}; its last lines:\n{tail}")
    kdu_path = os.path.join(job.config["result_dir"], "results_eval_kdu.json")  # an original-format run's figures
    path = kdu_path if os.path.isfile(kdu_path) else os.path.join(job.config["result_dir"], "results_eval.json")
    if job.step:
        path = os.path.join(job.config["result_dir"], STEP_RESULTS)
    elif not job.row and not os.path.isfile(path):  # a recipe running itself, e.g. tinybert_general: no evaluation
        path = None
    results = {}
    if path is not None:
        with open(path, encoding="utf-8") as stream:
            results = json.load(stream)
    if not job.row:
        logger.info("%s: finished in %.0f s", job.name, time.time() - began)
    else:
        metric = results.get("main_metric", "accuracy")
        logger.info("%s: finished in %.0f s, %s %.4f", job.name, time.time() - began, metric,
                    results.get(metric, float("nan")))
    return {"seconds": time.time() - began, "results": results}


def _wait(futures: Dict, jobs: Dict[str, Job], every: float = 30.0, bars: Optional[bool] = None,
          names: Optional[Sequence[str]] = None, launch=None) -> None:
    """Wait for ``futures`` (and, with ``launch``, for the jobs it starts into them: called first and then
    at each look, it returns False once it will start no more). On a terminal (``bars`` None: stderr is a tty)
    a :class:`JobBars` of ``names`` (default: the futures) refreshed every second; otherwise a log line of
    where the running jobs are every ``every`` seconds (0: never)."""
    more = launch() if launch is not None else False
    shown = JobBars(list(names or futures)) if (sys.stderr.isatty() if bars is None else bars) else None
    interval = 1.0 if shown is not None else 0.2 if every <= 0 else min(1.0, every)
    last = time.time()
    try:
        while more or any(not future.done() for future in futures.values()):
            time.sleep(interval if not more else min(interval, 0.2))
            if more:
                more = launch()
            if shown is not None:
                shown.update(jobs)
            elif every > 0 and time.time() - last >= every:
                last = time.time()
                line = progress_line([jobs[name] for name, future in futures.items() if not future.done()])
                if line:
                    logger.info("running: %s", line)
    finally:
        if shown is not None:
            shown.update(jobs)
            shown.close()


def _measure_speeds(done: Dict, jobs: Dict[str, Job], rows: Sequence[str]) -> None:
    """Re-measure every model's inference speed one after the other in this process (during training
    the jobs shared the cores, which skews their own ``reasoningTime``); updates ``done[job]["results"]``."""
    from ..models.artifacts import load_trained
    from ..engine.evaluate import predict
    from .plan import load_data

    cfg = TrainConfig(**jobs["teacher"].config)
    for job in rows:
        model, meta = load_trained(jobs[job].config["model_save_dir"], job)
        data = load_data(cfg, seq_length=meta["seq_length"], vocab_file=meta["vocab_file"])
        predict(model, data.dev, cfg.eval_batch_size)  # warm-up pass
        _, speed = predict(model, data.dev, cfg.eval_batch_size)
        done[job]["results"]["reasoningTime_in_job"] = done[job]["results"].get("reasoningTime")
        done[job]["results"]["reasoningTime"] = round(speed, 2)


def _data(args, plan: Dict, result_dir: str):
    if args.data_dir is None:
        from ..data import prepare_default_data

        task_name, description = prepare_default_data(os.path.join(result_dir, "data"), seed=args.seed,
                                                      **plan.get("data", {}))
        logger.info("data: %s", description)
        return os.path.join(result_dir, "data"), task_name
    if not args.task_name:
        raise ConfigError("--data_dir needs --task_name (the GLUE task of that directory)")
    logger.info("data: task %r from %s", args.task_name, os.path.abspath(args.data_dir))
    return os.path.abspath(args.data_dir), args.task_name


def reset_jobs() -> None:
    """A new run's table of running jobs (:func:`stop_jobs` stops them); a run in this process starts with it."""
    global _RUNNING
    _RUNNING = _Running()


def stop_jobs(signum: int = signal.SIGTERM) -> List[str]:
    """Stop every running job (:meth:`_Running.stop`: ``signum``, SIGKILL after :data:`STOP_GRACE_S`); the
    names of the jobs stopped. No job starts afterwards."""
    return _RUNNING.stop(signum)


def prepare(args) -> Tuple[Dict[str, Job], str, str, DirectoryLock]:
    """What a run needs, every check first: the plan (``args.plan``), ``--result_dir`` (a run there needs
    ``--resume`` or ``--overwrite``), then lock ``--result_dir`` and prepare the data. ``args``: kdu-compress's
    checked flags (:func:`knowledge_distill_util.cli.compress.parse_args`). Returns ``(jobs, task name, result
    directory, its lock)``: the caller releases the lock, which is released here on any error.
    :class:`ConfigError` or ``ValueError`` (one sentence) for a wrong plan, directory or data flag."""
    plan = read_plan(args.plan)
    result_dir = os.path.abspath(args.result_dir)
    if os.path.isdir(os.path.join(result_dir, "teacher")) and not (args.resume or args.overwrite):
        raise ConfigError(f"--result_dir {result_dir} already holds a compression run; pass --resume to "
                          f"continue it, --overwrite to replace it, or another --result_dir")
    lock = DirectoryLock(result_dir).acquire()
    try:
        data_dir, task_name = _data(args, plan, result_dir)
        run = dict(data_dir=data_dir, task_name=task_name, seed=args.seed, result_dir=result_dir,
                   use_graph=args.use_graph, resume=args.resume, overwrite=args.overwrite,
                   progress_every=args.progress_every)
        jobs = plan_jobs(plan, run, args.quick)
        if args.teacher_model:
            jobs["teacher"].config["teacher_model"] = args.teacher_model
    except BaseException:
        lock.release()
        raise
    return jobs, task_name, result_dir, lock


def _run_jobs(args, jobs: Dict[str, Job], names: Sequence[str], workers: int) -> Dict[str, Dict]:
    """Run the jobs ``names``, ``workers`` at a time, each once the jobs of its ``after`` list finished (in
    the order of ``names`` among those ready), logging their progress every ``--progress_every`` seconds;
    returns each one's outcome. When a job fails, the jobs that wait for it are not started, the others run
    to their end, then the first failure is raised. A signal (or any error) while waiting stops the running
    jobs before the threads that wait for them are joined."""
    pool = ThreadPoolExecutor(max_workers=workers)
    futures: Dict[str, Any] = {}
    try:
        scheduler = _Scheduler(jobs, names, workers)
        launch = (lambda name: futures.setdefault(name, pool.submit(_run_job, jobs[name], args.job_timeout,
                                                                    workers > 1)))
        _wait(futures, jobs, args.progress_every, names=names, launch=lambda: scheduler.launch(futures, launch))
    except BaseException as error:  # SIGINT/SIGTERM: stop the running jobs before waiting for their threads
        _RUNNING.stop(interrupt.exit_status(error) - 128 if isinstance(error, KeyboardInterrupt) else signal.SIGTERM)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    failed = [name for name in names if name in futures and futures[name].exception() is not None]
    if failed:
        raise futures[failed[0]].exception()
    return {name: futures[name].result() for name in names}


class _Scheduler:
    """Which job starts next (:func:`_run_jobs`): the first of ``names`` whose ``after`` jobs all finished
    well, while fewer than ``workers`` run; a job waiting for a failed one never starts."""

    def __init__(self, jobs: Dict[str, Job], names: Sequence[str], workers: int):
        self.jobs, self.pending, self.workers = jobs, list(names), workers
        self.inside = set(names)

    def launch(self, futures: Dict, start) -> bool:
        """Start what can start; False once nothing more ever will (all started, or blocked by a failure)."""
        finished = {name for name, future in futures.items() if future.done() and future.exception() is None}
        failed = {name for name, future in futures.items() if future.done() and future.exception() is not None}
        running = sum(1 for future in futures.values() if not future.done())
        for name in list(self.pending):
            needs = [other for other in self.jobs[name].after if other in self.inside]
            if any(other in failed for other in job_needs(self.jobs, name)):
                self.pending.remove(name)
                logger.warning("%s: not started, a job it reads from failed", name)
            elif running < self.workers and all(other in finished for other in needs):
                self.pending.remove(name)
                start(name)
                running += 1
        return bool(self.pending)


#: What heads a ``--quick`` summary: its numbers come from a few steps on tiny data.
SMOKE_NOTE = ("SMOKE RUN (--quick: a few steps per job on tiny data; these numbers only show that every job "
              "runs, they say nothing about the recipes)")


def _smoke_note(header: str, quick: bool) -> str:
    """``header``, preceded by :data:`SMOKE_NOTE` under ``--quick``."""
    return f"{SMOKE_NOTE}\n{header}" if quick else header


def _plot(rows: List[Dict], result_dir: str, header: str) -> None:
    """``summary.png`` beside ``summary.md`` (accuracy against parameters and speed-up)."""
    png = write_summary_plot(rows, result_dir, header)
    if png:
        logger.info("summary plot written to %s", png)


def execute(args, jobs: Dict[str, Job], task_name: str, result_dir: str, began: float) -> None:
    """Run the ``jobs`` of :func:`prepare` (:func:`_run_jobs`), re-measure the models' speed, then print and write
    the summary (Markdown, JSON, plot). Raises :class:`JobFailed` when a job failed."""
    done = _run_jobs(args, jobs, list(jobs), workers=args.jobs)
    logger.info("teacher: %s; seconds per job: %s", done["teacher"]["results"].get("origin"),
                ", ".join(f"{name} {outcome['seconds']:.0f}" for name, outcome in done.items()))
    rows_order = row_order(jobs)
    _measure_speeds(done, jobs, rows_order)
    metric = done["teacher"]["results"].get("main_metric", "accuracy")
    entries = [_entry(jobs, done, job) for job in rows_order]
    rows = summary_rows(entries, metric, baseline=jobs["baseline"].title if "baseline" in jobs else "")
    header = (f"Compression of {task_name!r} ({len(rows)} models, seed {args.seed}); teacher: "
              f"{done['teacher']['results'].get('origin')}; total wall time {time.time() - began:.0f} s")
    header = _smoke_note(header + seeds_note(rows), args.quick)
    paths = write_summary(rows, result_dir, header)
    print("\n" + header + "\n\n" + format_markdown(rows) + "\n", flush=True)
    logger.info("summary written to %s and %s", paths["markdown"], paths["json"])
    _plot(rows, result_dir, header)


def _entry(jobs: Dict[str, Job], done: Dict[str, Dict], job: str) -> Dict:
    """The summary entry of ``job``'s row: its results and, with seed repeats, every seed's (the run's first)."""
    results = done[job]["results"]
    reference = jobs[job].compared_with
    entry = {"model": jobs[job].title, "layers": results.get("layers"), "hidden_size": results.get("hidden_size"),
             "results": results, "baseline": jobs[reference].title if reference in jobs else None}
    repeats = seed_jobs(jobs, job)
    if len(repeats) > 1:
        entry["seed_results"] = [done[name]["results"] for name in repeats]
        entry["seeds"] = [jobs[name].config["seed"] for name in repeats]
    return entry
