"""Run a recipe: ``kdu-train --recipe NAME ...`` (or ``python -m knowledge_distill_util train ...``).

:func:`run` seeds every generator from ``cfg.seed``, prepares the :class:`~.plan.Plan` (every check
before any training step), trains its stages, saves the model, evaluates it and writes
``results_eval.json``. While training, ``<result_dir>/progress.json`` says which stage and step the run
is at (what ``kdu-compress`` reads to report on its jobs).
"""
import dataclasses
import json
import logging
import os
import random
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import oneflow as flow

from .artifacts import MODEL_CONFIG, WEIGHTS, load_trained, save_trained
from .._device import device_type, is_cpu, share_cpu_cores
from .._io import atomic_write_file, atomic_write_text
from . import distributed
from .config import ConfigError, TrainConfig, parse_config, save_config
from .lock import lock_directories
from .evaluate import evaluate_model, predict, write_results
from .original_log import OriginalSummary
from .original_models import BestSnapshot, best_metric, snapshot_directory, write_snapshots
from .original_results import write_original_results
from .plan import Plan, evaluation_source, load_data, prepare
from .trainer import LossStep, TrainerConfig, train_stage
from .validation import validate_config

__all__ = ["run", "execute", "main", "check_run_directory", "seed_everything", "teacher_logits", "setup_logging",
           "PROGRESS_FILE", "LOGITS_FILE"]

logger = logging.getLogger(__name__)
PROGRESS_FILE = "progress.json"
LOGITS_FILE = "train_logits.npz"
RUN_CONFIG = "run_config.json"
#: Keys a resumed run may change: they do not alter the steps already taken (num_epochs and max_steps
#: extend or shorten the run; the schedule then follows the new total).
RESUMABLE_CHANGES = frozenset({
    "num_epochs", "stage2_num_epochs", "max_steps", "resume", "overwrite", "log_level", "do_train", "do_eval",
    "eval_batch_size", "max_eval_examples", "checkpoint_every", "result_dir", "device", "teacher_logits",
    "vocab_file", "data_dir", "log_dir", "loss_print_every_n_iter"})


def seed_everything(seed: int) -> None:
    """Seed OneFlow's default generator, numpy's global one and Python's ``random``."""
    flow.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def setup_logging(level: str = "INFO") -> None:
    """Log ``[name] message`` lines of this package at ``level`` to stderr."""
    if level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"log_level must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    logging.basicConfig(format="[%(name)s] %(message)s", stream=sys.stderr, force=True)
    logging.getLogger("knowledge_distill_util").setLevel(level.upper())


def teacher_logits(cfg: TrainConfig, teacher, meta: Dict, data, teacher_dir: str) -> np.ndarray:
    """The teacher's logits on the training rows: from ``train_logits.npz`` when it matches, else computed
    (and cached). The teacher sees the training texts at its own sequence length (``meta["seq_length"]``)."""
    view = data if meta["seq_length"] == cfg.seq_length else load_data(
        cfg, seq_length=meta["seq_length"], vocab_file=data.vocab_file)
    path = cfg.teacher_logits or os.path.join(teacher_dir, LOGITS_FILE)
    if os.path.isfile(path):
        try:
            with np.load(path) as stored:
                if str(stored["fingerprint"]) == view.train_fingerprint:
                    return stored["logits"]
        except Exception as error:  # noqa: BLE001 - a truncated or foreign file: rebuild it
            logger.warning("cached teacher logits %s are unreadable (%s); computing them again", path, error)
    logits = predict(teacher, view.train, cfg.eval_batch_size)[0].astype(np.float32)  # sharded over the ranks
    if not distributed.is_writer():
        return logits
    try:
        atomic_write_file(path, lambda stream: np.savez(stream, logits=logits,
                                                         fingerprint=np.array(view.train_fingerprint)))
    except OSError as error:
        logger.warning("cannot cache the teacher logits in %s (%s); using them uncached", path, error)
    return logits


def _holds_a_run(directory: str) -> bool:
    return any(os.path.exists(os.path.join(directory, name)) for name in (RUN_CONFIG, MODEL_CONFIG, "checkpoints"))


