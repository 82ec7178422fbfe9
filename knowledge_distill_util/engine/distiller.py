"""The :class:`Distiller`: distil any OneFlow teacher into any OneFlow student on any data.

    distiller = Distiller(teacher, student, DistillationConfig(...), TrainingConfig(output_dir=..., ...))
    history = distiller.train(loader, optimizer=flow.optim.AdamW(distiller.parameters(), lr=1e-3),
                              eval_data=dev_loader)
    metrics = distiller.evaluate(dev_loader)          # {"accuracy": ...}

Everything is checked before anything is written: the configurations and module paths when the
``Distiller`` is built; the optimizer, the data and one probe forward (adaptors, hooked modules, shapes,
labels) when ``train`` starts. Only then is ``output_dir`` locked (one writer,
:mod:`knowledge_distill_util.engine.lock`) and written: ``checkpoints/``, ``losses.csv``, ``losses.png``.

A loss of your own replaces the configuration's terms: ``Distiller(teacher, student, DistillationConfig(),
training_config, objective=module)`` with ``module(batch, weights) -> OrderedDict`` of scalar terms (``"loss"``,
the total, first; ``batch`` a :class:`~.batches.Batch`), an ``nn.Module`` holding the student (and the teacher,
if it reads it; ``teacher=None`` for none). Each ``kdu-train`` recipe is such a configuration
(``knowledge_distill_util.training.trainer``). ``step_inputs=`` (:class:`~.hooks.StepInputs`) adds inputs
drawn at each step. ``TrainingConfig(cache_teacher_outputs="memory")`` runs the teacher once per row
(:mod:`~.teacher_cache`).
"""
import logging
import math
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import oneflow as flow
import oneflow.nn as nn

from .adaptors import check_features, default_adaptor, require
from .batches import flatten, split_batch
from .config import DistillationConfig, TrainingConfig
from .matches import Match
from .hooks import NonFiniteLossError, StepInputs
from .objective import IGNORE_INDEX, DistillStep, check_labels
from .parallel import Ranks
from .state import start_epoch
from .taps import FeatureTaps
from .teacher_cache import TeacherCache, cache_directory, check_cache_options

__all__ = ["Distiller"]

logger = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"


def _check_type(name: str, value, kind, what: str):
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    return value


def _teachers(teacher) -> List[nn.Module]:
    if teacher is None:
        return []
    teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
    if not teachers:
        raise ValueError("teacher is an empty list; give a teacher Module or a list of them")
    for i, t in enumerate(teachers):
        _check_type("teacher" if len(teachers) == 1 else f"teacher[{i}]", t, nn.Module, "a oneflow.nn.Module")
    return teachers


def _device(module: nn.Module) -> Optional[flow.device]:
    first = next(iter(module.parameters()), None)
    return None if first is None else first.device


