"""The two configurations of a :class:`~knowledge_distill_util.engine.Distiller` (TextBrewer's names).

:class:`DistillationConfig` says *what* is distilled (the logit loss, its temperatures and weights, the hard
labels, the intermediate matches); :class:`TrainingConfig` says *how* the loop runs (steps, output directory,
checkpoints, resume, accumulation, clipping, the learning-rate schedule, graph mode). Both check every value
when they are built: a wrong type is a ``TypeError``, a wrong value a ``ValueError``, each one sentence
naming the field, the value and the fix.

    >>> DistillationConfig(temperature=0)
    Traceback (most recent call last):
    ...
    ValueError: temperature must be a finite number >= 0.0001, got 0.0; the usual value is 1.0
    >>> TrainingConfig(output_dir="out", max_steps=0)
    Traceback (most recent call last):
    ...
    ValueError: TrainingConfig.max_steps must be a positive integer or None, got 0
"""
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .._checks import check_bool, check_choice, check_int, check_positive_real, check_temperature
from ..registry import get_loss, keyword_options

__all__ = ["DistillationConfig", "TrainingConfig", "LogitTerm", "LOGIT_TERM_KEYS", "WEIGHT_SCHEDULES",
           "TEMPERATURE_SCHEDULERS", "LR_SCHEDULES", "CACHE_MODES", "CACHE_DTYPES"]

#: Loss-weight schedules by name (functions of :mod:`knowledge_distill_util.schedules`).
WEIGHT_SCHEDULES = ("constant", "linear_growth", "linear_decay")
#: Per-row temperature schedulers: none, or :func:`~knowledge_distill_util.schedules.flsw_temperature` /
#: :func:`~knowledge_distill_util.schedules.cwsm_temperature` around ``temperature``.
TEMPERATURE_SCHEDULERS = ("none", "flsw", "cwsm")
#: Learning-rate schedules after the warm-up.
LR_SCHEDULES = ("constant", "linear")
#: Teacher-output caching (:mod:`~knowledge_distill_util.engine.teacher_cache`): none, in memory, in
#: memory-mapped files in ``output_dir``, or in memory up to 1024 MB and on disk beyond.
CACHE_MODES = ("off", "memory", "disk", "auto")
#: The dtype the cached teacher outputs are stored in (they come back as float32).
CACHE_DTYPES = ("float32", "float16")


#: The logit loss's keywords the Distiller sets itself (not ``logit_options``).
_SET_BY_THE_DISTILLER = ("student_temperature", "teacher_temperature", "temperature_scaling", "mask")


def _logit_options(loss_name: str, options, where: str = "logit_options") -> Dict[str, Any]:
    """``options`` checked against the keyword arguments of the registered loss ``loss_name`` (the registry's error
    for an unknown name); ``where`` names them in the errors."""
    loss = get_loss(loss_name)
    if not isinstance(options, Mapping):
        raise TypeError(f"{where} must be a dict of keyword arguments of {loss_name}, got "
                        f"{type(options).__name__}")
    known = keyword_options(loss, exclude=_SET_BY_THE_DISTILLER)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"{where} has {', '.join(map(repr, unknown))}, which {loss_name} does not take "
                         f"(the temperatures have fields of their own); its options: {', '.join(known) or 'none'}")
    return dict(options)


@dataclass(frozen=True)
class LogitTerm:
    """One logit loss: ``weight * weight_schedule(step, total) * loss(z_S, z_T)``, the loss called with the
    temperatures (per row under ``temperature_scheduler`` ``"flsw"``/``"cwsm"``) and ``temperature_scaling`` when it
    takes them, and with ``options``. The fields are :class:`DistillationConfig`'s logit fields."""

    loss: str
    weight: float = 1.0
    weight_schedule: str = "constant"
    student_temperature: float = 1.0
    teacher_temperature: float = 1.0
    temperature_scheduler: str = "none"
    temperature_scaling: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)


#: The keys of a ``logit_terms`` entry: :class:`LogitTerm`'s fields and ``temperature`` (both sides).
LOGIT_TERM_KEYS = ("loss", "weight", "weight_schedule", "temperature", "student_temperature", "teacher_temperature",
                   "temperature_scheduler", "temperature_scaling", "options")


