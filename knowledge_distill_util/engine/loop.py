"""The training loop of a :class:`~knowledge_distill_util.engine.Distiller` (eager or ``nn.Graph``): the one
loop of the package (every ``kdu-train`` recipe trains through it too).

Per optimizer step: the scheduled weights, the dropout generators reseeded (eager, ``reseed_dropout``),
``accumulation`` batches (each with the step inputs, :class:`~.hooks.StepInputs`) each adding
``loss / accumulation`` to the gradients, clipping (the global norm of the optimizer's gradients), the optimizer
and learning-rate scheduler steps; then a NaN/inf loss stops the run (:class:`~.hooks.NonFiniteLossError`), the
terms are logged (the loss CSV, ``history``, progress), the epoch-end hook runs at the end of each epoch and of
the run, a checkpoint every ``checkpoint_every`` steps and at the end (refused for NaN/inf weights), then
``on_step``, and an evaluation every ``eval_every`` steps and at the end.
"""
import logging
import math
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import oneflow as flow
import oneflow.nn as nn

from .. import schedules
from .batches import flatten, split_batch, unflatten
from .hooks import NonFiniteLossError, non_finite_weight
from .objective import check_class_ids
from .optim import clip_gradients
from .parallel import Ranks
from .progress import ProgressLog
from .seeding import dropout_generators, reseed
from .state import BatchStream, capture_state

__all__ = ["TrainGraph", "make_scheduler", "Loop"]

logger = logging.getLogger(__name__)


class TrainGraph(nn.Graph):
    """One training step compiled with ``nn.Graph``: ``graph(*batch tensors, weights [A, K]) -> terms [A]``.

    ``accumulation`` ``A > 1``: the inputs are ``A`` batches concatenated along dim 0, which OneFlow cuts back
    into ``A`` micro-batches (``config.set_gradient_accumulation_steps``); the update uses the mean gradient,
    as eager accumulation does, and each term comes back with one value per micro-batch.
    ``reads``: the names of teacher reads that come as inputs after the batch's tensors (a teacher-output
    cache: the teacher runs eagerly outside the graph, :meth:`~.objective.DistillStep.cached_reads`).
    """

    def __init__(self, step: nn.Module, optimizer, scheduler, layout, accumulation: int = 1, reads=()):
        super().__init__()
        self.step = step
        self.layout, self.reads = layout, tuple(reads)
        if scheduler is not None:
            self.add_optimizer(optimizer, lr_sch=scheduler)
        else:
            self.add_optimizer(optimizer)
        if accumulation > 1:
            self.config.set_gradient_accumulation_steps(accumulation)

    def build(self, *values):
        cut = len(values) - 1 - len(self.reads)
        batch, weights = unflatten(values[:cut], self.layout), values[-1].reshape(-1)
        if self.reads:
            terms = self.step(batch, weights, dict(zip(self.reads, values[cut:-1])))
        else:
            terms = self.step(batch, weights)
        terms["loss"].backward()
        return tuple(terms.values())


def make_scheduler(optimizer, total: int, warmup: int, kind: str):
    """Linear warm-up over ``warmup`` steps, then constant or linear decay to 0 at ``total`` (None: no scheduler)."""
    if kind == "linear":
        from .optim import make_scheduler as warmup_then_decay
        return warmup_then_decay(optimizer, total, warmup)
    if warmup <= 0:
        return None
    constant = flow.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, total + 1), gamma=1.0)
    return flow.optim.lr_scheduler.WarmupLR(constant, warmup_factor=0.0, warmup_iters=warmup, warmup_method="linear")


