"""One :meth:`Distiller.train` run on its output directory: lock, resume, log, checkpoint, plot.

``output_dir`` holds ``.kdu.lock`` (one writer, :mod:`knowledge_distill_util.engine.lock`; not with
``TrainingConfig(lock=False)``, when the caller holds it), the checkpoints (``checkpoints/``, or
``TrainingConfig.checkpoint_dir``; :mod:`knowledge_distill_util.engine.checkpoint`), the loss log
``losses.csv`` (one row per step) and ``losses.png`` (``<stage>_losses.*`` with ``TrainingConfig.stage``).
A run without ``resume=True`` refuses a directory that already holds checkpoints (nothing is deleted), or
with ``overwrite=True`` deletes them. A resumed run starts from the newest readable checkpoint (an unreadable
newer one is skipped with a warning and kept); it also resumes a checkpoint of the recipes' earlier trainer
(the student's weights without the ``student.`` prefix, no data position: derived from the step).
"""
import contextlib
import logging
import os
import shutil
from typing import Any, Callable, Dict, List, Optional

from .._errors import ConfigError
from .._write_errors import nearest_existing
from .loop import Loop
from .state import BatchStream

__all__ = ["run_training", "check_output_paths"]

logger = logging.getLogger(__name__)


def check_output_paths(cfg) -> None:
    """``cfg.output_dir`` and its checkpoint directory are directories or can be made (the nearest existing path
    above each is a writable directory); ``ValueError`` naming the field and the path otherwise."""
    for name, path in (("output_dir", cfg.output_dir), ("checkpoint_dir", cfg.checkpoint_root)):
        existing = nearest_existing(path)
        if not os.path.isdir(existing):
            raise ValueError(f"TrainingConfig.{name} {path!r} cannot be a directory: {existing!r} is a file; choose "
                             f"another {name}")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"TrainingConfig.{name} {path!r} cannot be written: {existing!r} is not writable; choose "
                             f"another {name}")


def _refuse_or_clear(root: str, overwrite: bool, writer: bool) -> None:
    """A run that does not resume: refuse the checkpoints of an earlier run, or delete them (``overwrite``)."""
    from .checkpoint import latest_checkpoint
    if overwrite:
        if writer and os.path.isdir(root):
            shutil.rmtree(root)
        return
    if latest_checkpoint(root) is not None:
        raise ConfigError(f"{os.path.dirname(root)} already holds the checkpoints of an earlier run; continue it "
                          f"with TrainingConfig(resume=True) or choose another output_dir (nothing was deleted)")


def _resume_point(root: str, use_graph: bool):
    """``(path, model_state, optimizer_state, state)`` of the newest readable checkpoint, or None."""
    from .checkpoint import resume_point
    point = resume_point(root, use_graph)
    if point is None:
        logger.info("no checkpoint under %s: training from the start", root)
        return None
    return point.path, point.model_state, point.optimizer_state, point.state


