"""Run a recipe: what ``kdu-train --recipe NAME ...`` (or ``python -m knowledge_distill_util train ...``) does
once its command line is parsed (the entry point, exit statuses and launcher: :mod:`knowledge_distill_util.cli.train`).

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
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import oneflow as flow

from .._device import device_type, is_cpu, share_cpu_cores
from .._io import atomic_write_text
from ..engine import distributed
from ..engine.lock import lock_directories
from ..models.artifacts import MODEL_CONFIG, WEIGHTS, load_trained, save_trained
from ..config.schema import ConfigError, TrainConfig, check_recipe_name, save_config
from ..engine.evaluate import evaluate_model, write_results
from ..compat.log import OriginalSummary
from ..compat.models import (ORIGINAL_OPTIMIZER, BestSnapshot, best_metric, epoch_end_hook, original_training,
                             snapshot_directory, write_results_files, write_snapshots)
from .plan import Plan, evaluation_source, prepare
from .recipes import RECIPES
from .run_dir import RUN_CONFIG, check_resumed_data, check_run_directory, write_run_config
from .teacher_cache import LOGITS_FILE, STUDENT_LOGITS_FILE, cache_path, combined_teacher_logits, teacher_logits
from .trainer import LossStep, TrainerConfig, train_stage
from .validation import check_writable_directory, validate_config

__all__ = ["run", "execute", "check_run_directory", "seed_everything", "teacher_logits", "PROGRESS_FILE", "RUN_CONFIG",
           "LOGITS_FILE", "STUDENT_LOGITS_FILE", "cache_path"]

logger = logging.getLogger(__name__)
PROGRESS_FILE = "progress.json"
def seed_everything(seed: int) -> None:
    """Seed OneFlow's default generator, numpy's global one and Python's ``random``."""
    flow.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _meta(plan: Plan, origin: str) -> Dict:
    cfg, spec = plan.cfg, plan.data.spec
    return {"recipe": cfg.recipe, "task_name": spec.name,
            "labels": list(spec.labels) if spec.labels is not None else None,
            "vocab_file": plan.data.vocab_file, "seq_length": cfg.seq_length, "origin": origin}


def _trainer_config(cfg: TrainConfig, num_epochs: float, learning_rate: float) -> TrainerConfig:
    return TrainerConfig(num_epochs=num_epochs, learning_rate=learning_rate, batch_size=cfg.batch_size_per_device,
                         weight_decay=cfg.weight_decay, warmup_proportion=cfg.warmup_proportion,
                         max_steps=cfg.max_steps, checkpoint_every=cfg.checkpoint_every, seed=cfg.seed,
                         resume=cfg.resume, use_graph=cfg.use_graph, reseed_dropout=cfg.reseed_dropout,
                         progress_every=cfg.progress_every,
                         **(ORIGINAL_OPTIMIZER if original_training(cfg) else {}))


def _progress_writer(path: str, stage: str, clock: Callable[[], float] = time.monotonic):  # rank 0 only
    """``progress.json`` after every step: ``stage``, ``step``, ``total``, ``loss`` and ``eta_seconds`` (the
    remaining steps at the rate since this stage's first step here; null until two steps were seen)."""
    first: List[float] = []  # [step, time] of the first call

    def write(step: int, total: int, terms: Dict[str, float]) -> None:
        now = clock()
        if not first:
            first.extend((step, now))
        done = step - first[0]
        eta = round((total - step) * (now - first[1]) / done, 1) if done > 0 else None
        atomic_write_text(path, json.dumps({"stage": stage, "step": step, "total": total, "loss": terms["loss"],
                                            "eta_seconds": eta}))
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
        if plan.teachers:  # several teachers: their weighted average, cached as one array
            cached = combined_teacher_logits(cfg, plan.teachers, plan.data)
        else:
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
        hook = epoch_end_hook(cfg, plan.final_model, plan.data.train, plan.data.dev, plan.data.spec.output_mode,
                              best) if last else None
        result = train_stage(step, plan.data.train, _trainer_config(cfg, stage.num_epochs, stage.learning_rate),
                             work_dir=cfg.result_dir, stage=stage.name,
                             checkpoint_dir=os.path.join(cfg.model_save_dir, "checkpoints"),
                             teacher_logits=cached if uses_cache else None, progress=progress,
                             on_step=_on_step(plan, stage.name, summary),
                             on_epoch_end=hook, cache_teacher_outputs=cfg.cache_teacher_outputs,
                             cache_teacher_dtype=cfg.cache_teacher_dtype, cache_dir=cfg.model_save_dir)
        timings[stage.name] = round(result.seconds, 1)
        logger.info("stage %s: %d steps in %.1f s, last %s; log %s", stage.name, result.steps, result.seconds,
                    {k: round(v, 4) for k, v in result.last_terms.items()}, result.log_path)
        if not last and distributed.is_writer():
            save_trained(stage.export, done_dir, _meta(plan, f"stage {stage.name}"))
    teachers = ", ".join(cfg.teacher_models) if cfg.teacher_models else cfg.teacher_model
    origin = plan.description if not plan.recipe.needs_teacher else f"{cfg.recipe} student of {teachers}"
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
        path = write_results_files(results, cfg, source, "eval")
        if on_train is not None:
            write_results_files(on_train, cfg, source, "train")
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


