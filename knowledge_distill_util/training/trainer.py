"""Every recipe stage through the :class:`~knowledge_distill_util.engine.Distiller` and the engine's one loop
(:mod:`knowledge_distill_util.engine.loop`).

:func:`train_stage` is the adapter. A stage whose objective has a configuration (:func:`stage_config`,
:mod:`.stage_configs`: every built-in objective: labels only, KD, Distilled-BiLSTM, BERT-PKD and its patience form,
TinyBERT's stages, DistilBERT, MiniLM, MiniLMv2; the custom recipe's :func:`~.custom.custom_config`) trains the
Distiller's :class:`~knowledge_distill_util.engine.DistillationConfig` terms, bit for bit its objective's formula:
the rows of a ``data.Features`` become :class:`~.feature_batches.FeatureBatches` named as the models' keywords, the
teacher's logits computed before training go in as ``train(teacher_logits=)``, ``--cache_teacher_outputs`` is the
Distiller's teacher-output cache (the batches then carry row ids), the model's own per-step inputs
(:class:`StepInputs`, BERT-of-Theseus's coins) are the Distiller's ``step_inputs``. A stage whose objective has no
configuration (a recipe registered with a formula of its own) runs its :class:`LossStep` (student, frozen teacher,
the :class:`~.objectives.Objective` reading ``args``) as the Distiller's ``objective``: the cached teacher logits
ride along as ``teacher_logits``, the cached hidden states and attentions (:mod:`.teacher_outputs`) as
``cached_teacher_*``, a weight schedule's factors as a step input.
Both take AdamW over the Distiller's parameters (the student's and the projections') with the weight-decay groups,
warm-up and decay of :mod:`knowledge_distill_util.engine.optim`;
the files are ``<stage>_losses.csv/png`` in ``work_dir`` and checkpoints under ``checkpoint_dir/<stage>/``. The
global generators are not reseeded per epoch and dropout is reseeded per step only with ``reseed_dropout``, so
every random draw is the one the recipes always made.
"""
import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, NamedTuple, Optional, Protocol, Tuple, runtime_checkable

import numpy as np
import oneflow as flow
import oneflow.nn as nn

from ..engine import hooks
from ..engine.config import DistillationConfig, TrainingConfig
from ..engine.distiller import Distiller
from ..engine.distributed import global_batch
from ..engine.hooks import EpochEnd, non_finite_weight
from ..engine.optim import make_optimizer, make_scheduler
from ..engine.progress import ProgressLog, format_duration
from ..config.schema import ConfigError
from .feature_batches import DISTILLER_INPUTS, FeatureBatches, batch_indices
from .loss_step import LossStep
from .objective_schedules import schedule_factors
from .teacher_outputs import TeacherOutputCache, build_cache, reads_teacher_layers

__all__ = ["StepInputs", "EpochEnd", "TrainerConfig", "LossStep", "StageResult", "ProgressLog", "train_stage",
           "model_device", "NonFiniteLossError", "format_duration"]

logger = logging.getLogger(__name__)


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


def model_device(model: nn.Module) -> flow.device:
    """The device of ``model``'s first parameter."""
    return next(model.parameters()).device


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
    name = non_finite_weight(student.named_parameters())
    if name is not None:
        raise NonFiniteLossError(_weight_message(stage, name, step, learning_rate))


def _weight_message(stage: str, name: str, step: int, learning_rate: float) -> str:
    return (f"stage {stage}: the weight {name} became NaN or infinite at step {step}; training stopped and this "
            f"checkpoint was not saved (earlier checkpoints and models are kept): lower --learning_rate (now "
            f"{learning_rate:g}) or check the data")


def _total_steps(per_epoch: int, tcfg: TrainerConfig) -> int:
    total = max(1, int(round(per_epoch * tcfg.num_epochs)))
    return min(total, tcfg.max_steps) if tcfg.max_steps and tcfg.max_steps > 0 else total


class _RecipeInputs:
    """The Distiller's step inputs of a recipe stage: the weight schedules' factors
    (:func:`~.objective_schedules.schedule_factors`) and the model's own (:class:`StepInputs`)."""

    def __init__(self, scheduled: bool, provider: Optional[StepInputs]):
        self.scheduled, self.provider = scheduled, provider

    def step_inputs(self, step: int, total: int) -> Dict[str, np.ndarray]:
        inputs = {"schedule_factors": schedule_factors(step, total)} if self.scheduled else {}
        if self.provider is not None:
            drawn = self.provider.step_inputs()
            inputs.update((name, drawn[name]) for name in self.provider.step_input_names)
        return inputs

    def rng_state(self):
        return self.provider.rng_state() if self.provider is not None else None

    def set_rng_state(self, state) -> None:
        if self.provider is not None and state is not None:
            self.provider.set_rng_state(state)


