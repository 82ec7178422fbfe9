"""The training loop shared by every recipe: the teacher frozen under ``no_grad``, AdamW with warm-up and
decay (:mod:`knowledge_distill_util.engine.optim`), progress (a tqdm bar on a terminal, else a log line
every ``progress_every`` seconds: :class:`ProgressLog`), per-term losses logged each step
(:mod:`knowledge_distill_util.engine.loss_log`), atomic checkpoints with exact resume
(:mod:`knowledge_distill_util.engine.checkpoint`), eager or ``nn.Graph``.

Data order: epoch ``e`` visits the training rows in ``np.random.default_rng(seed + e).permutation(N)``
order, in batches of ``batch_size``; a last short batch is filled up with the epoch's first rows so
that every batch has the same shape (``nn.Graph`` compiles one shape). The order depends only on the
seed and the step, so a resumed run sees exactly the batches the uninterrupted run would have seen.
"""
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Protocol, Tuple, runtime_checkable

import numpy as np
import oneflow as flow
import oneflow.nn as nn

from ..engine.checkpoint import Checkpointer
from ..engine.distributed import DataParallel
from ..engine.loss_log import LossLog, plot_losses
from ..engine.optim import clip_gradients, make_optimizer, make_scheduler
from ..engine.seeding import dropout_generators, reseed
from .config import ConfigError
from .objectives import Objective, ScheduledArgs, schedule_factors, uses_weight_schedules

__all__ = ["StepInputs", "EpochEnd", "TrainerConfig", "LossStep", "TrainGraph", "StageResult", "ProgressLog",
           "train_stage", "batch_indices", "model_device", "NonFiniteLossError"]

logger = logging.getLogger(__name__)
BATCH_KEYS = ("input_ids", "input_mask", "segment_ids", "labels")


@runtime_checkable
class StepInputs(Protocol):
    """A model that needs extra forward inputs drawn at every training step (BERT-of-Theseus's coins).

    ``step_input_names`` names them; ``step_inputs()`` draws them as ``{name: numpy array}``, passed to the
    model's forward as keywords: the arrays themselves in eager mode, tensors under ``nn.Graph``.
    ``rng_state()`` / ``set_rng_state()`` save and restore the generator they are drawn from, for an
    exact resume.
    """

    step_input_names: Tuple[str, ...]

    def step_inputs(self) -> Dict[str, np.ndarray]: ...

    def rng_state(self): ...

    def set_rng_state(self, state) -> None: ...


@runtime_checkable
class EpochEnd(Protocol):
    """Called by :func:`train_stage` on every rank after the last step of each epoch (and after the last step
    of the stage when it ends inside an epoch), before that step's checkpoint: ``hook(epoch, step)``
    (``epoch`` counts from 0; the model is put back in train mode afterwards). ``state()`` is stored in the
    checkpoints (JSON) and handed back to ``load_state`` when a run resumes."""

    def __call__(self, epoch: int, step: int) -> None: ...

    def state(self) -> Dict: ...

    def load_state(self, state: Optional[Dict]) -> None: ...


@dataclass(frozen=True)
class TrainerConfig:
    """The settings of one training stage."""

    num_epochs: float
    learning_rate: float
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_proportion: float = 0.1
    max_steps: int = 0
    checkpoint_every: int = 100
    seed: int = 0
    resume: bool = False
    use_graph: bool = False
    reseed_dropout: bool = False
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 0.0  # > 0: clip the gradients at this global L2 norm before each update
    progress_every: float = 30.0


