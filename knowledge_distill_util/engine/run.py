"""One :meth:`Distiller.train` run on its output directory: lock, resume, log, checkpoint, plot.

``output_dir`` holds ``.kdu.lock`` (one writer, :mod:`knowledge_distill_util.engine.lock`), ``checkpoints/``
(:mod:`knowledge_distill_util.engine.checkpoint`), ``losses.csv`` (one row per step) and ``losses.png``.
A run without ``resume=True`` refuses a directory that already holds checkpoints (nothing is deleted).
"""
import contextlib
import logging
import os
from typing import Any, Callable, Dict, List, Optional

from .loop import Loop
from .state import BatchStream

__all__ = ["run_training"]

logger = logging.getLogger(__name__)


def _resume_point(root: str, resume: bool, use_graph: bool):
    """``(path, model_state, optimizer_state, state)`` of the newest checkpoint to resume from, or None."""
    from .checkpoint import latest_checkpoint, load_checkpoint
    path = latest_checkpoint(root)
    if path is None:
        if resume:
            logger.info("no checkpoint under %s: training from the start", root)
        return None
    if not resume:
        raise ValueError(f"{os.path.dirname(root)} already holds the checkpoints of an earlier run; continue it with "
                         f"TrainingConfig(resume=True) or choose another output_dir (nothing was deleted)")
    try:
        model_state, optimizer_state, state = load_checkpoint(path)
    except Exception as error:  # noqa: BLE001 - any unreadable file: one sentence, nothing deleted
        raise ValueError(f"checkpoint {path} is unreadable ({error}); nothing was deleted: restore it, or move "
                         f"{os.path.dirname(root)} away and train anew") from None
    if bool(state.get("use_graph")) != use_graph:
        raise ValueError(f"checkpoint {path} was written with use_graph={state.get('use_graph')} but this run has "
                         f"use_graph={use_graph}; resume with the same setting")
    return path, model_state, optimizer_state, state


def _load(distiller, loop: Loop, point) -> None:
    path, model_state, optimizer_state, state = point
    try:
        distiller._trainable.load_state_dict(model_state)
    except (KeyError, RuntimeError, ValueError) as error:
        raise ValueError(f"checkpoint {path} does not fit this student and its projections ({error}); resume with "
                         f"the same models and intermediate_matches") from None
    if loop.graph is not None:
        loop.graph.load_state_dict(optimizer_state)  # the graph's own state: moments, its schedule's step
    else:
        loop.optimizer.load_state_dict(optimizer_state)
    loop.fast_forward(int(state["step"]))


def run_training(distiller, ranks, step, optimizer, data, total: int, layout, names: List[str],
                 evaluate: Callable[[], Optional[Dict[str, float]]]) -> Dict[str, Any]:
    """Lock ``output_dir``, resume if asked, run the :class:`~.loop.Loop`, write the plot; the history.
    Only the writer (rank 0 of a data-parallel run, :mod:`.parallel`) locks and writes."""
    from .checkpoint import save_checkpoint
    from .lock import DirectoryLock
    from .loss_log import LossLog, plot_losses

    cfg = distiller.training_config
    root = os.path.join(cfg.output_dir, "checkpoints")
    with DirectoryLock(cfg.output_dir) if ranks.writer else contextlib.nullcontext():
        point = _resume_point(root, cfg.resume, cfg.use_graph)
        start = int(point[3]["step"]) if point else 0
        resume = (point[3]["epoch"], point[3]["done"], point[3]) if point else None
        loop = Loop(distiller, step, optimizer, total, start, ranks)
        if cfg.use_graph:
            loop.build_graph(layout[0], names, layout[1])
        if point:
            _load(distiller, loop, point)
            logger.info("resumed from %s at step %d/%d", point[0], start, total)
        loop.stream = BatchStream(data, cfg.seed, resume)
        log = LossLog(os.path.join(cfg.output_dir, "losses.csv") if ranks.writer else os.devnull, names,
                      start if point else None)
        history: Dict[str, Any] = {"eval": []}

        def checkpoint(at: int, state: Dict) -> None:
            if not ranks.writer:
                return
            optimizer_state = loop.graph.state_dict() if loop.graph is not None else optimizer.state_dict()
            save_checkpoint(root, at, distiller.state_dict(), optimizer_state, state)

        def evaluated(at: int) -> None:
            metrics = evaluate()
            if metrics is not None:
                history["eval"].append(dict(step=at, **metrics))
                logger.info("step %d: %s", at, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

        try:
            loop.run(log.write, checkpoint, evaluated)
        finally:
            log.close()
        if ranks.writer:
            plot_losses(log.path, os.path.join(cfg.output_dir, "losses.png"), title="distillation")
    history.update(loop.history)
    return history
