"""The whole default compression (``scripts/run_compression.py``): data, teacher, the labels-only
student, the five recipes, and the summary table.

A *run plan* (``configs/default_run.json``) holds sections of configuration keys: ``data`` (arguments
of :func:`~knowledge_distill_util.data.prepare_default_data`), ``common`` (every job), one section per
job, and ``quick`` (every job under ``--quick``). Each job's configuration is
``configs/<recipe>.json`` < ``common`` < the job's section < ``quick`` < the run's own settings (data,
seed, directories), written to ``<result_dir>/<job>/job_config.json`` and run as
``scripts/<script>.py --config that_file`` in a subprocess. After the teacher, the student jobs run
``--jobs`` at a time (OneFlow's CPU kernels use one core each), longest first.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Optional, Sequence

from .config import merge_config, read_config_file
from .summary import format_markdown, summary_rows, write_summary

__all__ = ["JOBS", "build_job_configs", "main"]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: job name -> (recipe, script, row name in the summary); students in launch order (longest first).
JOBS = {
    "teacher": ("teacher", "train_teacher.py", "teacher"),
    "tinybert": ("tinybert", "run_tinybert.py", "TinyBERT"),
    "bilstm": ("bilstm", "run_bilstm.py", "Distilled-BiLSTM"),
    "theseus": ("theseus", "run_theseus.py", "BERT-of-Theseus"),
    "bert_pkd": ("bert_pkd", "run_bert_pkd.py", "BERT-PKD"),
    "kd": ("kd", "run_kd.py", "KD"),
    "baseline": ("baseline", "run_baseline.py", "labels-only student"),
    "bilstm_baseline": ("bilstm", "run_bilstm.py", "labels-only BiLSTM"),  # kd_alpha 0: CE only
}
ROW_ORDER = ("teacher", "baseline", "kd", "bilstm_baseline", "bilstm", "bert_pkd", "tinybert", "theseus")
#: job -> the job whose labels-only student it is compared with (default: "baseline").
COMPARED_WITH = {"bilstm": "bilstm_baseline"}


def _read_plan(path: str) -> Dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"run plan {path!r} does not exist; pass --plan with an existing JSON file")
    with open(path, encoding="utf-8") as stream:
        plan = json.load(stream)
    allowed = {"_comment", "data", "common", "quick"} | set(JOBS)
    unknown = sorted(set(plan) - allowed)
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; known sections: {sorted(allowed - {'_comment'})}")
    return plan


def build_job_configs(plan: Dict, plan_path: str, run: Dict, config_dir: str, quick: bool) -> Dict[str, Dict]:
    """The merged configuration of every job (validated: unknown keys raise ``ValueError``)."""
    configs = {}
    for job, (recipe, _, _) in JOBS.items():
        values = read_config_file(os.path.join(config_dir, f"{recipe}.json"))
        values = merge_config(values, plan.get("common", {}), f"{plan_path} [common]")
        values = merge_config(values, plan.get(job, {}), f"{plan_path} [{job}]")
        if quick:
            values = merge_config(values, plan.get("quick", {}), f"{plan_path} [quick]")
        values = merge_config(values, dict(run, model_save_dir=os.path.join(run["result_dir"], job, "model"),
                                           result_dir=os.path.join(run["result_dir"], job)), "run settings")
        if job != "teacher":
            values["teacher_model"] = os.path.join(run["result_dir"], "teacher", "model")
        configs[job] = values
    return configs


def _progress_line(jobs: Sequence[str], configs: Dict) -> str:
    """``job: stage step N`` of every job that has written a loss log (the newest log of each job)."""
    parts = []
    for job in jobs:
        directory = configs[job]["result_dir"]
        logs = [os.path.join(directory, f) for f in os.listdir(directory) if f.endswith("_losses.csv")] \
            if os.path.isdir(directory) else []
        if not logs:
            continue
        newest = max(logs, key=os.path.getmtime)
        with open(newest, encoding="utf-8") as stream:
            last = stream.read().strip().splitlines()[-1].split(",")[0]
        if last.isdigit():
            parts.append(f"{job}: {os.path.basename(newest)[:-len('_losses.csv')]} step {last}")
    return "; ".join(parts)


def _wait(futures: Dict, configs: Dict, every: float = 30.0) -> None:
    """Wait for ``futures``, printing where the running jobs are every ``every`` seconds."""
    last = time.time()
    while any(not future.done() for future in futures.values()):
        time.sleep(1.0)
        if time.time() - last >= every:
            last = time.time()
            line = _progress_line([job for job, f in futures.items() if not f.done()], configs)
            if line:
                print(f"[run_compression] running: {line}", flush=True)


def _run_job(job: str, config: Dict, timeout: float, echo: bool) -> Dict:
    script = os.path.join(REPO, "scripts", JOBS[job][1])
    os.makedirs(config["result_dir"], exist_ok=True)
    config_path = os.path.join(config["result_dir"], "job_config.json")
    with open(config_path, "w", encoding="utf-8") as stream:
        json.dump(config, stream, indent=2)
    log_path = os.path.join(config["result_dir"], "run.log")
    began = time.time()
    print(f"[run_compression] {job}: started (log {log_path})", flush=True)
    env = dict(os.environ, GLOG_minloglevel=os.environ.get("GLOG_minloglevel", "3"))
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.run([sys.executable, script, "--config", config_path], stdout=log,
                                 stderr=subprocess.STDOUT, env=env, timeout=timeout, cwd=REPO)
    seconds = time.time() - began
    with open(log_path, encoding="utf-8") as stream:
        text = stream.read()
    if echo:
        print("\n".join(line for line in text.splitlines() if line.startswith(f"[{JOBS[job][0]}]")
                        and "configuration" not in line), flush=True)
    if process.returncode != 0:
        tail = "\n".join(text.splitlines()[-15:])
        raise RuntimeError(f"job {job} failed with exit status {process.returncode}; see {log_path}:\n{tail}")
    print(f"[run_compression] {job}: finished in {seconds:.0f} s", flush=True)
    with open(os.path.join(config["result_dir"], "results_eval.json"), encoding="utf-8") as stream:
        results = json.load(stream)
    return {"seconds": seconds, "results": results}


def _measure_speeds(done: Dict, configs: Dict) -> None:
    """Re-measure every model's inference speed one after the other in this process (during training
    the jobs shared the cores, which skews their own ``reasoningTime``); updates ``done[job]["results"]``."""
    from .config import TrainConfig
    from .evaluate import predict
    from .pipeline import load_data, load_trained

    cfg = TrainConfig(**{k: v for k, v in configs["teacher"].items()})
    for job in ROW_ORDER:
        model, meta = load_trained(configs[job]["model_save_dir"], job)
        bundle = load_data(cfg, seq_length=meta["seq_length"], vocab_file=meta["vocab_file"])
        predict(model, bundle.dev, cfg.eval_batch_size)  # warm-up pass
        _, speed = predict(model, bundle.dev, cfg.eval_batch_size)
        done[job]["results"]["reasoningTime_in_job"] = done[job]["results"].get("reasoningTime")
        done[job]["results"]["reasoningTime"] = round(speed, 2)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Run the whole default compression and print the summary table.")
    parser.add_argument("--data_dir", default=None, help="GLUE-format TSV directory (default: prepare the built-in task)")
    parser.add_argument("--task_name", default=None, help="task of --data_dir")
    parser.add_argument("--result_dir", default="output/compression")
    parser.add_argument("--plan", default=os.path.join(REPO, "configs", "default_run.json"))
    parser.add_argument("--config_dir", default=os.path.join(REPO, "configs"))
    parser.add_argument("--teacher_model", default=None, help="override the plan's teacher ('auto', 'minilm', 'scratch' or a checkpoint)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="student trainings run in parallel (default 2)")
    parser.add_argument("--use_graph", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny data and models: a smoke run")
    parser.add_argument("--job_timeout", type=float, default=3600.0)
    args = parser.parse_args(argv)
    began = time.time()
    try:
        plan = _read_plan(args.plan)
        result_dir = os.path.abspath(args.result_dir)
        if args.data_dir is None:
            from ..data import prepare_default_data

            data_dir = os.path.join(result_dir, "data")
            task_name, description = prepare_default_data(data_dir, seed=args.seed, **plan.get("data", {}))
            print(f"[run_compression] data: {description}", flush=True)
        else:
            if not args.task_name:
                raise ValueError("--data_dir needs --task_name (the GLUE task of that directory)")
            data_dir, task_name = os.path.abspath(args.data_dir), args.task_name
            print(f"[run_compression] data: task {task_name!r} from {data_dir}", flush=True)
        run = dict(data_dir=data_dir, task_name=task_name, seed=args.seed, result_dir=result_dir,
                   use_graph=args.use_graph, quick=args.quick)
        configs = build_job_configs(plan, args.plan, run, args.config_dir, args.quick)
        if args.teacher_model:
            configs["teacher"]["teacher_model"] = args.teacher_model
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    done = {"teacher": _run_job("teacher", configs["teacher"], args.job_timeout, echo=True)}
    print(f"[run_compression] teacher: {done['teacher']['results'].get('origin')}", flush=True)
    students = [job for job in JOBS if job != "teacher"]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {job: pool.submit(_run_job, job, configs[job], args.job_timeout, True) for job in students}
        _wait(futures, configs)
        for job in students:
            done[job] = futures[job].result()
    _measure_speeds(done, configs)
    metric = done["teacher"]["results"].get("main_metric", "accuracy")
    entries = [{"model": JOBS[job][2], "layers": done[job]["results"].get("layers"),
                "hidden_size": done[job]["results"].get("hidden_size"), "results": done[job]["results"],
                "baseline": JOBS[COMPARED_WITH.get(job, "baseline")][2]}
               for job in ROW_ORDER]
    rows = summary_rows(entries, metric)
    total = time.time() - began
    header = (f"Compression of {task_name!r} ({len(rows)} models, seed {args.seed}); teacher: "
              f"{done['teacher']['results'].get('origin')}; total wall time {total:.0f} s")
    paths = write_summary(rows, result_dir, header)
    print("\n" + header + "\n\n" + format_markdown(rows) + "\n", flush=True)
    print(f"[run_compression] summary written to {paths['markdown']} and {paths['json']}", flush=True)
    return 0