def format_duration(seconds: float) -> str:
    """``seconds`` as ``1h02m``, ``3m12s`` or ``45s``."""
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressLog:
    """The progress of a stage as one INFO log line every ``every`` seconds (0: never), for logs and CI
    where no tqdm bar is drawn: ``stage kd: step 120/675 (18%), loss 0.4123, 52.3 samples/s, ETA 3m12s``.

    Samples/s = (steps since ``start``) x ``batch_size`` / seconds since construction; ETA = the remaining
    steps at that rate. Called after each step with the loss already read for the loss log (no device sync).
    """

    def __init__(self, stage: str, total: int, start: int, batch_size: int, every: float, clock=time.monotonic):
        self.stage, self.total, self.start, self.batch_size, self.every = stage, total, start, batch_size, every
        self.clock = clock
        self.began = self.last = clock()

    def __call__(self, step: int, loss: float) -> None:
        now = self.clock()
        if self.every <= 0 or now - self.last < self.every:
            return
        self.last = now
        logger.info("%s", self.line(step, loss, now))

    def line(self, step: int, loss: float, now: float) -> str:
        elapsed, done = max(now - self.began, 1e-9), step - self.start
        rate = done * self.batch_size / elapsed
        eta = format_duration((self.total - step) * elapsed / done) if done > 0 else "?"
        return (f"stage {self.stage}: step {step}/{self.total} ({100 * step // max(self.total, 1)}%), "
                f"loss {loss:.4f}, {rate:.1f} samples/s, ETA {eta}")


def model_device(model: nn.Module) -> flow.device:
    """The device of ``model``'s first parameter."""
    return next(model.parameters()).device


_DETAIL_FLAGS = dict(output_attention_scores=True, output_qkv=True)


def _details(side: str, out) -> Dict:
    """``{side}_logits/_reps/_atts/_scores/_queries/_keys/_values`` of a BERT's :class:`~..models.BertOutput`
    (called with :data:`_DETAIL_FLAGS`): per-layer lists, scores ``[B, h, L, L]``, the others ``[B, L, H]``."""
    return {f"{side}_logits": out.logits, f"{side}_reps": out.reps, f"{side}_atts": out.atts,
            f"{side}_scores": out.attention_scores, f"{side}_queries": out.query, f"{side}_keys": out.key,
            f"{side}_values": out.value}


class LossStep(nn.Module):
    """``student`` (+ frozen ``teacher``) + an objective: ``forward(batch tensors) -> tuple of loss terms``.

    ``forward(input_ids, input_mask, segment_ids, labels, *extras)``: ``extras`` are the tensors named in
    ``extra_inputs``: ``"teacher_logits"`` (cached logits replacing the teacher's forward pass) and the
    model's step inputs (:class:`StepInputs`). The terms come in the order of ``objective.terms``
    (``"loss"``, the total, first). The teacher must be in eval mode: :func:`train_stage` puts it there.
    """

    def __init__(self, student: nn.Module, teacher: Optional[nn.Module], objective: Objective, args,
                 extra_inputs: Tuple[str, ...] = ()):
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.objective = objective
        self.args = args
        self.extra_inputs = tuple(extra_inputs)
        #: a weight schedule is not constant: the trainer feeds ``schedule_factors`` at every step
        self.scheduled = uses_weight_schedules(args)
        uses_cache = "teacher_logits" in self.extra_inputs and objective.can_cache_teacher_logits
        if objective.teacher_outputs and teacher is None and not uses_cache:
            raise ValueError(f"objective {objective.name!r} reads the teacher's {objective.teacher_outputs}: "
                             f"give a teacher")

    def forward(self, input_ids, input_mask, segment_ids, labels, *extras):
        named = dict(zip(self.extra_inputs, extras))
        teacher_logits = named.pop("teacher_logits", None)
        factors = named.pop("schedule_factors", None)
        args = self.args if factors is None else ScheduledArgs(self.args, factors)
        if self.objective.reads_attention_details:  # MiniLM: scores and values too, by name
            return self._terms(dict(_details("student", self.student(input_ids, input_mask, segment_ids,
                                                                      **named, **_DETAIL_FLAGS)),
                                    labels=labels, input_mask=input_mask), input_ids, input_mask, segment_ids, args)
        out = self.student(input_ids, input_mask, segment_ids, **named)
        if isinstance(out, (tuple, list)):
            tensors = dict(student_logits=out[0], student_reps=out[1], student_atts=out[2])
        else:
            tensors = dict(student_logits=out)
        tensors.update(labels=labels, input_mask=input_mask)
        if self.objective.teacher_outputs:
            if teacher_logits is not None and self.objective.can_cache_teacher_logits:
                tensors["teacher_logits"] = teacher_logits
            else:
                with flow.no_grad():
                    t_logits, t_reps, t_atts = self.teacher(input_ids, input_mask, segment_ids)
                tensors.update(teacher_logits=t_logits, teacher_reps=t_reps, teacher_atts=t_atts)
        terms = self.objective(args, **tensors)
        return tuple(terms[name] for name in self.objective.terms)

    def _terms(self, tensors, input_ids, input_mask, segment_ids, args):
        """The loss terms of an objective reading attention details: the teacher (if read) is called
        with the same flags as the student; an objective reading ``student_model`` (the custom recipe's
        matches and their projections) gets the trained module."""
        if self.objective.teacher_outputs:
            with flow.no_grad():
                tensors.update(_details("teacher", self.teacher(input_ids, input_mask, segment_ids,
                                                                **_DETAIL_FLAGS)))
        tensors["student_model"] = self.student
        terms = self.objective(args, **tensors)
        return tuple(terms[name] for name in self.objective.terms)