def _logit_term(index: int, entry, temperature: float) -> LogitTerm:
    """``logit_terms[index]`` (a dict of :data:`LOGIT_TERM_KEYS`, or a :class:`LogitTerm`) checked, as a
    :class:`LogitTerm`; its temperatures default to ``temperature``."""
    where = f"logit_terms[{index}]"
    if isinstance(entry, LogitTerm):
        entry = asdict(entry)
    if not isinstance(entry, Mapping):
        raise TypeError(f"{where} must be a dict such as {{'loss': 'kl_div', 'weight': 1.0}}, got "
                        f"{type(entry).__name__}")
    unknown = sorted(set(entry) - set(LOGIT_TERM_KEYS), key=str)
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {unknown}; the keys of a logit term: {', '.join(LOGIT_TERM_KEYS)}")
    if "loss" not in entry:
        raise ValueError(f"{where} names no loss; add 'loss': a registered logit loss such as 'kl_div'")
    try:
        get_loss(entry["loss"])
    except (TypeError, ValueError) as error:
        raise type(error)(f"{where}['loss']: {error}") from None
    both = check_temperature(f"{where}['temperature']", entry.get("temperature", temperature))
    sides = {side: _optional_temperature(f"{where}[{side!r}]", entry.get(side))
             for side in ("student_temperature", "teacher_temperature")}
    return LogitTerm(
        loss=entry["loss"], weight=check_positive_real(f"{where}['weight']", entry.get("weight", 1.0), allow_zero=True),
        weight_schedule=check_choice(f"{where}['weight_schedule']", entry.get("weight_schedule", "constant"),
                                     WEIGHT_SCHEDULES),
        student_temperature=both if sides["student_temperature"] is None else sides["student_temperature"],
        teacher_temperature=both if sides["teacher_temperature"] is None else sides["teacher_temperature"],
        temperature_scheduler=check_choice(f"{where}['temperature_scheduler']",
                                           entry.get("temperature_scheduler", "none"), TEMPERATURE_SCHEDULERS),
        temperature_scaling=check_bool(f"{where}['temperature_scaling']", entry.get("temperature_scaling", False)),
        options=_logit_options(entry["loss"], entry.get("options", {}), f"{where}['options']"))


def _logit_terms(entries, temperature: float) -> List[LogitTerm]:
    if isinstance(entries, (Mapping, str)) or not isinstance(entries, Sequence):
        raise TypeError(f"logit_terms must be a list of dicts (one per logit loss), got {type(entries).__name__}")
    return [_logit_term(i, entry, temperature) for i, entry in enumerate(entries)]


def _forward_kwargs(kwargs) -> Dict[str, Any]:
    """``kwargs`` as a dict of keyword arguments (identifier keys)."""
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"forward_kwargs must be a dict of keyword arguments of the models' forward, got "
                        f"{type(kwargs).__name__}")
    bad = [key for key in kwargs if not (isinstance(key, str) and key.isidentifier())]
    if bad:
        raise ValueError(f"forward_kwargs keys must be argument names of the models' forward (such as "
                         f"'output_hidden_states'), got {bad[0]!r}")
    return dict(kwargs)


def _optional_temperature(name: str, value) -> Optional[float]:
    return None if value is None else check_temperature(name, value)