class Distiller:
    """Distil ``teacher`` (a Module or a list of Modules) into ``student``.

    ``adaptor_T``/``adaptor_S``: ``adaptor(batch, outputs) -> dict`` (:mod:`.adaptors`; default
    :func:`~.adaptors.default_adaptor`). ``parameters()``: the student's and the projections' parameters.
    ``objective``: an ``nn.Module`` ``(batch, weights) -> OrderedDict`` of terms replacing the
    configuration's (see the module doc; ``teacher`` may then be None); ``step_inputs``: a
    :class:`~.hooks.StepInputs`.
    """

    def __init__(self, teacher, student: nn.Module, distillation_config: DistillationConfig,
                 training_config: TrainingConfig, adaptor_T: Optional[Callable] = None,
                 adaptor_S: Optional[Callable] = None, objective: Optional[nn.Module] = None,
                 step_inputs: Optional[StepInputs] = None):
        if objective is not None:
            _check_type("objective", objective, nn.Module, "an nn.Module forward(batch, weights) -> OrderedDict")
        if step_inputs is not None and not callable(getattr(step_inputs, "step_inputs", None)):
            raise TypeError(f"step_inputs must have a method step_inputs(step, total) -> dict, got "
                            f"{type(step_inputs).__name__}")
        self.objective, self.step_inputs, self.last_run = objective, step_inputs, None
        #: False until ``train`` has checked everything and starts its first step (an error before is a refusal
        #: of the configuration or the data)
        self.started = False
        self.teachers = _teachers(teacher)
        self.student = _check_type("student", student, nn.Module, "a oneflow.nn.Module")
        self.distillation_config = _check_type("distillation_config", distillation_config, DistillationConfig,
                                               "a DistillationConfig")
        self.training_config = _check_type("training_config", training_config, TrainingConfig, "a TrainingConfig")
        check_cache_options(training_config, objective, self.teachers)
        self.teacher_cache: Optional[TeacherCache] = None  # one per train() call
        for name, adaptor in (("adaptor_T", adaptor_T), ("adaptor_S", adaptor_S)):
            if adaptor is not None and not callable(adaptor):
                raise TypeError(f"{name} must be a function adaptor(batch, outputs) -> dict, got "
                                f"{type(adaptor).__name__}")
        self.adaptor_T, self.adaptor_S = adaptor_T or default_adaptor, adaptor_S or default_adaptor
        if not any(p.requires_grad for p in student.parameters()):
            raise ValueError("the student has no trainable parameters (none, or all with requires_grad=False); "
                             "there is nothing to train")
        self.device = _device(student)
        self._check_teachers()
        self.matches = [Match(i, entry) for i, entry in enumerate(distillation_config.intermediate_matches)]
        if self.matches and len(self.teachers) != 1:
            raise ValueError(f"intermediate_matches need one teacher, got {len(self.teachers)}; distil the "
                             f"logits of several teachers, or match the layers of one")
        self.taps = (FeatureTaps(student, [p for m in self.matches for p in m.student_paths], "student"),
                     FeatureTaps(self.teachers[0] if self.teachers else student,
                                 [p for m in self.matches for p in m.teacher_paths], "teacher"))
        for match in self.matches:
            match.to(self.device)
        self._trainable = nn.ModuleDict({"student": student, "matches": nn.ModuleList(self.matches)})
        self._told_eval = False

    def _check_teachers(self) -> None:
        weights = self.distillation_config.teacher_weights
        if weights is not None and len(weights) != len(self.teachers):
            raise ValueError(f"teacher_weights has {len(weights)} entries but there are {len(self.teachers)} "
                             f"teachers; give one weight per teacher")
        for i, teacher in enumerate(self.teachers):
            device = _device(teacher)
            if device is not None and device != self.device:
                raise ValueError(f"teacher {i} is on {device} but the student is on {self.device}; move both to "
                                 f"one device (teacher.to(device))")

    def parameters(self) -> Iterator[nn.Parameter]:
        """The student's parameters, then the projections' (each once): give them to the optimizer."""
        return self._trainable.parameters()

    def named_parameters(self) -> Iterator[Tuple[str, nn.Parameter]]:
        """:meth:`parameters` with their names (``student.*``, ``matches.*``), e.g. for weight-decay groups."""
        return self._trainable.named_parameters()

    def state_dict(self) -> Dict[str, flow.Tensor]:
        """The student's (``student.*``) and the projections' (``matches.*``) weights: what checkpoints hold."""
        return self._trainable.state_dict()

    # ------------------------------------------------------------------------------------------- training

    def _step_module(self) -> nn.Module:
        if self.objective is not None:
            return self.objective
        return DistillStep(self.student, self.teachers, self.distillation_config, (self.adaptor_S, self.adaptor_T),
                           self.taps, self.matches)

    def _eval_teachers(self) -> None:
        for i, teacher in enumerate(self.teachers):
            if teacher.training:
                if not self._told_eval:
                    logger.info("teacher %d was in train mode: switched to eval mode (no dropout) for distillation", i)
                    self._told_eval = True
                teacher.eval()

    def _check_optimizer(self, optimizer) -> None:
        _check_type("optimizer", optimizer, flow.optim.Optimizer, "a oneflow.optim.Optimizer")
        held = {id(p) for group in optimizer.param_groups for p in group.parameters}
        missing = [name for name, p in self._trainable.named_parameters() if p.requires_grad and id(p) not in held]
        if missing:
            raise ValueError(f"the optimizer does not hold {len(missing)} trainable parameter(s), e.g. "
                             f"{missing[0]!r}; build it from distiller.parameters() (the student's and the "
                             f"projections')")

    def _check_teacher_reads(self, teacher_logits) -> None:
        """Whatever the configuration reads from the teacher comes from a teacher or from ``teacher_logits``."""
        config = self.distillation_config
        if teacher_logits is not None:
            where = ("objective=" if self.objective is not None else "intermediate_matches" if self.matches
                     else "cache_teacher_outputs" if self.training_config.cache_teacher_outputs != "off" else None)
            if where is not None:
                raise ValueError(f"teacher_logits= gives the logit loss the teacher's logits, but {where} reads the "
                                 f"teacher too; drop teacher_logits= (the teacher then runs) or {where}")
        elif self.objective is None and not self.teachers and config.reads_teacher:
            reason, fix = ((f"logit_weight is {config.logit_weight}", "set logit_weight=0 (labels only)")
                           if config.logit_weight > 0 else
                           ("logit_terms has a weighted logit loss", "drop logit_terms") if config.reads_logits else
                           ("intermediate_matches read the teacher", "drop intermediate_matches"))
            raise ValueError(f"teacher is None but {reason}; give a teacher, the teacher's logits (train(..., "
                             f"teacher_logits=array)) or {fix}")

    @staticmethod
    def _check_data(data) -> None:
        try:
            iterator = iter(data)
        except TypeError:
            raise TypeError(f"data must be an iterable of batches (a DataLoader, a list), got "
                            f"{type(data).__name__}") from None
        if iterator is data:
            raise TypeError(f"data must be re-iterable (a DataLoader, a list of batches), got a one-pass "
                            f"{type(data).__name__}: each epoch and a resume iterate it again")

    def _check_graph_data(self, data) -> None:
        """``use_graph`` compiles one batch shape: a DataLoader with a short last batch is refused."""
        batch_size, dataset = getattr(data, "batch_size", None), getattr(data, "dataset", None)
        if not self.training_config.use_graph or not isinstance(batch_size, int) or getattr(data, "drop_last", True):
            return
        try:
            rows = len(dataset)
        except TypeError:
            return
        if rows % batch_size:
            raise ValueError(f"use_graph=True compiles one batch shape, but the loader's {rows} rows in batches of "
                             f"{batch_size} end with a batch of {rows % batch_size}; use DataLoader(..., "
                             f"drop_last=True) or train eagerly")

    def _total_steps(self, data) -> int:
        cfg = self.training_config
        if cfg.max_steps is not None:
            return cfg.max_steps
        try:
            batches = len(data)
        except TypeError:
            raise ValueError(f"TrainingConfig.num_epochs needs data with a len(), got {type(data).__name__}; give "
                             f"max_steps instead") from None
        return max(1, -(-cfg.num_epochs * batches // cfg.gradient_accumulation_steps))

    def _probe_inputs(self, batch, total: int) -> None:
        """The step inputs of step 0 added to the probe's ``batch``, their generator left as it was."""
        if self.step_inputs is None:
            return
        state = self.step_inputs.rng_state() if hasattr(self.step_inputs, "rng_state") else None
        inputs = self.step_inputs.step_inputs(0, total)
        if state is not None:
            self.step_inputs.set_rng_state(state)
        for name, value in inputs.items():
            batch.kwargs[name] = (flow.tensor(value, device=self.device) if isinstance(value, np.ndarray)
                                  and self.training_config.use_graph else value)

    def _probe(self, step: nn.Module, data, total: int, ranks: Optional[Ranks] = None):
        """One forward on the first batch (this rank's rows of it), nothing written: every error of the first
        step comes here. Returns the batch's graph layout and tensor shapes (``use_graph``), the term names and
        the rows of the whole (global) batch."""
        cfg = self.training_config
        start_epoch(data, cfg.seed, 0, cfg.seed_epochs)
        first = next(iter(data), None)
        if first is None:
            raise ValueError("the training data yielded no batch; give a non-empty loader")
        batch = split_batch(first, self.training_config.label_key, self.device)
        rows = batch.rows()
        if ranks is not None:
            batch = ranks.shard(batch)
        self._probe_inputs(batch, total)
        layout, cache = None, getattr(step, "teacher_cache", None)
        if self.training_config.use_graph:  # the compiled step's inputs: without the row ids of a cache
            values, layout = flatten(batch if cache is None else cache.take_ids(batch)[0], cfg.label_key)
            layout = (layout, [(tuple(v.shape), v.dtype) for v in values])
        self.student.eval()
        with flow.no_grad():
            weights = self.distillation_config.weight_schedules()
            terms = step(batch, flow.ones(len(weights), dtype=flow.float32, device=self.device))
        self.student.train()
        self._check_first_loss(terms, ranks)
        return layout, list(terms), rows

    def _check_first_loss(self, terms, ranks: Optional[Ranks]) -> None:
        """The probe's loss is finite: before any update a NaN/inf comes from the inputs or the weights, never
        from the learning rate; :class:`~.hooks.NonFiniteLossError` (step 0) naming the terms otherwise."""
        local = (lambda value: value) if ranks is None else ranks.local
        values = {name: float(local(value).numpy()) for name, value in terms.items()}
        if math.isfinite(values["loss"]):
            return
        stage = self.training_config.stage
        listed = ", ".join(f"{name} {value:.6g}" for name, value in values.items())
        raise NonFiniteLossError(f"{'' if stage is None else f'stage {stage}: '}the loss of the first batch is "
                                 f"{values['loss']} before any update ({listed}); check the inputs and the models' "
                                 f"weights for NaN or infinite values", 0, values, float("nan"))

    def train(self, data, optimizer=None, eval_data=None, metrics: Optional[Callable] = None,
              scheduler="default", on_step: Optional[Callable] = None, on_epoch_end=None,
              teacher_logits: Optional[np.ndarray] = None) -> Dict[str, Any]:
        """Train on ``data`` (an iterable of batches, re-iterable for several epochs); returns the history.

        ``optimizer``: default AdamW over :meth:`parameters` with ``TrainingConfig.learning_rate``.
        ``scheduler``: a learning-rate scheduler of ``optimizer`` stepped after each update (None: none);
        by default ``warmup_steps`` then ``lr_schedule``.
        ``eval_data``: evaluated every ``eval_every`` steps and at the end (``metrics`` as in :meth:`evaluate`).
        ``on_step(step, total, terms)``: called (by the writer) after every step and its checkpoint;
        ``on_epoch_end``: an :class:`~.hooks.EpochEnd` hook (every rank; its state is checkpointed).
        ``teacher_logits``: the teacher's logits computed beforehand, ``[N, ..., C]`` (row ``i`` for the batches'
        row id ``i`` under ``TrainingConfig.index_key``): the logit loss reads them and no teacher runs (the
        ``Distiller`` may then have ``teacher=None``; not with intermediate matches or ``cache_teacher_outputs``).
        The history: ``{"step": [...], "lr": [...], "loss": [...], <term>: [...], "eval": [{"step", ...}]}``
        for the steps this call ran (after a resume: from the checkpoint on; ``losses.csv`` has them all).
        Under OneFlow's launcher the run is data-parallel (:mod:`.parallel`).
        """
        ranks = Ranks(self.training_config.use_graph)
        hooks = dict(scheduler=scheduler, on_step=on_step, on_epoch_end=on_epoch_end)
        try:
            ranks.start(self._trainable)
            history = self._train(ranks, data, optimizer, eval_data, metrics, hooks, teacher_logits)
        except BaseException as error:
            ranks.failed(error)
            raise
        ranks.finished()
        return history

    def _train(self, ranks: Ranks, data, optimizer, eval_data, metrics, hooks, teacher_logits) -> Dict[str, Any]:
        from .run import check_output_paths, run_training
        self.started = False
        check_output_paths(self.training_config)
        self._check_teacher_reads(teacher_logits)
        if optimizer is None:
            optimizer = flow.optim.AdamW(list(self.parameters()), lr=self.training_config.learning_rate)
        self._check_optimizer(optimizer)
        self._check_data(data)
        self._check_graph_data(data)
        total = self._total_steps(data)
        self._eval_teachers()
        step = self._step_module()
        cfg, cache, self.teacher_cache = self.training_config, None, None
        if teacher_logits is not None:
            cache = step.teacher_cache = TeacherCache.prefilled(teacher_logits, cfg.index_key, self.device)
        elif cfg.cache_teacher_outputs != "off":
            if cfg.use_graph and ranks.world > 1 and self.step_inputs is not None:
                raise ValueError(f"cache_teacher_outputs={cfg.cache_teacher_outputs!r} with use_graph=True on "
                                 f"{ranks.world} processes cannot take step_inputs= (they become global tensors, which "
                                 f"the eagerly run teacher cannot read); train eagerly (use_graph=False), in one "
                                 f"process, or set cache_teacher_outputs='off'")
            mode = cfg.cache_teacher_outputs
            directory = cache_directory(cfg.output_dir, ranks.rank) if mode in ("disk", "auto") else None
            cache = step.teacher_cache = TeacherCache(cfg.cache_dtype, cfg.index_key, cfg.cache_max_mb, self.device,
                                                      directory, ranks.rank, ranks.world, auto=mode == "auto")
            cache.probing = True  # the probe checks and measures rows, stores none
        with self.taps[0], self.taps[1]:
            layout, names, rows = self._probe(step, data, total, ranks)
            if cache is not None:
                if teacher_logits is None:
                    cache.check_capacity(data, rows)
                cache.probing, self.teacher_cache = False, cache
            try:
                history = run_training(self, ranks, step, optimizer, data, total, layout, names,
                                       lambda: None if eval_data is None else self.evaluate(eval_data, metrics), hooks)
            finally:
                if cache is not None:
                    cache.report()
                    cache.close()
        return history

    # ----------------------------------------------------------------------------------------- evaluation

    def predict(self, data):
        """``(logits, labels)`` of the student over ``data`` as NumPy arrays (eval mode, no gradient)."""
        was_training = self.student.training
        self.student.eval()
        logits, labels = [], []
        try:
            with flow.no_grad():
                for raw in data:
                    batch = split_batch(raw, self.training_config.label_key, self.device)
                    if self.training_config.cache_teacher_outputs != "off" or self.teacher_cache is not None:
                        batch.kwargs.pop(self.training_config.index_key, None)  # row ids (a cache): not an input
                    outputs = self.student(*batch.args, **batch.kwargs)
                    features = check_features(self.adaptor_S(batch.raw, outputs), "student adaptor (adaptor_S)")
                    logits.append(require(features, "logits", "student", "evaluate").numpy())
                    label = features.get("labels", batch.labels)
                    if label is None:
                        raise ValueError(f"evaluate needs labels: the batches have none under "
                                         f"{self.training_config.label_key!r}")
                    labels.append(label.numpy())
        finally:
            self.student.train(was_training)
        if not logits:
            raise ValueError("the evaluation data yielded no batch")
        return np.concatenate(logits), np.concatenate(labels)

    def evaluate(self, data, metrics: Optional[Callable] = None) -> Dict[str, float]:
        """The student's metrics on ``data``: ``{"accuracy": ...}`` over the rows not labelled ``-100`` (one logit:
        ``{"mse": ...}``), or ``metrics(logits, labels) -> dict`` on the NumPy arrays of :meth:`predict`."""
        logits, labels = self.predict(data)
        if metrics is not None:
            return dict(metrics(logits, labels))
        check_labels(logits, flow.tensor(labels))  # the default metrics read labels that fit (logits: their shape)
        if logits.shape[-1] == 1:
            return {"mse": float(np.mean((logits.reshape(-1) - labels.reshape(-1)) ** 2))}
        labels = labels.reshape(-1)
        kept = labels != IGNORE_INDEX  # rows the hard-label loss ignores are not scored either
        if not kept.any():
            raise ValueError(f"every label of the evaluation data is {IGNORE_INDEX} (ignored); give labelled rows")
        return {"accuracy": float(np.mean(logits.argmax(-1).reshape(-1)[kept] == labels[kept]))}