def check_run_directory(cfg: TrainConfig) -> None:
    """Refuse to train over an existing run without ``--resume`` or ``--overwrite``, and a ``--resume``
    whose configuration differs from the run's in a key that alters it (:data:`RESUMABLE_CHANGES` aside)."""
    if not cfg.do_train:
        return
    path = os.path.join(cfg.model_save_dir, RUN_CONFIG)
    if not cfg.resume:
        if _holds_a_run(cfg.model_save_dir) and not cfg.overwrite:
            raise ConfigError(f"--model_save_dir {cfg.model_save_dir} already holds a run; pass --resume to continue "
                              f"it, --overwrite to replace it, or another --model_save_dir")
        return
    if not os.path.isfile(path):
        return
    try:
        with open(path, encoding="utf-8") as stream:
            saved = json.load(stream)
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path} is unreadable ({error}); restore it, or start anew with --overwrite") from None
    current = dataclasses.asdict(cfg)
    changed = sorted(k for k in set(saved) | set(current)
                     if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k))
    if changed:
        listed = ", ".join(f"{k} {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise ConfigError(f"--resume would change the run in {cfg.model_save_dir} ({listed}); resume with its "
                          f"settings, or start a new run with --overwrite or another --model_save_dir")


def _meta(plan: Plan, origin: str) -> Dict:
    cfg, spec = plan.cfg, plan.data.spec
    return {"recipe": cfg.recipe, "task_name": spec.name,
            "labels": list(spec.labels) if spec.labels is not None else None,
            "vocab_file": plan.data.vocab_file, "seq_length": cfg.seq_length, "origin": origin}


def _trainer_config(cfg: TrainConfig, num_epochs: float, learning_rate: float) -> TrainerConfig:
    return TrainerConfig(num_epochs=num_epochs, learning_rate=learning_rate, batch_size=cfg.batch_size_per_device,
                         weight_decay=cfg.weight_decay, warmup_proportion=cfg.warmup_proportion,
                         max_steps=cfg.max_steps, checkpoint_every=cfg.checkpoint_every, seed=cfg.seed,
                         resume=cfg.resume, use_graph=cfg.use_graph, reseed_dropout=cfg.reseed_dropout)


def _progress_writer(path: str, stage: str):  # called on rank 0 only
    def write(step: int, total: int, terms: Dict[str, float]) -> None:
        atomic_write_text(path, json.dumps({"stage": stage, "step": step, "total": total, "loss": terms["loss"]}))
    return write


def _best_snapshot(plan: Plan, stage) -> Optional[BestSnapshot]:
    """The epoch-end hook writing ``snapshot_best`` at the best epoch of the last stage (``--save_snapshot``,
    which the original scripts set); None when the run writes no snapshot or its task has no such metric."""
    cfg = plan.cfg
    metric = best_metric(plan.data.spec.name, stage.name) if cfg.save_snapshot else None
    if metric is None:
        return None
    if distributed.is_distributed() and cfg.use_graph:
        logger.warning("snapshot_best holds the final model: the dev set is not evaluated after each epoch under "
                       "the launcher with --use_graph (its parameters are global tensors); drop --use_graph for "
                       "the best epoch")
        return None
    return BestSnapshot(plan.final_model, plan.whole_model, plan.data.dev, plan.data.spec.output_mode, metric, cfg)


def _on_step(plan: Plan, stage_name: str, summary: Optional[OriginalSummary]):
    """Rank 0's callback after every step: ``progress.json``, and ``summary.csv`` with ``--log_dir``."""
    progress = _progress_writer(os.path.join(plan.cfg.result_dir, PROGRESS_FILE), stage_name)
    if summary is None:
        return progress

    def both(step: int, total: int, terms: Dict[str, float]) -> None:
        progress(step, total, terms)
        summary(step, total, terms)
    return both