@dataclass
class DistillationConfig:
    """What to distil.

    - ``temperature`` (both sides) or ``student_temperature`` / ``teacher_temperature`` (each overrides
      it); ``temperature_scheduler``: ``"none"``, ``"flsw"`` or ``"cwsm"`` (per-row temperatures around
      ``temperature``, :mod:`~knowledge_distill_util.schedules`).
    - ``logit_loss``: a registered loss name (``kl_div``, ``soft_cross_entropy``, ...), applied to the
      student's and the teacher's logits with the temperatures and ``temperature_scaling`` (``T_s*T_t``)
      when the loss takes them, and ``logit_options`` (its other keyword arguments, e.g. ``{"reduction":
      "batchmean"}`` or ``{"vocab_alignment": "uld"}`` for a teacher with another vocabulary); weighted by
      ``logit_weight`` times ``logit_weight_schedule(step, total)``.
    - ``logit_terms``: more logit losses, added to the one above (``logit_weight=0``: these alone), each a
      dict of :data:`LOGIT_TERM_KEYS` (``loss`` required; ``weight`` 1, ``weight_schedule`` ``"constant"``,
      ``temperature`` this config's ``temperature``, ``student_temperature``/``teacher_temperature`` overriding it,
      ``temperature_scheduler`` ``"none"``, ``temperature_scaling`` False, ``options`` {}), e.g.
      ``[{"loss": "kl_div", "temperature": 4.0, "temperature_scaling": True}, {"loss": "tv_distance",
      "weight": 0.5}]``; held as :class:`LogitTerm` s, logged as ``logit<i>_<loss>``.
    - ``hard_label_weight``: the weight of the cross-entropy with the labels (MSE for one logit),
      times ``hard_label_weight_schedule(step, total)``.
    - ``intermediate_matches``: :class:`~knowledge_distill_util.nn.IntermediateMatches` entries, where
      ``layer_S``/``layer_T`` may also be module paths (strings) with ``"feature": "output"``, or ``"all"``
      for a layer-list loss; each weighted by its ``weight`` times ``intermediate_weight_schedule(step, total)``.
    - ``teacher_weights``: one weight per teacher (several teachers: their logits are averaged with these
      weights, equal when None). ``extra_loss_weight``: the weight of the adaptor's ``"losses"``.
    - ``forward_kwargs``: keyword arguments every model (student and teachers) gets in the training forward,
      besides the batch's inputs, e.g. ``{"output_hidden_states": True}`` or, for this package's BERT,
      ``{"output_attention_scores": True, "output_qkv": True}`` (the default adaptor then reads ``attention``
      from the scores and ``query``, ``key``, ``value`` from the projections); evaluation calls the student
      without them.
    """

    temperature: float = 1.0
    student_temperature: Optional[float] = None
    teacher_temperature: Optional[float] = None
    temperature_scheduler: str = "none"
    temperature_scaling: bool = False
    logit_loss: str = "kl_div"
    logit_options: Mapping[str, Any] = field(default_factory=dict)
    logit_weight: float = 1.0
    logit_weight_schedule: str = "constant"
    hard_label_weight: float = 0.0
    hard_label_weight_schedule: str = "constant"
    intermediate_weight_schedule: str = "constant"
    intermediate_matches: Sequence[Mapping[str, Any]] = field(default_factory=list)
    logit_terms: Sequence[Any] = field(default_factory=list)
    teacher_weights: Optional[Sequence[float]] = None
    extra_loss_weight: float = 1.0
    forward_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.temperature = check_temperature("temperature", self.temperature)
        self.student_temperature = _optional_temperature("student_temperature", self.student_temperature)
        self.teacher_temperature = _optional_temperature("teacher_temperature", self.teacher_temperature)
        check_choice("temperature_scheduler", self.temperature_scheduler, TEMPERATURE_SCHEDULERS)
        check_bool("temperature_scaling", self.temperature_scaling)
        self.logit_options = _logit_options(self.logit_loss, self.logit_options)
        for name in ("logit_weight", "hard_label_weight", "extra_loss_weight"):
            setattr(self, name, check_positive_real(name, getattr(self, name), allow_zero=True))
        check_choice("logit_weight_schedule", self.logit_weight_schedule, WEIGHT_SCHEDULES)
        check_choice("hard_label_weight_schedule", self.hard_label_weight_schedule, WEIGHT_SCHEDULES)
        check_choice("intermediate_weight_schedule", self.intermediate_weight_schedule, WEIGHT_SCHEDULES)
        matches = self.intermediate_matches
        if isinstance(matches, (Mapping, str)) or not isinstance(matches, Sequence):
            raise TypeError(f"intermediate_matches must be a list of dicts (one per match), got "
                            f"{type(matches).__name__}")
        self.intermediate_matches = list(matches)
        self.logit_terms = _logit_terms(self.logit_terms, self.temperature)
        if self.teacher_weights is not None:
            if isinstance(self.teacher_weights, (str, Mapping)) or not isinstance(self.teacher_weights, Sequence):
                raise TypeError(f"teacher_weights must be a list of numbers (one per teacher) or None, got "
                                f"{type(self.teacher_weights).__name__}")
            self.teacher_weights = [check_positive_real(f"teacher_weights[{i}]", w, allow_zero=True)
                                    for i, w in enumerate(self.teacher_weights)]
            if not any(self.teacher_weights):
                raise ValueError(f"teacher_weights are all 0 ({self.teacher_weights}); give at least one teacher a "
                                 f"positive weight")
        self.forward_kwargs = _forward_kwargs(self.forward_kwargs)

    @property
    def reads_teacher(self) -> bool:
        """The terms read something from the teacher: its logits (:attr:`reads_logits`) or an intermediate match."""
        return self.reads_logits or bool(self.intermediate_matches)

    @property
    def reads_logits(self) -> bool:
        """A logit loss has a weight: ``logit_weight > 0`` or a ``logit_terms`` entry's ``weight > 0``."""
        return bool(self.weighted_logit_terms())

    def weighted_logit_terms(self) -> List[Tuple[str, LogitTerm, int]]:
        """``(name, term, index)`` of every logit loss with a weight > 0: the one of the top-level fields (named by
        its loss, index 0) then the ``logit_terms`` (``logit<i>_<loss>``, index ``3 + i``); ``index`` is the term's
        entry in :meth:`weight_schedules` ' order."""
        t_s, t_t = self.temperatures
        main = LogitTerm(self.logit_loss, self.logit_weight, self.logit_weight_schedule, t_s, t_t,
                         self.temperature_scheduler, self.temperature_scaling, self.logit_options)
        terms = [(self.logit_loss, main, 0)] if self.logit_weight > 0 else []
        return terms + [(f"logit{i}_{term.loss}", term, 3 + i) for i, term in enumerate(self.logit_terms)
                        if term.weight > 0]

    def weight_schedules(self) -> List[Tuple[float, str]]:
        """``(weight, schedule)`` of the step's weights vector: the logit loss, the hard labels, the intermediate
        matches' factor (weight 1) and each ``logit_terms`` entry."""
        return [(self.logit_weight, self.logit_weight_schedule),
                (self.hard_label_weight, self.hard_label_weight_schedule),
                (1.0, self.intermediate_weight_schedule)] + [(t.weight, t.weight_schedule) for t in self.logit_terms]

    @property
    def temperatures(self):
        """``(student, teacher)`` temperatures: each side's own value, else ``temperature``."""
        s, t = self.student_temperature, self.teacher_temperature
        return (self.temperature if s is None else s), (self.temperature if t is None else t)