def _position(state: Dict, data) -> Dict:
    """``state`` with its data position; a checkpoint of the recipes' earlier trainer has none: the step
    and the batches per epoch (``len(data)``) give it."""
    if "epoch" in state:
        return state
    per_epoch = len(data)
    return dict(state, epoch=int(state["step"]) // per_epoch, done=int(state["step"]) % per_epoch)


def _mismatch(error: BaseException, most: int = 2) -> str:
    """``error`` (OneFlow's ``load_state_dict`` lists one problem per line) as one line: its first ``most``
    problems joined by "; ", then how many more, each list of missing or unexpected keys cut to its first ``most``
    keys and their count; a ``KeyError`` names its missing key.

    >>> _mismatch(RuntimeError('Error(s) in loading state_dict:\\n\\tMissing key(s) in state_dict: "a", "b", "c".'))
    'Missing key(s) in state_dict: "a", "b" and 1 more'
    """
    if isinstance(error, KeyError):
        return f"no {error.args[0]!r} in the saved state" if error.args else "a key is missing"
    lines = [_cut_keys(line.strip().rstrip("."), most) for line in str(error).splitlines() if line.strip()]
    problems = [line for line in lines if not line.startswith("Error(s) in loading")] or lines
    more = f"; {len(problems) - most} more" if len(problems) > most else ""
    return "; ".join(problems[:most]) + more


def _cut_keys(line: str, most: int) -> str:
    """A ``Missing key(s)`` / ``Unexpected key(s)`` line of OneFlow's with its first ``most`` keys and how many more."""
    head, colon, keys = line.partition(": ")
    if not colon or not head.endswith("key(s) in state_dict"):
        return line
    names = keys.split(", ")
    return head + colon + ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _check_optimizer_options(optimizer, saved: Dict) -> None:
    """The saved parameter groups have this optimizer's options (OneFlow 0.9 loads another optimizer's groups
    without a word and fails at its next step); ``ValueError`` naming the options that differ otherwise."""
    groups = saved.get("param_groups", []) if isinstance(saved, dict) else []
    for index, (group, current) in enumerate(zip(groups, optimizer.param_groups)):
        have, want = set(group.get("_options", {})), set(current._options)
        if have != want:
            extra, missing = sorted(have - want), sorted(want - have)
            parts = ([f"options {', '.join(extra)} that this one lacks"] if extra else []) + (
                [f"no {', '.join(missing)}"] if missing else [])
            raise ValueError(f"parameter group {index} was saved by another optimizer, with {' and '.join(parts)}")


def _load(distiller, loop: Loop, ranks, point) -> None:
    path, model_state, optimizer_state, state = point
    target = distiller._trainable
    if not distiller.matches and not any(key.startswith("student.") for key in model_state):
        target = distiller.student  # the recipes' earlier checkpoints: the student's own state_dict
    try:
        target.load_state_dict(ranks.loadable(model_state))
    except (KeyError, RuntimeError, ValueError) as error:
        raise ConfigError(f"checkpoint {path} does not fit this student and its projections ({_mismatch(error)}); "
                          f"resume with the same models and intermediate_matches") from None
    try:
        if loop.graph is not None:
            loop.graph.load_state_dict(ranks.loadable(optimizer_state))  # the graph's own state: moments, its step
        else:
            _check_optimizer_options(loop.optimizer, optimizer_state)
            loop.optimizer.load_state_dict(optimizer_state)
    except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as error:
        raise ConfigError(f"checkpoint {path} holds an optimizer state that does not fit this "
                          f"{type(loop.optimizer).__name__} ({_mismatch(error)}); resume with the optimizer and "
                          f"parameter groups the run started with") from None
    provider = distiller.step_inputs
    if provider is not None and "step_inputs_rng" in state and hasattr(provider, "set_rng_state"):
        provider.set_rng_state(state["step_inputs_rng"])
    if loop.on_epoch_end is not None:
        loop.on_epoch_end.load_state(state.get("epoch_end"))
    loop.fast_forward(int(state["step"]))


def _extra_state(distiller, loop: Loop) -> Dict:
    """What a checkpoint holds besides the generators: the step inputs' generator, the epoch-end hook's state."""
    extra = {}
    provider = distiller.step_inputs
    if provider is not None and hasattr(provider, "rng_state"):
        extra["step_inputs_rng"] = provider.rng_state()
    if loop.on_epoch_end is not None:
        extra["epoch_end"] = loop.on_epoch_end.state()
    return extra


def run_training(distiller, ranks, step, optimizer, data, total: int, layout, names: List[str],
                 evaluate: Callable[[], Optional[Dict[str, float]]], hooks: Optional[Dict[str, Any]] = None
                 ) -> Dict[str, Any]:
    """Lock ``output_dir``, resume if asked, run the :class:`~.loop.Loop`, write the plot; the history.
    Only the writer (rank 0 of a data-parallel run, :mod:`.parallel`) locks and writes. ``hooks``:
    ``scheduler``, ``on_step``, ``on_epoch_end`` of :meth:`Distiller.train`."""
    from .checkpoint import save_checkpoint
    from .lock import DirectoryLock
    from .loss_log import LossLog, plot_losses

    cfg, hooks = distiller.training_config, hooks or {}
    root = cfg.checkpoint_root
    locked = ranks.writer and cfg.lock
    with DirectoryLock(cfg.output_dir) if locked else contextlib.nullcontext():
        point = _resume_point(root, cfg.use_graph) if cfg.resume else _refuse_or_clear(root, cfg.overwrite,
                                                                                        ranks.writer)
        if point:
            point = point[:3] + (_position(point[3], data),)
        start = int(point[3]["step"]) if point else 0
        if start > total:
            raise ConfigError(f"the newest checkpoint, {point[0]}, is at step {start}, past this run's last step "
                              f"{total}; resume with at least {start} steps (max_steps or num_epochs) or train in "
                              f"another output_dir")
        resume = (point[3]["epoch"], point[3]["done"], point[3]) if point else None
        loop = Loop(distiller, step, optimizer, total, start, ranks, hooks.get("scheduler", "default"))
        loop.on_step, loop.on_epoch_end = hooks.get("on_step"), hooks.get("on_epoch_end")
        if cfg.use_graph:
            # with a teacher-output cache the teachers run eagerly on this rank's rows: only the trained modules
            ranks.place(step if distiller.teacher_cache is None else distiller._trainable, distiller.device, optimizer)
            loop.build_graph(layout[0], names, layout[1])
        if point:
            _load(distiller, loop, ranks, point)
            logger.info("%sresumed from %s at step %d/%d", loop._prefix(), point[0], start, total)
        loop.stream = BatchStream(data, cfg.seed, resume, cfg.seed_epochs)
        os.makedirs(cfg.output_dir, exist_ok=True)
        log = LossLog(os.path.join(cfg.output_dir, f"{cfg.log_name}.csv") if ranks.writer else os.devnull, names,
                      start if point else None)
        history: Dict[str, Any] = {"eval": []}

        def checkpoint(at: int, state: Dict) -> None:
            if not ranks.writer:
                return
            optimizer_state = loop.graph.state_dict() if loop.graph is not None else optimizer.state_dict()
            log.sync()  # the log holds every row up to the checkpoint before it exists
            save_checkpoint(root, at, ranks.saved(distiller.state_dict()), ranks.saved(optimizer_state),
                            dict(state, **_extra_state(distiller, loop)))

        def evaluated(at: int) -> None:
            metrics = evaluate()
            if metrics is not None:
                history["eval"].append(dict(step=at, **metrics))
                logger.info("step %d: %s", at, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

        distiller.started = True  # every check passed: what fails from here on fails in training
        try:
            loop.run(log.write, checkpoint, evaluated)
        finally:
            log.close()
        if ranks.writer:
            plot_losses(log.path, os.path.join(cfg.output_dir, f"{cfg.log_name}.png"),
                        title=cfg.stage or "distillation")
    history.update(loop.history)
    distiller.last_run = {"log_path": log.path, "resumed_from": start, "total": total}
    return history
