"""The training loop shared by every recipe: AdamW with linear warm-up and decay, the teacher in eval
mode under ``no_grad``, a progress bar, per-term losses logged each step (CSV) and plotted (PNG), atomic
checkpoints every ``checkpoint_every`` steps with ``--resume``, and ``--use_graph`` (``nn.Graph``).

Data order: epoch ``e`` visits the training rows in ``np.random.default_rng(seed + e).permutation(N)``
order, in batches of ``batch_size``; a last short batch is filled up with the epoch's first rows so
that every batch has the same shape (``nn.Graph`` compiles one shape). The order depends only on the
seed and the step, so a resumed run sees exactly the batches the uninterrupted run would have seen.
"""
import csv
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import oneflow as flow
import oneflow.nn as nn

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .recipes import Recipe

__all__ = ["LossStep", "TrainGraph", "StageResult", "train_stage", "make_scheduler",
           "batch_indices", "plot_losses", "model_device"]

_NO_DECAY = ("bias", "LayerNorm", "layernorm", "layer_norm", "norm.weight")


def model_device(model: nn.Module) -> flow.device:
    """The device of ``model``'s first parameter."""
    return next(model.parameters()).device


class LossStep(nn.Module):
    """``student`` (+ frozen ``teacher``) + a recipe: ``forward(batch tensors) -> tuple of loss terms``.

    The terms are returned in the order of ``recipe.terms`` (``"loss"``, the total, first). The teacher,
    when the recipe reads more than its logits or no cached logits are given, runs under ``no_grad``;
    it must be in eval mode (no dropout): :func:`train_stage` puts it there.
    """

    def __init__(self, student: nn.Module, teacher: Optional[nn.Module], recipe: Recipe, args):
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.recipe = recipe
        self.args = args
        self.extra_inputs: Tuple[str, ...] = ()
        if recipe.teacher_outputs and teacher is None and recipe.teacher_outputs != ("logits",):
            raise ValueError(f"recipe {recipe.name!r} reads the teacher's {recipe.teacher_outputs}: give a teacher")

    def forward(self, input_ids, input_mask, segment_ids, labels, *extras):
        """``extras``: the tensors named in ``self.extra_inputs`` (``"teacher_logits"``, ``"coins"``)."""
        named = dict(zip(self.extra_inputs, extras))
        teacher_logits, coins = named.get("teacher_logits"), named.get("coins")
        if coins is None:
            out = self.student(input_ids, input_mask, segment_ids)
        else:
            out = self.student(input_ids, input_mask, segment_ids, coins)
        if isinstance(out, (tuple, list)):
            tensors = dict(student_logits=out[0], student_reps=out[1], student_atts=out[2])
        else:
            tensors = dict(student_logits=out)
        tensors["labels"] = labels
        wanted = self.recipe.teacher_outputs
        if wanted:
            if teacher_logits is not None and wanted == ("logits",):
                tensors["teacher_logits"] = teacher_logits
            else:
                if self.teacher is None:
                    raise ValueError(f"recipe {self.recipe.name!r} needs teacher logits or a teacher model")
                with flow.no_grad():
                    t_logits, t_reps, t_atts = self.teacher(input_ids, input_mask, segment_ids)
                tensors.update(teacher_logits=t_logits, teacher_reps=t_reps, teacher_atts=t_atts)
        terms = self.recipe(self.args, **tensors)
        return tuple(terms[name] for name in self.recipe.terms)


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


def make_scheduler(optimizer, total_steps: int, warmup_steps: int):
    """Linear warm-up then linear decay to 0, with schedulers that ``nn.Graph`` supports.

    The learning rate of step ``s`` (0-based) is ``lr * min(1, s / warmup) * (1 - max(s, warmup) / total)``
    (OneFlow's ``WarmupLR`` over ``PolynomialLR(power=1)``), identical in eager and graph mode.

    >>> import oneflow as flow
    >>> opt = flow.optim.AdamW([flow.nn.Parameter(flow.zeros(1))], lr=1.0)
    >>> sched, rates = make_scheduler(opt, 10, 2), []
    >>> for _ in range(4):
    ...     rates.append(round(opt.param_groups[0]["lr"], 3)); opt.step(); sched.step()
    >>> rates
    [0.0, 0.4, 0.8, 0.7]
    """
    decay = flow.optim.lr_scheduler.PolynomialLR(
        optimizer, decay_batch=max(1, total_steps), end_learning_rate=0.0, power=1.0
    )
    if warmup_steps <= 0:
        return decay
    return flow.optim.lr_scheduler.WarmupLR(decay, warmup_factor=0.0, warmup_iters=warmup_steps,
                                            warmup_method="linear")


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