@dataclass
class TrainingConfig:
    """How to train.

    - ``output_dir``: holds ``checkpoints/``, ``losses.csv`` (+ ``losses.png``) and the writer lock.
    - ``max_steps`` (optimizer steps) or ``num_epochs`` (passes over the data; the data needs a ``len``).
    - ``seed``: seeds Python's, NumPy's and OneFlow's generators and the data loader's at the start of each
      epoch (from ``(seed, epoch)``) and every dropout generator before each step (eager), so that a resumed run
      draws what the uninterrupted one draws.
    - ``log_every``: a log line (or the progress bar's loss) every that many steps;
      ``checkpoint_every``: a checkpoint every that many steps (and at the end); ``eval_every``:
      evaluate ``eval_data`` every that many steps (0: only at the end).
    - ``resume``: continue from the newest checkpoint of ``output_dir`` (a fresh run without one).
    - ``gradient_accumulation_steps``: batches per optimizer step (each loss divided by it; under ``nn.Graph``
      OneFlow's accumulation of the concatenated batches);
      ``max_grad_norm``: clip the gradients' global L2 norm (None: no clipping).
    - ``learning_rate``: of the default optimizer (AdamW over ``distiller.parameters()``) when ``train``
      gets none; ``warmup_steps`` (linear from 0) then ``lr_schedule`` ``"constant"`` or ``"linear"``
      (decay to 0 at the last step).
    - ``label_key``: the key of the labels in dict batches; ``use_graph``: compile the step with
      ``nn.Graph``; ``progress``: a tqdm bar when stderr is a terminal (else log lines).

    The files and random draws of a run that is one stage of a larger one (what the recipes of
    ``kdu-train`` set; the defaults suit a run of its own):

    - ``stage``: names the run: its loss log is ``<stage>_losses.csv`` / ``.png`` (default ``losses``), its
      log lines and progress bar say ``stage <stage>``; ``checkpoint_dir``: where its checkpoints go
      (default ``<output_dir>/checkpoints``).
    - ``overwrite``: a run without ``resume`` deletes the checkpoints it finds in ``checkpoint_dir``
      (default: it refuses them); ``lock``: lock ``output_dir`` (False: the caller holds its lock).
    - ``seed_epochs``: seed the global generators and the data's at each epoch (False: the data orders
      itself, e.g. with ``set_epoch``, and the global generators are left alone);
      ``reseed_dropout``: seed every dropout generator from ``(seed, step)`` before each eager step.
    - ``progress_every``: seconds between the progress lines when no bar is drawn (stage, step/total,
      loss, samples/s, ETA; 0: none) instead of a line every ``log_every`` steps (None).

    Teacher-output caching (:mod:`~knowledge_distill_util.engine.teacher_cache`; default off):

    - ``cache_teacher_outputs``: ``"off"``, ``"memory"`` (the teacher runs once per row; its outputs the losses
      read are reused for that row afterwards), ``"disk"`` (the same in memory-mapped ``.npy`` files in
      ``output_dir``, deleted when ``train`` ends) or ``"auto"`` (in memory up to 1024 MB of rows, else on disk);
      ``cache_dtype``: ``"float32"`` (losses identical to an uncached run) or ``"float16"`` (half the memory,
      every batch reading the rounded values); ``index_key``: the key of the integer row ids ``[B]`` in dict
      batches (not passed to the models); ``cache_max_mb``: the cache's size limit in MB (None: none).
    """

    output_dir: str
    max_steps: Optional[int] = None
    num_epochs: Optional[int] = None
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 100
    eval_every: int = 0
    resume: bool = False
    gradient_accumulation_steps: int = 1
    max_grad_norm: Optional[float] = None
    learning_rate: float = 1e-3
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    label_key: str = "labels"
    use_graph: bool = False
    progress: bool = True
    stage: Optional[str] = None
    checkpoint_dir: Optional[str] = None
    overwrite: bool = False
    lock: bool = True
    seed_epochs: bool = True
    reseed_dropout: bool = True
    progress_every: Optional[float] = None
    cache_teacher_outputs: str = "off"
    cache_dtype: str = "float32"
    index_key: str = "index"
    cache_max_mb: Optional[float] = 1024.0

    def __post_init__(self):
        if not isinstance(self.output_dir, str) or not self.output_dir:
            raise TypeError(f"TrainingConfig.output_dir must be a non-empty path string, got {self.output_dir!r}")
        if self.max_steps is None and self.num_epochs is None:
            raise ValueError("TrainingConfig needs max_steps or num_epochs, e.g. TrainingConfig(output_dir=..., "
                             "max_steps=1000)")
        for name in ("max_steps", "num_epochs"):
            check_int(f"TrainingConfig.{name}", getattr(self, name), allow_none=True)
        for name in ("log_every", "checkpoint_every", "gradient_accumulation_steps"):
            check_int(f"TrainingConfig.{name}", getattr(self, name))
        for name in ("seed", "eval_every", "warmup_steps"):
            check_int(f"TrainingConfig.{name}", getattr(self, name), minimum=0)
        for name in ("resume", "use_graph", "progress", "overwrite", "lock", "seed_epochs", "reseed_dropout"):
            check_bool(f"TrainingConfig.{name}", getattr(self, name))
        for name in ("stage", "checkpoint_dir"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise TypeError(f"TrainingConfig.{name} must be a non-empty string or None, got {value!r}")
        if self.progress_every is not None:
            self.progress_every = check_positive_real("TrainingConfig.progress_every", self.progress_every,
                                                      allow_zero=True)
        if self.max_grad_norm is not None:
            self.max_grad_norm = check_positive_real("TrainingConfig.max_grad_norm", self.max_grad_norm)
        self.learning_rate = check_positive_real("TrainingConfig.learning_rate", self.learning_rate)
        check_choice("TrainingConfig.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if not isinstance(self.label_key, str) or not self.label_key:
            raise TypeError(f"TrainingConfig.label_key must be a non-empty string, got {self.label_key!r}")
        self._check_cache()

    def _check_cache(self) -> None:
        check_choice("TrainingConfig.cache_teacher_outputs", self.cache_teacher_outputs, CACHE_MODES)
        check_choice("TrainingConfig.cache_dtype", self.cache_dtype, CACHE_DTYPES)
        if not isinstance(self.index_key, str) or not self.index_key:
            raise TypeError(f"TrainingConfig.index_key must be a non-empty string, got {self.index_key!r}")
        if self.index_key == self.label_key:
            raise ValueError(f"TrainingConfig.index_key and label_key are both {self.index_key!r}; the row ids and "
                             f"the labels need keys of their own, e.g. index_key='index'")
        if self.cache_max_mb is not None:
            self.cache_max_mb = check_positive_real("TrainingConfig.cache_max_mb", self.cache_max_mb)

    @property
    def log_name(self) -> str:
        """The loss log's file name without extension: ``losses`` or ``<stage>_losses``."""
        return "losses" if self.stage is None else f"{self.stage}_losses"

    @property
    def checkpoint_root(self) -> str:
        """``checkpoint_dir``, else ``<output_dir>/checkpoints``."""
        import os
        return self.checkpoint_dir or os.path.join(self.output_dir, "checkpoints")