def run(cfg: TrainConfig, progress: Optional[bool] = None) -> Dict:
    """Check the configuration, seed, prepare (every check first, nothing written), then create, probe and
    lock the output directories, train every stage, save, evaluate; returns the results dict. Raises
    :class:`ConfigError` on bad input (a refused run creates no directory)."""
    own_run = _own_run(cfg)
    if own_run is not None:  # a recipe running itself (tinybert_general, on the Distiller)
        return own_run(cfg)
    if distributed.is_distributed():
        if is_cpu(cfg.device):  # before OneFlow's first operation, which reads it
            logger.debug("processes share the CPU: %s", share_cpu_cores())
        return _run_distributed(cfg, progress)
    plan = _checked_plan(cfg, writer=True)
    locks = _claim_directories(cfg, writer=True)
    try:
        if cfg.do_train:
            write_run_config(cfg, plan.data)
        return execute(plan, progress)
    finally:
        for lock in locks:
            lock.release()


def _own_run(cfg: TrainConfig) -> Optional[Callable[[TrainConfig], Dict]]:
    """The recipe's own ``run`` (:attr:`~.recipes.Recipe.run`), or None for a recipe run by the plan."""
    check_recipe_name(cfg.recipe, RECIPES)
    return RECIPES.get(cfg.recipe).run


def _checked_plan(cfg: TrainConfig, writer: bool) -> Plan:
    """Every check that writes nothing, before anything is created on disk: the values, the run directory
    (``writer`` only: rank 0 owns it), then seed and prepare the data, teacher, student and stages."""
    validate_config(cfg, check_directories=False)
    if writer:
        check_run_directory(cfg)
    seed_everything(cfg.seed)
    plan = prepare(cfg)
    if writer:
        check_resumed_data(cfg, plan.data)
    return plan


def _claim_directories(cfg: TrainConfig, writer: bool) -> List:
    """After every check passed: create and probe the output directories, and (``writer``) lock them and
    check the run directory again under the lock (another run may have started since). Returns the locks."""
    for key in ("model_save_dir", "result_dir"):
        check_writable_directory(key, getattr(cfg, key))
    if not writer:
        return []
    locks = lock_directories(cfg.model_save_dir, cfg.result_dir)
    try:
        check_run_directory(cfg)
    except BaseException:
        for lock in locks:
            lock.release()
        raise
    return locks


def _run_distributed(cfg: TrainConfig, progress: Optional[bool]) -> Dict:
    """:func:`run` on one rank of a multi-process job: every rank checks its configuration and prepares,
    and all agree (one refusal stops every rank, and nothing is created on disk); then rank 0 alone creates,
    locks and checks the directories, and all agree again before the first training step."""
    try:  # KDU_* variables first: the watchdog reads them (each rank says the one sentence)
        distributed.check_environment()
    except ValueError as caught:
        raise ConfigError(str(caught)) from None
    distributed.start_watchdog()
    try:  # before any collective: a wrong node layout aborts the first one in C++
        distributed.check_local_rank()
    except ValueError as caught:
        raise ConfigError(str(caught)) from None
    writer, locks, plan, error = distributed.is_writer(), [], None, None
    try:
        plan = _checked_plan(cfg, writer)
        if cfg.do_train:
            try:  # the rule the trainer applies at its first step (distributed.global_batch), checked before it
                distributed.global_batch(cfg.batch_size_per_device, len(plan.data.train))
            except ValueError as caught:
                raise ConfigError(str(caught)) from None
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
        try:
            locks = _claim_directories(cfg, writer)
            for lock in locks:
                distributed.at_abort(lock.release)
        except ConfigError as caught:
            error = caught
        if not distributed.agree(error is None):
            raise error or ConfigError("rank 0 could not create or lock the output directories (its message names "
                                       "the problem); nothing was trained")
        if cfg.do_train and writer:
            write_run_config(cfg, plan.data)
        return execute(plan, progress)
    finally:
        for lock in locks:
            lock.release()