def _param_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if any(key in name for key in _NO_DECAY) else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


@dataclass
class StageResult:
    """What :func:`train_stage` did: steps run, wall time, the loss log and plot, last terms."""

    steps: int
    seconds: float
    log_path: str
    plot_path: Optional[str]
    last_terms: Dict[str, float] = field(default_factory=dict)
    resumed_from: int = 0


def _open_log(path: str, columns: Sequence[str], keep_until: Optional[int]):
    """Open the CSV loss log; on resume keep only the rows up to step ``keep_until``."""
    rows = []
    if keep_until is not None and os.path.isfile(path):
        with open(path, newline="", encoding="utf-8") as stream:
            rows = [r for r in csv.DictReader(stream) if int(r["step"]) <= keep_until]
    stream = open(path, "w", newline="", encoding="utf-8")
    writer = csv.DictWriter(stream, fieldnames=list(columns))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in columns})
    stream.flush()
    return stream, writer


def plot_losses(log_path: str, png_path: str, title: str = "") -> Optional[str]:
    """Plot every loss column of the CSV ``log_path`` against the step into ``png_path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_path, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    if not rows:
        return None
    terms = [k for k in rows[0] if k not in ("step", "epoch", "lr", "seconds")]
    steps = [int(r["step"]) for r in rows]
    fig, axes = plt.subplots(len(terms), 1, figsize=(7, 1.8 * len(terms) + 0.6), sharex=True, squeeze=False)
    for axis, term in zip(axes[:, 0], terms):
        axis.plot(steps, [float(r[term]) for r in rows], linewidth=1)
        axis.set_ylabel(term)
        axis.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(title or os.path.basename(log_path))
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
    return png_path


def _to_device(array: np.ndarray, device) -> flow.Tensor:
    return flow.tensor(array, device=device)


def train_stage(
    step: LossStep,
    features,
    cfg,
    *,
    work_dir: str,
    stage: str,
    num_epochs: float,
    learning_rate: float,
    teacher_logits: Optional[np.ndarray] = None,
    progress: bool = True,
    on_step: Optional[Callable[[int, Dict[str, float]], None]] = None,
    checkpoint_dir: Optional[str] = None,
) -> StageResult:
    """Train ``step.student`` on ``features`` (a ``data.Features``) with ``step``'s recipe.

    Reads from ``cfg``: ``batch_size_per_device``, ``weight_decay``, ``warmup_proportion``,
    ``max_steps`` (0 = no cap), ``checkpoint_every``, ``seed``, ``resume``, ``use_graph``.
    Writes ``work_dir/<stage>_losses.csv`` (one row per step), ``work_dir/<stage>_losses.png`` and
    checkpoints under ``<checkpoint_dir or work_dir/checkpoints>/<stage>/``. ``teacher_logits`` (``[N, C]``, row-aligned
    with ``features``) replaces the teacher's forward pass for recipes that read only its logits.
    ``on_step(step, terms)`` is called after every step (and after its checkpoint, if any).
    """
    from tqdm import tqdm

    student, device = step.student, model_device(step.student)
    num_rows = len(features)
    per_epoch = len(batch_indices(num_rows, cfg.batch_size_per_device, cfg.seed, 0))
    total = max(1, int(round(per_epoch * num_epochs)))
    if cfg.max_steps and cfg.max_steps > 0:
        total = min(total, cfg.max_steps)
    optimizer = flow.optim.AdamW(_param_groups(student, cfg.weight_decay), lr=learning_rate)
    scheduler = make_scheduler(optimizer, total, int(total * cfg.warmup_proportion))

    os.makedirs(work_dir, exist_ok=True)
    ckpt_root = os.path.join(checkpoint_dir or os.path.join(work_dir, "checkpoints"), stage)
    log_path = os.path.join(work_dir, f"{stage}_losses.csv")
    start, graph_state = 0, None
    found = latest_checkpoint(ckpt_root) if cfg.resume else None
    if found:
        model_state, optimizer_state, state = load_checkpoint(found)
        if bool(state.get("use_graph")) != bool(cfg.use_graph):
            raise ValueError(
                f"checkpoint {found} was written with use_graph={state.get('use_graph')} but this run has "
                f"use_graph={cfg.use_graph}; resume with the same --use_graph setting"
            )
        student.load_state_dict(model_state)
        start = int(state["step"])
        if cfg.use_graph:
            graph_state = optimizer_state  # the graph's own state: parameters, moments, train step
        else:
            optimizer.load_state_dict(optimizer_state)
            for _ in range(start):  # fast-forward the schedule (cheap, exact)
                scheduler.step()
        flow.set_rng_state(flow.tensor(state["flow_rng"], dtype=flow.uint8))
        if "theseus_rng" in state and hasattr(student, "rng"):
            student.rng.bit_generator.state = state["theseus_rng"]
        print(f"[{stage}] resumed from {found} at step {start}/{total}", flush=True)
    elif os.path.isdir(ckpt_root):
        shutil.rmtree(ckpt_root)

    if step.teacher is not None:
        step.teacher.eval()
        for parameter in step.teacher.parameters():
            parameter.requires_grad = False
    student.train()
    uses_coins = hasattr(student, "sample_coins")
    step.extra_inputs = (("teacher_logits",) if teacher_logits is not None else ()) + (
        ("coins",) if uses_coins else ())
    graph = None
    if cfg.use_graph:
        optimizer.zero_grad(set_to_none=True)
        graph = TrainGraph(step, optimizer, scheduler)
        if graph_state is not None:
            graph.load_state_dict(graph_state)

    names = step.recipe.terms
    stream, writer = _open_log(log_path, ("step", "epoch", "lr", "seconds") + tuple(names),
                               start if found else None)
    cached = None if teacher_logits is None else np.asarray(teacher_logits, dtype=np.float32)
    bar = tqdm(total=total, initial=start, desc=stage, disable=not progress, dynamic_ncols=True,
               mininterval=1.0)
    began, last = time.time(), {}
    try:
        global_step = start
        epoch = global_step // per_epoch
        while global_step < total:
            batches = batch_indices(num_rows, cfg.batch_size_per_device, cfg.seed, epoch)
            for index in batches[global_step - epoch * per_epoch:]:
                if global_step >= total:
                    break
                batch = features.as_dict(index)
                inputs = [_to_device(batch[k], device) for k in ("input_ids", "input_mask", "segment_ids", "labels")]
                if cached is not None:
                    inputs.append(_to_device(cached[index], device))
                if uses_coins:
                    coins = student.sample_coins()
                    inputs.append(_to_device(coins, device) if graph is not None else coins)
                lr = optimizer.param_groups[0]["lr"]
                if graph is not None:
                    terms = graph(*inputs)
                    scheduler.step()  # the graph keeps its own schedule; this keeps the logged lr right
                else:
                    terms = step(*inputs)
                    terms[0].backward()
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                values = [float(t.numpy()) for t in terms]
                if not math.isfinite(values[0]):
                    raise FloatingPointError(
                        f"[{stage}] the loss became {values[0]} at step {global_step + 1}; lower "
                        f"--learning_rate (now {learning_rate}) or check the inputs"
                    )
                global_step += 1
                last = dict(zip(names, values))
                writer.writerow(dict(step=global_step, epoch=epoch, lr=f"{lr:.6g}",
                                     seconds=f"{time.time() - began:.2f}", **{k: f"{v:.6g}" for k, v in last.items()}))
                stream.flush()
                bar.update(1)
                bar.set_postfix(loss=f"{values[0]:.4f}", refresh=False)
                if global_step % max(1, cfg.checkpoint_every) == 0 or global_step == total:
                    _checkpoint(ckpt_root, global_step, student, optimizer, graph)
                if on_step is not None:
                    on_step(global_step, last)
            epoch += 1
    finally:
        bar.close()
        stream.close()
    png = plot_losses(log_path, os.path.join(work_dir, f"{stage}_losses.png"), title=stage)
    student.eval()
    return StageResult(steps=total, seconds=time.time() - began, log_path=log_path, plot_path=png,
                       last_terms=last, resumed_from=start)


def _checkpoint(root: str, step_number: int, student: nn.Module, optimizer, graph) -> None:
    state = {"flow_rng": flow.get_rng_state().numpy().tolist(), "use_graph": graph is not None}
    if hasattr(student, "rng"):
        state["theseus_rng"] = student.rng.bit_generator.state
    optimizer_state = graph.state_dict() if graph is not None else optimizer.state_dict()
    save_checkpoint(root, step_number, student.state_dict(), optimizer_state, state)