def _summary(plan: Plan) -> Optional[OriginalSummary]:
    """The original's ``<log_dir>/summary.csv`` writer (``--log_dir``; rank 0), else None."""
    cfg = plan.cfg
    if not cfg.log_dir or not distributed.is_writer():
        return None
    rows = len(plan.data.train)
    batch = min(cfg.batch_size_per_device * distributed.world_size(), rows)
    return OriginalSummary(cfg.log_dir, repr(cfg), steps_per_epoch=-(-rows // batch),
                           print_steps=cfg.loss_print_every_n_iter, batch_size=batch, resume=cfg.resume)


def _train(plan: Plan, progress: bool) -> Dict[str, float]:
    cfg, timings, best, summary = plan.cfg, {}, None, _summary(plan)
    cached = None
    if any(stage.objective.can_cache_teacher_logits for stage in plan.stages):
        cached = teacher_logits(cfg, plan.teacher, plan.teacher_meta, plan.data, cfg.teacher_model)
    for stage in plan.stages:
        done_dir = os.path.join(cfg.model_save_dir, f"stage_{stage.name}")
        last = stage is plan.stages[-1]
        if cfg.resume and not last and os.path.isfile(os.path.join(done_dir, MODEL_CONFIG)):
            stage.export.load_state_dict(load_trained(done_dir, f"stage {stage.name}")[0].state_dict())
            logger.info("stage %s already finished; loaded %s", stage.name, done_dir)
            continue
        uses_cache = cached is not None and stage.objective.can_cache_teacher_logits
        step = LossStep(stage.model, plan.teacher, stage.objective, cfg)
        best = _best_snapshot(plan, stage) if last else None
        result = train_stage(step, plan.data.train, _trainer_config(cfg, stage.num_epochs, stage.learning_rate),
                             work_dir=cfg.result_dir, stage=stage.name,
                             checkpoint_dir=os.path.join(cfg.model_save_dir, "checkpoints"),
                             teacher_logits=cached if uses_cache else None, progress=progress,
                             on_step=_on_step(plan, stage.name, summary),
                             on_epoch_end=best)
        timings[stage.name] = round(result.seconds, 1)
        logger.info("stage %s: %d steps in %.1f s, last %s; log %s", stage.name, result.steps, result.seconds,
                    {k: round(v, 4) for k, v in result.last_terms.items()}, result.log_path)
        if not last and distributed.is_writer():
            save_trained(stage.export, done_dir, _meta(plan, f"stage {stage.name}"))
    origin = plan.description if not plan.recipe.needs_teacher else f"{cfg.recipe} student of {cfg.teacher_model}"
    if distributed.is_writer():
        save_trained(plan.final_model, cfg.model_save_dir, _meta(plan, origin))
        if best is not None and not best.written_best:
            logger.warning("no epoch's dev %s exceeded 0.0 (the original then saves no best model); snapshot_best "
                           "holds the final model", best.metric)
        elif best is not None:
            logger.info("snapshot_best holds epoch %d (step %d): dev %s %.4f", best.best_epoch + 1, best.best_step,
                        best.metric, best.best)
        write_snapshots(plan.whole_model, cfg, best_written=best is not None and best.written_best)
    if plan.recipe.trains_teacher:  # a teacher: cache its logits for the students to come
        teacher_logits(cfg, plan.final_model, _meta(plan, origin), plan.data, cfg.model_save_dir)
    return timings


def _evaluate(plan: Plan, timings: Dict[str, float]) -> Dict:
    cfg = plan.cfg
    source = cfg.model_save_dir if cfg.do_train else evaluation_source(cfg)
    saved = snapshot_directory(source) or os.path.join(source, WEIGHTS)
    results = evaluate_model(plan.final_model, plan.data.dev, plan.data.spec.output_mode, cfg.eval_batch_size,
                             saved_model_dir=saved)
    results.update(recipe=cfg.recipe, task_name=plan.data.spec.name, main_metric=plan.data.spec.main_metric,
                   train_seconds=timings, layers=plan.final_model.config.get("num_hidden_layers"),
                   hidden_size=plan.final_model.config.get("hidden_size"), origin=plan.description)
    on_train = None
    if cfg.results_format == "original" and cfg.do_train and len(plan.data.train):
        on_train = evaluate_model(plan.final_model, plan.data.train, plan.data.spec.output_mode,
                                  cfg.eval_batch_size, saved_model_dir=saved)  # every rank: sharded, gathered
    if not distributed.is_writer():
        return results
    if cfg.results_format == "original":
        path = write_original_results(results, cfg.result_dir, source, "eval")
        if on_train is not None:
            write_original_results(on_train, cfg.result_dir, source, "train")
    else:
        path = write_results(results, cfg.result_dir)
    shown = {k: results[k] for k in ("accuracy", "mcc", "f1", "pearson", "spearmanr", "modelSize", "reasoningTime")
             if k in results}
    logger.info("eval on %d dev rows: %s -> %s", len(plan.data.dev), shown, path)
    return results


def execute(plan: Plan, progress: Optional[bool] = None) -> Dict:
    """Train every stage of a prepared :class:`~.plan.Plan`, save, evaluate; returns the results dict."""
    cfg = plan.cfg
    progress = sys.stderr.isatty() if progress is None else progress
    os.makedirs(cfg.result_dir, exist_ok=True)
    if distributed.is_writer():
        save_config(cfg, cfg.result_dir)
    logger.info("%s; data: %s (%d train / %d dev rows, seq_length %d)", plan.description, plan.data.spec.name,
                len(plan.data.train), len(plan.data.dev), cfg.seq_length)
    timings = _train(plan, progress) if cfg.do_train else {}
    return _evaluate(plan, timings) if cfg.do_eval else {}


def device_kind(cfg: TrainConfig) -> str:
    """The kind of device ``cfg.device`` resolves to on this rank (:func:`~knowledge_distill_util._device.device_type`)."""
    return device_type(cfg.device)


def _write_run_config(cfg: TrainConfig) -> None:
    """``<model_save_dir>/run_config.json``: what a resume compares its configuration with."""
    atomic_write_text(os.path.join(cfg.model_save_dir, RUN_CONFIG),
                      json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True))