def _training_config(tcfg: TrainerConfig, total: int, work_dir: str, stage: str, checkpoint_dir: str,
                     progress: bool) -> TrainingConfig:
    """The stage as a :class:`TrainingConfig` (see the module doc)."""
    return TrainingConfig(
        output_dir=work_dir, max_steps=total, seed=tcfg.seed, checkpoint_every=max(1, tcfg.checkpoint_every),
        resume=tcfg.resume, max_grad_norm=tcfg.max_grad_norm if tcfg.max_grad_norm > 0 else None,
        learning_rate=tcfg.learning_rate, warmup_steps=int(total * tcfg.warmup_proportion), lr_schedule="linear",
        use_graph=tcfg.use_graph, progress=progress, stage=stage, checkpoint_dir=os.path.join(checkpoint_dir, stage),
        overwrite=True, lock=False, seed_epochs=False, reseed_dropout=tcfg.reseed_dropout,
        progress_every=tcfg.progress_every)


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
    cache_teacher_outputs: str = "off",
    cache_teacher_dtype: str = "float16",
    cache_dir: Optional[str] = None,
) -> StageResult:
    """Train ``step.student`` on ``features`` (a ``data.Features``) with ``step``'s objective, through the
    :class:`~knowledge_distill_util.engine.Distiller` (see the module doc).

    Writes ``work_dir/<stage>_losses.csv`` (one row per step) and ``.png``, and checkpoints under
    ``checkpoint_dir/<stage>/`` (deleted first when not resuming). ``teacher_logits`` (``[N, C]``,
    row-aligned with ``features``) replaces the teacher's forward pass for objectives that read only its
    logits. ``on_step(step, total, terms)`` is called after every step (and after its checkpoint, if any).
    ``on_epoch_end``: an :class:`EpochEnd` hook (called on every rank; its state is checkpointed).
    ``cache_teacher_outputs`` ``memory``/``disk``/``auto`` (an objective reading teacher layers): the teacher's
    outputs computed once before the first step and fed as batch inputs (:mod:`.teacher_outputs`; stored as
    ``cache_teacher_dtype``; a disk cache under ``cache_dir``, default ``checkpoint_dir``, deleted at the end).
    A NaN/inf loss or weight raises :class:`NonFiniteLossError`.
    """
    student = step.student
    try:
        batch_size = global_batch(tcfg.batch_size, len(features))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    cached = None if teacher_logits is None else np.asarray(teacher_logits, dtype=np.float32)
    config = stage_config(step, features)
    provider = student if isinstance(student, StepInputs) else None
    cache = _Cache(cache_teacher_outputs, cache_teacher_dtype, cache_dir or checkpoint_dir)

    def training(total: int) -> TrainingConfig:
        return _training_config(tcfg, total, work_dir, stage, checkpoint_dir, progress)

    run = (_configured(step, config, features, batch_size, tcfg, cached, provider, cache, training)
           if config is not None else
           _with_objective(step, features, batch_size, tcfg, cached, provider, cache, stage, training))
    distiller = run.distiller
    total = distiller.training_config.max_steps
    optimizer = make_optimizer(distiller, tcfg.learning_rate, tcfg.weight_decay, tcfg.adam_epsilon,
                               tcfg.max_grad_norm)
    scheduler = make_scheduler(optimizer, total, int(total * tcfg.warmup_proportion))
    began = time.time()
    try:
        history = distiller.train(run.data, optimizer=optimizer, scheduler=scheduler, on_step=on_step,
                                  on_epoch_end=on_epoch_end, teacher_logits=run.teacher_logits)
    except hooks.NonFiniteLossError as error:
        raise _non_finite_error(error, stage, tcfg.learning_rate) from None
    except (TypeError, ValueError) as error:
        if distiller.started:
            raise
        raise ConfigError(f"stage {stage}: {error}") from None  # refused before the first step: one sentence
    finally:
        student.eval()
        if run.outputs is not None:
            run.outputs.close()
    return _stage_result(step, distiller.last_run, history, total, work_dir, stage, began)


def stage_config(step: LossStep, features) -> Optional[DistillationConfig]:
    """The stage as a :class:`DistillationConfig` (:attr:`~.objectives.Objective.config`, one logit when the labels
    are float scores), or None: the objective has none (or none for these ``args``)."""
    if step.objective.config is None:
        return None
    return step.objective.config(step.args, bool(np.issubdtype(features.labels.dtype, np.floating)))


class _Run(NamedTuple):
    """How a stage trains: its batches, its Distiller, the objectives' layer cache (or None) and the teacher logits
    computed beforehand for ``train(teacher_logits=)`` (or None)."""

    data: FeatureBatches
    distiller: Distiller
    outputs: Optional[TeacherOutputCache]
    teacher_logits: Optional[np.ndarray]


@dataclass(frozen=True)
class _Cache:
    """``--cache_teacher_outputs``, ``--cache_teacher_dtype`` and the directory of the objectives' disk cache."""

    mode: str
    dtype: str
    directory: str