class TrainGraph(nn.Graph):
    """One training step of a :class:`LossStep` compiled with ``nn.Graph``.

    The step module is a graph attribute (so its parameters are updated) and the optimizer is added
    with its scheduler; call ``optimizer.zero_grad(set_to_none=True)`` before the first step (a
    parameter holding an eager ``.grad`` would silently never be updated by the graph).
    """

    def __init__(self, step: LossStep, optimizer, scheduler):
        super().__init__()
        self.step = step
        self.add_optimizer(optimizer, lr_sch=scheduler)

    def build(self, *inputs):
        terms = self.step(*inputs)
        terms[0].backward()
        return terms


def batch_indices(num_rows: int, batch_size: int, seed: int, epoch: int) -> List[np.ndarray]:
    """The row indices of every batch of ``epoch`` (see the module doc), each of ``min(B, N)`` rows.

    >>> [b.tolist() for b in batch_indices(5, 2, seed=0, epoch=0)]
    [[2, 4], [3, 0], [1, 2]]
    """
    order = np.random.default_rng(seed + epoch).permutation(num_rows)
    size = min(batch_size, num_rows)
    batches = []
    for start in range(0, num_rows, size):
        index = order[start:start + size]
        if len(index) < size:
            index = np.concatenate([index, order[:size - len(index)]])
        batches.append(index)
    return batches


@dataclass
class StageResult:
    """What :func:`train_stage` did: steps run, wall time, the loss log and plot, last terms."""

    steps: int
    seconds: float
    log_path: str
    plot_path: Optional[str]
    last_terms: Dict[str, float] = field(default_factory=dict)
    resumed_from: int = 0


class NonFiniteLossError(ConfigError):
    """The loss (or, at a checkpoint, a weight) became NaN or infinite: training stops before anything of
    it is saved (the CLI exits 2 with the message)."""


def _non_finite_message(stage: str, step: int, terms, values, learning_rate: float) -> str:
    listed = ", ".join(f"{name}={value:.6g}" for name, value in zip(terms, values))
    return (f"stage {stage}: the loss became {values[0]} at step {step} ({listed}); training stopped and nothing of "
            f"it was saved (earlier checkpoints and models are kept): lower --learning_rate (now "
            f"{learning_rate:g}) or check the data")