def run(cfg: TrainConfig, progress: Optional[bool] = None) -> Dict:
    """Check the configuration and the output directories, lock them, seed, prepare (all checks first),
    train every stage, save, evaluate; returns the results dict. Raises :class:`ConfigError` on bad input."""
    if distributed.is_distributed():
        if is_cpu(cfg.device):  # before OneFlow's first operation, which reads it
            logger.debug("processes share the CPU: %s", share_cpu_cores())
        return _run_distributed(cfg, progress)
    validate_config(cfg)
    locks = lock_directories(cfg.model_save_dir, cfg.result_dir)
    try:
        check_run_directory(cfg)
        seed_everything(cfg.seed)
        plan = prepare(cfg)
        if cfg.do_train:
            _write_run_config(cfg)
        return execute(plan, progress)
    finally:
        for lock in locks:
            lock.release()


def _entry_point() -> List[str]:
    """What the launcher runs to start this entry point again: this script, or the package's ``train``."""
    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if script.endswith(".py") and os.path.basename(script) != "__main__.py" and os.path.isfile(script):
        return [script]
    return ["--module", "knowledge_distill_util", "train"]


def _run_distributed(cfg: TrainConfig, progress: Optional[bool]) -> Dict:
    """:func:`run` on one rank of a multi-process job: rank 0 alone locks and checks the directories; every
    rank checks its configuration and prepares; then all agree (one refusal stops every rank) before the
    first training step."""
    distributed.start_watchdog()
    try:  # before any collective: a wrong node layout aborts the first one in C++
        distributed.check_local_rank()
    except ValueError as caught:
        raise ConfigError(str(caught)) from None
    writer, locks, plan, error = distributed.is_writer(), [], None, None
    try:
        validate_config(cfg)
        if writer:
            locks = lock_directories(cfg.model_save_dir, cfg.result_dir)
            for lock in locks:
                distributed.at_abort(lock.release)
            check_run_directory(cfg)
        seed_everything(cfg.seed)
        plan = prepare(cfg)
        world = distributed.world_size()
        if cfg.do_train and cfg.batch_size_per_device * world > len(plan.data.train):
            raise ConfigError(f"{world} processes x --batch_size_per_device {cfg.batch_size_per_device} = "
                              f"{cfg.batch_size_per_device * world} rows per step exceeds the {len(plan.data.train)} "
                              f"training rows; lower --batch_size_per_device or the number of processes")
    except ConfigError as caught:
        error = caught
    try:
        different = distributed.check_same(json.dumps(dataclasses.asdict(cfg), sort_keys=True), "configuration")
        devices = distributed.check_same(device_kind(cfg), "device type (cpu or cuda)",
                                         "pass the same --device to every rank (a CPU-only node beside GPU nodes "
                                         "picks the CPU by default)")
        if not distributed.agree(error is None and different is None and devices is None):
            raise error or ConfigError(different or devices or "another rank refused the configuration (its message "
                                                               "names the problem); nothing was trained")
        if cfg.do_train and writer:
            _write_run_config(cfg)
        return execute(plan, progress)
    finally:
        for lock in locks:
            lock.release()