def _configured(step: LossStep, config: DistillationConfig, features, batch_size: int, tcfg: TrainerConfig,
                cached: Optional[np.ndarray], provider: Optional[StepInputs], cache: _Cache, training):
    """The :class:`_Run` of a stage trained through its configuration: the teacher's logits computed
    beforehand (``cached``) are ``train(teacher_logits=)``; the layers its matches read go through the Distiller's
    teacher-output cache under ``--cache_teacher_outputs`` (stored as ``--cache_teacher_dtype``, no size limit);
    the batches carry row ids for either. ``training(total) -> TrainingConfig``."""
    layers = cache.mode != "off" and cached is None and bool(config.intermediate_matches)
    data = FeatureBatches(features, batch_size, tcfg.seed, model_device(step.student),
                          row_ids=cached is not None or layers, inputs=DISTILLER_INPUTS)
    training_config = training(_total_steps(len(data), tcfg))
    if layers:
        training_config = dataclasses.replace(training_config, cache_teacher_outputs=cache.mode,
                                              cache_dtype=cache.dtype, cache_max_mb=None)
    teacher = step.teacher if cached is None and config.reads_teacher else None
    distiller = Distiller(teacher, step.student, config, training_config,
                          step_inputs=None if provider is None else _RecipeInputs(False, provider))
    return _Run(data, distiller, None, cached)


def _with_objective(step: LossStep, features, batch_size: int, tcfg: TrainerConfig, cached: Optional[np.ndarray],
                    provider: Optional[StepInputs], cache: _Cache, stage: str, training):
    """The :class:`_Run` of a stage whose objective is the Distiller's ``objective``: cached teacher
    logits and layers (``outputs``, :mod:`.teacher_outputs`) ride along as batch inputs, a weight schedule's factors
    and the model's own as step inputs."""
    device = model_device(step.student)
    outputs = _teacher_output_cache(step, features, batch_size, tcfg.seed, device, stage, cache.mode, cache.dtype,
                                    cache.directory)
    step.cache_layout = None if outputs is None else outputs.layout
    data = FeatureBatches(features, batch_size, tcfg.seed, device, cached, outputs)
    step.extra_inputs = _extra_input_names(step, cached is not None, provider)
    inputs = _RecipeInputs(step.scheduled, provider) if (step.scheduled or provider is not None) else None
    distiller = Distiller(step.teacher, step.student, DistillationConfig(), training(_total_steps(len(data), tcfg)),
                          objective=step, step_inputs=inputs)
    return _Run(data, distiller, outputs, None)


def _teacher_output_cache(step: LossStep, features, batch_size: int, seed: int, device, stage: str, mode: str,
                          dtype: str, directory: str) -> Optional[TeacherOutputCache]:
    """The teacher's layer outputs computed once before the first step (:func:`~.teacher_outputs.build_cache`,
    in epoch 0's batch order) when ``mode`` is not ``"off"``, the stage has a teacher and its objective reads
    the teacher's layers; else None."""
    if mode == "off" or step.teacher is None or not reads_teacher_layers(step.objective):
        return None
    return build_cache(step, features, batch_indices(len(features), batch_size, seed, 0), device, mode=mode,
                       dtype=dtype, directory=directory, stage=stage)


def _extra_input_names(step: LossStep, teacher_logits: bool, provider: Optional[StepInputs]) -> Tuple[str, ...]:
    """The inputs ``step`` receives beyond :data:`~.feature_batches.BATCH_KEYS`, in this order: ``teacher_logits`` (cached
    logits), the cached teacher outputs' keys, ``schedule_factors`` (a weight schedule) and the model's own
    step inputs."""
    return (("teacher_logits",) if teacher_logits else ()) + (
        step.cache_layout.keys if step.cache_layout is not None else ()) + (
        ("schedule_factors",) if step.scheduled else ()) + (
        tuple(provider.step_input_names) if provider is not None else ())


def _non_finite_error(error: hooks.NonFiniteLossError, stage: str, learning_rate: float) -> NonFiniteLossError:
    """The engine's non-finite loss or weight as the recipes' :class:`NonFiniteLossError` (its sentence names
    the stage, the step, the terms or the weight, and the learning rate)."""
    if error.weight is not None:
        return NonFiniteLossError(_weight_message(stage, error.weight.split(".", 1)[1], error.step, learning_rate))
    if error.step == 0:  # the first batch's loss, before any update: the data or the weights, not the rate
        return NonFiniteLossError(str(error))
    return NonFiniteLossError(_non_finite_message(stage, error.step, list(error.terms), list(error.terms.values()),
                                                  learning_rate))


def _stage_result(step: LossStep, run: Dict, history: Dict, total: int, work_dir: str, stage: str,
                  began: float) -> StageResult:
    """The :class:`StageResult` of a finished stage: ``run`` is the Distiller's ``last_run``, ``history`` what
    its ``train`` returned (the last value of each of the objective's terms), ``began`` the ``time.time()``
    before training."""
    last = {name: values[-1] for name, values in history.items()
            if name not in ("step", "lr", "eval") and values}
    writer = os.path.abspath(run["log_path"]) != os.path.abspath(os.devnull)
    png = os.path.join(work_dir, f"{stage}_losses.png") if writer else None
    return StageResult(steps=total, seconds=time.time() - began, log_path=run["log_path"], plot_path=png,
                       last_terms=last, resumed_from=run["resumed_from"])