def _check_finite_weights(student: nn.Module, stage: str, step: int, learning_rate: float) -> None:
    """Refuse to checkpoint NaN/inf weights (the last update may have made them so after a finite loss);
    one reduction per checkpoint."""
    with flow.no_grad():
        named = [(name, param.to_local() if param.is_global else param) for name, param in student.named_parameters()]
        finite = flow.stack([flow.isfinite(param).all() for _, param in named]).numpy()  # one sync
    if not finite.all():
        name = named[int(np.argmin(finite))][0]
        raise NonFiniteLossError(
            f"stage {stage}: the weight {name} became NaN or infinite at step {step}; training stopped and this "
            f"checkpoint was not saved (earlier checkpoints and models are kept): lower --learning_rate (now "
            f"{learning_rate:g}) or check the data")


def _total_steps(per_epoch: int, tcfg: TrainerConfig) -> int:
    total = max(1, int(round(per_epoch * tcfg.num_epochs)))
    return min(total, tcfg.max_steps) if tcfg.max_steps and tcfg.max_steps > 0 else total


def train_stage(
    step: LossStep,
    features,
    tcfg: TrainerConfig,
    *,
    work_dir: str,
    stage: str,
    checkpoint_dir: str,
    teacher_logits: Optional[np.ndarray] = None,
    progress: bool = True,
    on_step: Optional[Callable[[int, int, Dict[str, float]], None]] = None,
    on_epoch_end: Optional[EpochEnd] = None,
) -> StageResult:
    """Train ``step.student`` on ``features`` (a ``data.Features``) with ``step``'s objective.

    Writes ``work_dir/<stage>_losses.csv`` (one row per step) and ``.png``, and checkpoints under
    ``checkpoint_dir/<stage>/``. ``teacher_logits`` (``[N, C]``, row-aligned with ``features``) replaces the
    teacher's forward pass for objectives that read only its logits. ``on_step(step, total, terms)`` is
    called after every step (and after its checkpoint, if any). ``on_epoch_end``: an :class:`EpochEnd` hook
    (called on every rank; its state is checkpointed).
    """
    from tqdm import tqdm

    student, device = step.student, model_device(step.student)
    dp = DataParallel(device, tcfg.use_graph)  # data-parallel under the launcher; the identity in one process
    batch_size = dp.global_batch(tcfg.batch_size, len(features))
    per_epoch = len(batch_indices(len(features), batch_size, tcfg.seed, 0))
    total = _total_steps(per_epoch, tcfg)
    dp.broadcast(student)
    dp.place(step)
    optimizer = make_optimizer(student, tcfg.learning_rate, tcfg.weight_decay, tcfg.adam_epsilon, tcfg.max_grad_norm)
    scheduler = make_scheduler(optimizer, total, int(total * tcfg.warmup_proportion))
    provider = student if isinstance(student, StepInputs) else None
    checkpointer = Checkpointer(os.path.join(checkpoint_dir, stage), student, tcfg.use_graph, provider, on_epoch_end)

    if step.teacher is not None:
        step.teacher.eval()
    student.train()
    cached = None if teacher_logits is None else np.asarray(teacher_logits, dtype=np.float32)
    step.extra_inputs = (("teacher_logits",) if cached is not None else ()) + (
        ("schedule_factors",) if step.scheduled else ()) + (
        tuple(provider.step_input_names) if provider is not None else ())
    graph = None
    if tcfg.use_graph:
        optimizer.zero_grad(set_to_none=True)
        graph = TrainGraph(step, optimizer, scheduler)

    resumed = checkpointer.restore() if tcfg.resume else None
    start = 0
    if resumed is not None:
        student.load_state_dict(dp.loadable(resumed.model_state))
        start = resumed.step
        if graph is not None:
            graph.load_state_dict(dp.loadable(resumed.optimizer_state))  # the graph's own state: moments, train step
        else:
            optimizer.load_state_dict(resumed.optimizer_state)
            for _ in range(start):  # fast-forward the schedule (cheap, exact)
                scheduler.step()
        logger.info("stage %s: resumed from %s at step %d/%d", stage, resumed.path, start, total)
    elif not tcfg.resume and dp.writer:
        checkpointer.clear()

    os.makedirs(work_dir, exist_ok=True)
    log = LossLog(os.path.join(work_dir, f"{stage}_losses.csv") if dp.writer else os.devnull, step.objective.terms,
                  start if resumed is not None else None)
    bar = tqdm(total=total, initial=start, desc=stage, disable=not (progress and dp.writer), dynamic_ncols=True, mininterval=1.0)
    began, last = time.time(), {}
    lines = ProgressLog(stage, total, start, batch_size, tcfg.progress_every if dp.writer and bar.disable else 0)
    generators = dropout_generators(student) if tcfg.reseed_dropout else []
    try:
        global_step, epoch = start, start // per_epoch
        while global_step < total:
            for index in batch_indices(len(features), batch_size, tcfg.seed, epoch)[global_step - epoch * per_epoch:]:
                if global_step >= total:
                    break
                index = dp.shard(index)  # this process's rows of the global batch
                batch = features.as_dict(index)
                inputs = [dp.tensor(batch[k], device) for k in BATCH_KEYS]
                if cached is not None:
                    inputs.append(dp.tensor(cached[index], device))
                if step.scheduled:  # the weight schedules' factors at this step, [constant, growth, decay]
                    inputs.append(dp.tensor(schedule_factors(global_step, total), device, split=False))
                if provider is not None:
                    extras = provider.step_inputs()
                    inputs.extend(dp.tensor(extras[k], device, split=False) if graph is not None else extras[k]
                                  for k in provider.step_input_names)
                lr = optimizer.param_groups[0]["lr"]
                reseed(generators, tcfg.seed, global_step)
                values = _run_step(step, graph, optimizer, scheduler, inputs, dp, tcfg.max_grad_norm)
                if not math.isfinite(values[0]):  # the scalar the log reads anyway: no extra sync
                    raise NonFiniteLossError(_non_finite_message(stage, global_step + 1, step.objective.terms,
                                                                 values, tcfg.learning_rate))
                global_step += 1
                last = dict(zip(step.objective.terms, values))
                log.write(global_step, epoch, lr, time.time() - began, last)
                bar.update(1)
                bar.set_postfix(loss=f"{values[0]:.4f}", refresh=False)
                lines(global_step, values[0])
                if on_epoch_end is not None and (global_step % per_epoch == 0 or global_step == total):
                    on_epoch_end(epoch, global_step)
                    student.train()
                if dp.writer and (global_step % max(1, tcfg.checkpoint_every) == 0 or global_step == total):
                    _check_finite_weights(student, stage, global_step, tcfg.learning_rate)
                    log.sync()  # the log holds every row up to the checkpoint before it exists
                    checkpointer.save(global_step, optimizer, graph)
                if on_step is not None and dp.writer:
                    on_step(global_step, total, last)
            epoch += 1
    finally:
        bar.close()
        log.close()
    png = plot_losses(log.path, os.path.join(work_dir, f"{stage}_losses.png"), title=stage) if dp.writer else None
    dp.unplace(step)
    student.eval()
    return StageResult(steps=total, seconds=time.time() - began, log_path=log.path, plot_path=png,
                       last_terms=last, resumed_from=start)


def _run_step(step: LossStep, graph, optimizer, scheduler, inputs, dp: Optional[DataParallel] = None,
              max_grad_norm: float = 0.0) -> List[float]:
    """One optimisation step (graph or eager); the loss terms as floats (averaged over the ranks of ``dp``).
    ``max_grad_norm > 0``: the eager step clips the (reduced) gradients at that global norm first."""
    if graph is not None:
        terms = graph(*inputs)
        scheduler.step()  # the graph keeps its own schedule; this keeps the logged lr right
    else:
        terms = step(*inputs)
        terms[0].backward()
        if dp is not None:
            dp.after_backward(step)
        clip_gradients(optimizer, max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return dp.values(terms) if dp is not None else [float(t.numpy()) for t in terms]