class Loop:
    """The steps ``start .. total`` of one :meth:`Distiller.train` call (see the module doc)."""

    def __init__(self, distiller, step: nn.Module, optimizer, total: int, start: int, ranks: Ranks,
                 scheduler="default"):
        self.d, self.step, self.optimizer = distiller, step, optimizer
        self.cfg = distiller.training_config
        self.total, self.start, self.ranks = total, start, ranks
        self.stream: Optional[BatchStream] = None  # set by the caller (after a resume's states are loaded)
        self.scheduler = (make_scheduler(optimizer, total, self.cfg.warmup_steps, self.cfg.lr_schedule)
                          if scheduler == "default" else scheduler)
        self.graph = None
        self.params = [p for p in distiller.parameters() if p.requires_grad]
        reseeding = self.cfg.reseed_dropout and not self.cfg.use_graph
        self.generators = dropout_generators(distiller.student) if reseeding else []
        self.history: Dict[str, list] = {"step": [], "lr": []}
        self.step_inputs = distiller.step_inputs
        self.on_epoch_end = self.on_step = None  # set by the caller
        self.rows = 0  # rows of the last (global) batch, for the progress lines

    def weights(self, step: int) -> flow.Tensor:
        """``[logit weight, hard-label weight, intermediate factor, each logit_terms weight]`` of 0-based ``step``
        (:meth:`~.config.DistillationConfig.weight_schedules`): each weight times its schedule's factor, the product
        rounded once in float32 (as ``float32(w) * float32(f)``); the intermediate matches' factor multiplies each
        match's own weight."""
        table = self.d.distillation_config.weight_schedules()
        weights = np.array([weight for weight, _ in table], dtype=np.float32)
        factors = np.array([getattr(schedules, name)(step, self.total) for _, name in table], dtype=np.float32)
        return flow.tensor(weights * factors, dtype=flow.float32, device=self.d.device)

    def _batch(self, graph: bool = False):
        """The next batch: split, moved, this rank's rows, the step inputs added (tensors under ``nn.Graph``)."""
        batch = split_batch(self.stream.next(), self.cfg.label_key, self.d.device)
        if self.d.teacher_cache is not None:
            self.d.teacher_cache.epoch(self.stream.epoch)
        self.rows = batch.rows()
        batch = self.ranks.shard(batch)
        if self.step_inputs is not None:
            for name, value in self.step_inputs.step_inputs(self._step, self.total).items():
                batch.kwargs[name] = self.ranks.shared(value, self.d.device) if graph else value
        return batch

    def _eager_step(self, weights) -> Dict[str, float]:
        accumulation, sums = self.cfg.gradient_accumulation_steps, {}
        for micro in range(accumulation):
            reseed(self.generators, self.cfg.seed, self._step * accumulation + micro)
            terms = self.step(self._batch(), weights)
            (terms["loss"] / accumulation).backward()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.numpy()) / accumulation
        self.ranks.after_backward(self.params)
        if self.cfg.max_grad_norm is not None:
            clip_gradients(self.optimizer, self.cfg.max_grad_norm)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return self.ranks.values(sums)

    def _graph_batch(self) -> List[flow.Tensor]:
        """The batch's tensors, then (a teacher-output cache) the teacher reads, computed eagerly."""
        batch, reads = self._batch(graph=True), {}
        classes = getattr(self.step, "label_classes", None)
        if classes is not None and batch.labels is not None:
            check_class_ids(batch.labels, classes)  # inside the graph an id out of range would be a NaN loss
        if self.d.teacher_cache is not None:
            batch, reads = self.step.cached_reads(batch)
        values, _ = flatten(batch, self.cfg.label_key)
        metas = [(tuple(v.shape), v.dtype) for v in values]
        if metas != self.graph_metas:
            raise ValueError(f"use_graph=True compiles one batch shape, but batch {self.stream.done} of epoch "
                             f"{self.stream.epoch} has shapes {[m[0] for m in metas]} instead of "
                             f"{[m[0] for m in self.graph_metas]}; give batches of one size (DataLoader("
                             f"drop_last=True)) or train eagerly")
        return list(values) + list(reads.values())

    def _graph_step(self, weights) -> Dict[str, float]:
        accumulation = self.cfg.gradient_accumulation_steps
        micro = [self._graph_batch() for _ in range(accumulation)]
        values = micro[0] if accumulation == 1 else [flow.cat(parts, dim=0) for parts in zip(*micro)]
        values = [self.ranks.rows(v) for v in values]
        outputs = self.graph(*values, self.ranks.shared(flow.stack([weights] * accumulation), self.d.device))
        if self.scheduler is not None:
            self.scheduler.step()  # the graph keeps its own schedule; this keeps the logged lr right
        return dict(zip(self.term_names, (float(self.ranks.local(t).mean().numpy()) for t in outputs)))

    def build_graph(self, layout, term_names, metas) -> None:
        """Compile the step (``use_graph``). Clipping goes into the optimizer's parameter groups, where
        ``nn.Graph`` reads it (it clips each group's norm; eager mode clips the norm of all parameters)."""
        self.term_names, self.graph_metas = list(term_names), list(metas)
        if self.cfg.max_grad_norm is not None:
            for group in self.optimizer.param_groups:
                group["clip_grad_max_norm"] = self.cfg.max_grad_norm
                group["clip_grad_norm_type"] = 2.0
                group._enable_clip_grad = True  # OneFlow 0.9 sets this only in the group's constructor
        self.optimizer.zero_grad(set_to_none=True)
        cache = self.d.teacher_cache
        self.graph = TrainGraph(self.step, self.optimizer, self.scheduler, layout,
                                self.cfg.gradient_accumulation_steps, () if cache is None else cache.names)

    def fast_forward(self, start: int) -> None:
        """Resume: replay the scheduler to ``start`` (cheap, exact; under ``nn.Graph`` it sets the logged lr)."""
        if self.scheduler is not None:
            for _ in range(start):
                self.scheduler.step()

    def _record(self, step: int, lr: float, terms: Dict[str, float]) -> None:
        self.history["step"].append(step)
        self.history["lr"].append(lr)
        for name, value in terms.items():
            self.history.setdefault(name, []).append(value)

    def _prefix(self) -> str:
        return "" if self.cfg.stage is None else f"stage {self.cfg.stage}: "

    def _check_loss(self, step: int, lr: float, terms: Dict[str, float]) -> None:
        if not math.isfinite(terms["loss"]):
            raise NonFiniteLossError(f"{self._prefix()}the loss became {terms['loss']} at step {step}; lower the "
                                     f"learning rate (now {lr:.3g}) or check the inputs", step, terms, lr)

    def _check_weights(self, step: int, lr: float) -> None:
        """A NaN/inf weight (the last update may have made one after a finite loss) is never checkpointed."""
        name = non_finite_weight(self.d._trainable.named_parameters())
        if name is not None:
            raise NonFiniteLossError(f"{self._prefix()}the weight {name} became NaN or infinite at step {step}; "
                                     f"this checkpoint was not saved: lower the learning rate (now {lr:.3g}) or check "
                                     f"the inputs", step, {}, lr, weight=name)

    def _epoch_ends(self, step: int) -> bool:
        try:
            per_epoch = len(self.stream.data)
        except TypeError:
            per_epoch = 0
        return step == self.total or (per_epoch > 0 and self.stream.done == per_epoch)

    def run(self, log, checkpoint, evaluate) -> None:
        """Train; ``log(step, epoch, lr, seconds, terms)``, ``checkpoint(step, state)``, ``evaluate(step)``."""
        began = time.time()
        bar = _progress(self.cfg, self.start, self.total) if self.ranks.writer else None
        every = self.cfg.progress_every if self.ranks.writer and bar is None else 0
        lines = ProgressLog(self.cfg.stage or "distil", self.total, self.start, 0, every or 0)
        try:
            for self._step in range(self.start, self.total):
                lr = self.optimizer.param_groups[0]["lr"]
                weights = self.weights(self._step)
                terms = self._graph_step(weights) if self.graph is not None else self._eager_step(weights)
                step = self._step + 1
                self._check_loss(step, lr, terms)
                self._record(step, lr, terms)
                log(step, self.stream.epoch, lr, time.time() - began, terms)
                if self.cfg.progress_every is not None:
                    if bar is not None:
                        _report(bar, step, self.total, terms, self.total + 1)  # the bar only
                    lines.batch_size = self.rows * self.cfg.gradient_accumulation_steps
                    lines(step, terms["loss"])
                elif self.ranks.writer:
                    _report(bar, step, self.total, terms, self.cfg.log_every)
                if self.on_epoch_end is not None and self._epoch_ends(step):
                    self.on_epoch_end(self.stream.epoch, step)
                    self.d.student.train()
                if step % self.cfg.checkpoint_every == 0 or step == self.total:
                    if self.ranks.writer:
                        self._check_weights(step, lr)
                    checkpoint(step, capture_state(self.stream.epoch, self.stream.done, self.graph is not None))
                if self.on_step is not None and self.ranks.writer:
                    self.on_step(step, self.total, terms)
                if (self.cfg.eval_every and step % self.cfg.eval_every == 0) or step == self.total:
                    evaluate(step)
        finally:
            if bar is not None:
                bar.close()


def _progress(cfg, start: int, total: int):
    if not (cfg.progress and sys.stderr.isatty()):
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=start, desc=cfg.stage or "distil", dynamic_ncols=True, mininterval=1.0)


def _report(bar, step: int, total: int, terms: Dict[str, float], every: int) -> None:
    if bar is not None:
        bar.update(1)
        if step % every == 0 or step == total:
            bar.set_postfix(loss=f"{terms['loss']:.4f}", refresh=False)
    elif step % every == 0 or step == total:
        logger.info("step %d/%d: %s", step, total, ", ".join(f"{k} {v:.4f}" for k, v in terms.items()))