def relaunch(argv: Sequence[str], entry: Sequence[str]) -> Tuple[List[str], Optional[int]]:
    """The original's ``--gpu_num_per_node`` / ``--num_nodes`` / ``--node_ips``: above one process, run
    ``entry`` (and the remaining ``argv``) again under OneFlow's launcher. Returns ``(argv without those
    flags, None)`` for one process, else ``(.., exit status)``: the launcher's, or 2 after one line
    naming a bad flag."""
    try:
        argv, launch_flags = distributed.split_launch_flags(argv)
        command = distributed.launch_command(launch_flags, argv, entry)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return list(argv), 2
    if command is None:
        return argv, None
    print("starting: " + " ".join(command), file=sys.stderr, flush=True)
    from .interrupt import run_forwarding  # SIGINT/SIGTERM reach the launcher, which stops its ranks

    return argv, run_forwarding(command, _prog())


def run_entry(make_config: Callable[[], TrainConfig]) -> int:
    """Build the configuration with ``make_config`` and :func:`run` it, as every entry point does: a
    :class:`ConfigError` prints one line and exits 2; with several processes, a failing rank ends the others
    at once (:func:`~.distributed.fail`) instead of leaving them waiting in a collective. In one process,
    SIGINT and SIGTERM stop the run cleanly (:mod:`.interrupt`: locks released, the checkpoints kept), print
    one line and exit 130 / 143 (under the launcher, :mod:`.distributed` handles SIGTERM). A full disk
    (``ENOSPC``/``EDQUOT``) prints one sentence naming the path and the bytes and exits 2."""
    from .._io import DISK_FULL, write_error_message
    from . import interrupt

    restore = (lambda: None) if distributed.is_distributed() else interrupt.install()
    try:
        cfg = make_config()
        setup_logging(cfg.log_level if distributed.is_writer() else "WARNING")
        logger.debug("configuration: %s", json.dumps(dataclasses.asdict(cfg), sort_keys=True))
        run(cfg)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        distributed.fail(str(error), code=2)  # several processes: tell the others, end at once
        return 2
    except SystemExit as done:  # --help, --print_config: every rank exits the same way
        if done.code not in (None, 0):
            distributed.fail(f"exit status {done.code}", code=done.code if isinstance(done.code, int) else 2)
        raise
    except BaseException as error:  # noqa: BLE001 - several processes: a rank must not hang at exit
        if isinstance(error, KeyboardInterrupt) and not distributed.is_distributed():
            print(interrupt.sentence(_prog(), error), file=sys.stderr, flush=True)
            return interrupt.exit_status(error)
        if isinstance(error, OSError) and error.errno in DISK_FULL:
            sentence = write_error_message(error)
            print(f"error: {sentence}", file=sys.stderr, flush=True)
            distributed.fail(sentence, code=2)
            return 2
        if distributed.is_distributed():
            logger.exception("rank %d failed", distributed.rank())
            distributed.fail(f"{type(error).__name__}: {error}")
        raise
    finally:
        restore()
    distributed.stop_watchdog()
    return 0


def _prog() -> str:
    """The command's name for its one line: an original script's file name, else ``kdu-train``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name.endswith(".py") and name != "__main__.py" else "kdu-train"


def main(argv: Optional[Sequence[str]] = None, recipe: Optional[str] = None, prog: Optional[str] = None,
         description: str = "") -> int:
    """Entry point: resolve the configuration, run; a configuration error exits with status 2 and one line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    entry = _entry_point()
    if recipe and entry[0] == "--module":  # the package's ``train`` needs the recipe a wrapper script implies
        entry += ["--recipe", recipe]
    argv, status = relaunch(argv, entry)
    if status is not None:
        return status
    return run_entry(lambda: parse_config(argv, recipe=recipe, prog=prog, description=description))

