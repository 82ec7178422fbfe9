"""The compression recipes, each one registered object.

A :class:`Recipe` holds everything about one compression method: its name, its row title in the summary
table, how its student is built, its stages (each an :class:`~.objectives.Objective` and the module it
trains), its default configuration (the original run script's settings), and the labels-only job it is
compared with. What the teacher must provide (logits, hidden states, attentions) and whether its logits
can be computed once before training follow from the objectives. The CLI, the compression plan, the
summary order and the docs table all read :data:`RECIPES`; adding a recipe is one
:func:`register_recipe` call:

>>> from knowledge_distill_util.training.recipes import RECIPES
>>> RECIPES.names()  # doctest: +NORMALIZE_WHITESPACE
['teacher', 'baseline', 'kd', 'bilstm', 'bert_pkd', 'tinybert', 'theseus', 'lstm', 'minilm', 'minilm_v2',
 'distilbert', 'pkd_patience', 'multi_teacher_kd', 'custom', 'tinybert_general', 'distilbert_mlm']
>>> RECIPES.get("bert_pkd").teacher_outputs
('logits', 'reps')
>>> RECIPES.get("minilm").teacher_outputs
('logits', 'scores', 'values')

| recipe | student | stages (objective) |
|---|---|---|
| ``teacher`` | the teacher itself | ``teacher`` (``LABELS``) |
| ``baseline`` | BERT student | ``baseline`` (``LABELS``) |
| ``kd`` | BERT student | ``kd`` (``KD``) |
| ``bilstm`` | (Bi)LSTM student | ``bilstm`` (``BILSTM``) |
| ``bert_pkd`` | BERT student | ``bert_pkd`` (``BERT_PKD``) |
| ``tinybert`` | BERT student | ``intermediate`` (``TINYBERT_INTERMEDIATE``), ``pred`` (``TINYBERT_PRED``); ``--intermediate_distill`` / ``--pred_distill`` run one; ``combined`` (``TINYBERT_COMBINED``) only with ``--stages combined`` |
| ``theseus`` | Theseus model | ``theseus`` (``LABELS`` with module replacement), ``successor`` (``LABELS``, the successor alone) |
| ``lstm`` | (Bi)LSTM, no teacher | ``lstm`` (``LABELS``) |
| ``minilm`` | BERT student, any width, the teacher's head count | ``minilm`` (``MINILM``), ``pred`` (``TINYBERT_PRED``) |
| ``minilm_v2`` | BERT student, any width and head count | ``minilm_v2`` (``MINILM_V2``), ``pred`` (``TINYBERT_PRED``) |
| ``distilbert`` | BERT student from evenly spaced teacher layers | ``distilbert`` (``DISTILBERT``) |
| ``pkd_patience`` | BERT student, at least 2 layers | ``pkd_patience`` (``PKD_PATIENCE``) |
| ``multi_teacher_kd`` | BERT student; ``teacher_models`` | ``multi_teacher_kd`` (``KD`` on the teachers' averaged logits) |
| ``custom`` | BERT student of any width | ``custom`` (``CUSTOM``, :mod:`.custom`) |
| ``tinybert_general`` | BERT student, task-agnostic | ``general`` (``TINYBERT_INTERMEDIATE`` on a text corpus, run by its own :func:`~.general.run_general` on the ``Distiller``) |
"""
from dataclasses import dataclass, field
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple

import oneflow.nn as nn

from ..data import TaskSpec
from ..models import check_student_teacher
from .builders import bert_student, load_student_weights, lstm_student, teacher_for_finetuning
from ..config.schema import TrainConfig
from .objectives import (BERT_PKD, BILSTM, DISTILBERT, KD, LABELS, MINILM, MINILM_V2, PKD_PATIENCE,
                         TINYBERT_COMBINED, TINYBERT_INTERMEDIATE, TINYBERT_PRED, Objective)
from .._registry import Registry
from ..models.theseus import TheseusModel

__all__ = ["StageSpec", "BuildContext", "Recipe", "RECIPES", "register_recipe", "markdown_table"]


def _same(model: nn.Module) -> nn.Module:
    return model


@dataclass(frozen=True)
class StageSpec:
    """One training stage: its name, objective, the module it trains and the module saved after it
    (both taken from the recipe's built model; by default the model itself)."""

    name: str
    objective: Objective
    trains: Callable[[nn.Module], nn.Module] = _same
    exports: Callable[[nn.Module], nn.Module] = _same


@dataclass
class BuildContext:
    """What a student builder gets: the configuration, the task, the teacher (None for recipes that need
    none) and which teacher outputs the recipe reads. ``description`` (where the model comes from) may be set."""

    cfg: TrainConfig
    spec: TaskSpec
    teacher: Optional[nn.Module]
    teacher_outputs: Tuple[str, ...]
    description: str = ""

    @property
    def reads_layers(self) -> bool:
        """The recipe distils hidden states or attentions."""
        return "reps" in self.teacher_outputs or "atts" in self.teacher_outputs


def _all_stages(cfg: TrainConfig) -> Optional[Sequence[str]]:
    return None


@dataclass(frozen=True)
class Recipe:
    """A registered compression recipe (see the module doc)."""

    name: str
    title: str
    build: Callable[[BuildContext], nn.Module]
    stages: Tuple[StageSpec, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    needs_teacher: bool = True
    trains_teacher: bool = False
    compared_with: Optional[str] = "baseline"
    select_stages: Callable[[TrainConfig], Optional[Sequence[str]]] = _all_stages
    summary: str = ""
    #: A recipe that runs itself: ``run(cfg) -> results`` replaces the plan (data, stages, evaluation) of
    #: :func:`~.run.run`; its ``stages`` then describe what it trains (``tinybert_general``).
    run: Optional[Callable[[TrainConfig], Mapping[str, Any]]] = None

    @property
    def objectives(self) -> Tuple[Objective, ...]:
        return tuple(stage.objective for stage in self.stages)

    @property
    def teacher_outputs(self) -> Tuple[str, ...]:
        """Teacher outputs read by any stage, in the order logits, reps, atts, scores, queries, keys, values."""
        wanted = {out for objective in self.objectives for out in objective.teacher_outputs}
        order = ("logits", "reps", "atts", "scores", "queries", "keys", "values")
        return tuple(out for out in order if out in wanted)

    @property
    def reads_layers(self) -> bool:
        return any(objective.reads_layers for objective in self.objectives)

    def planned_stages(self, cfg: TrainConfig) -> List[StageSpec]:
        """The stages this configuration runs, in order."""
        names = getattr(cfg, "stages", None) or self.select_stages(cfg)
        if names is not None:
            unknown = sorted(set(names) - {s.name for s in self.stages})
            if unknown:
                from ..config.schema import ConfigError

                raise ConfigError(f"--stages names {unknown}, which recipe {self.name!r} does not have; its stages: "
                                  f"{', '.join(s.name for s in self.stages)}")
        return [s for s in self.stages if names is None or s.name in names]


RECIPES: Registry[Recipe] = Registry("recipe", sort=False)


def register_recipe(recipe: Recipe) -> Recipe:
    """Add ``recipe`` to :data:`RECIPES` (a duplicate name is a ``ValueError``); returns it."""
    if not recipe.stages:
        raise ValueError(f"recipe {recipe.name!r} has no stages; give at least one StageSpec")
    return RECIPES.register(recipe.name, recipe)


def markdown_table() -> str:
    """The registered recipes as a Markdown table (name, summary row, stages, teacher outputs)."""
    lines = ["| recipe | summary row | stages (objective) | reads from the teacher | description |",
             "|---|---|---|---|---|"]
    for name in RECIPES.names():
        recipe = RECIPES.get(name)
        stages = ", ".join(f"{s.name} ({s.objective.name})" for s in recipe.stages)
        reads = ", ".join(recipe.teacher_outputs) or "-"
        lines.append(f"| `{name}` | {recipe.title} | {stages} | {reads} | {recipe.summary} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- builders
def _teacher(ctx: BuildContext) -> nn.Module:
    model, ctx.description = teacher_for_finetuning(ctx.cfg, ctx.spec)
    return model


def _bert(ctx: BuildContext) -> nn.Module:
    model = bert_student(ctx.cfg, ctx.spec, ctx.teacher, ctx.reads_layers)
    if ctx.reads_layers:  # hidden widths (and head counts, for attentions) must fit the teacher's
        check_student_teacher(model, ctx.teacher, attentions="atts" in ctx.teacher_outputs)
    if ctx.cfg.student_model:
        load_student_weights(model, ctx.cfg.student_model)
    return model


def _lstm(ctx: BuildContext) -> nn.Module:
    model = lstm_student(ctx.cfg, ctx.spec, ctx.teacher)
    if ctx.cfg.student_model:
        load_student_weights(model, ctx.cfg.student_model)
    return model


def _theseus(ctx: BuildContext) -> nn.Module:
    from ..config.schema import ConfigError
    from ..compat.models import load_successor_snapshot

    try:
        model = TheseusModel(ctx.teacher, ctx.cfg.student_num_hidden_layers, ctx.cfg.replace_prob, seed=ctx.cfg.seed)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    load_successor_snapshot(model.successor, ctx.cfg.teacher_model)  # an original init_stu.py snapshot
    return model


def _minilm(ctx: BuildContext) -> nn.Module:
    """A BERT student of any width (no ``fit_dense``: the value relation makes widths independent) with
    the teacher's attention head count (``attention_kl`` compares the heads one to one)."""
    from ..config.schema import ConfigError

    teacher_heads = ctx.teacher.config["num_attention_heads"]
    if ctx.cfg.student_num_attention_heads != teacher_heads:
        raise ConfigError(f"student_num_attention_heads is {ctx.cfg.student_num_attention_heads} but teacher "
                          f"{ctx.cfg.teacher_model} has {teacher_heads} heads; MiniLM compares attention heads one "
                          f"to one: pass --student_num_attention_heads {teacher_heads}")
    model = bert_student(ctx.cfg, ctx.spec, ctx.teacher, False)
    if ctx.cfg.student_model:
        load_student_weights(model, ctx.cfg.student_model)
    return model


def _minilm_v2(ctx: BuildContext) -> nn.Module:
    """A BERT student of any width and head count; ``num_relation_heads`` must divide both hidden sizes and
    ``minilm_teacher_layer`` must name a teacher layer."""
    from ..config.schema import ConfigError

    cfg, tconf = ctx.cfg, ctx.teacher.config
    layers = tconf["num_hidden_layers"]
    if not -layers <= cfg.minilm_teacher_layer < layers:
        raise ConfigError(f"minilm_teacher_layer {cfg.minilm_teacher_layer} is not a layer of teacher "
                          f"{cfg.teacher_model}, which has {layers}; pass a layer from 0 to {layers - 1} (-1: the last)")
    teacher_width = f"teacher {cfg.teacher_model}'s hidden size"
    for who, width in (("student_hidden_size", cfg.student_hidden_size), (teacher_width, tconf["hidden_size"])):
        if width % cfg.num_relation_heads:
            raise ConfigError(f"num_relation_heads {cfg.num_relation_heads} does not divide {who} {width}; pass a "
                              f"--num_relation_heads dividing both {cfg.student_hidden_size} and {tconf['hidden_size']}")
    model = bert_student(cfg, ctx.spec, ctx.teacher, False)
    if cfg.student_model:
        load_student_weights(model, cfg.student_model)
    return model


def _tinybert_stages(cfg: TrainConfig) -> Optional[Sequence[str]]:
    """Both stages, or only the one flagged by ``--intermediate_distill`` / ``--pred_distill``
    (``combined``, the original's one-stage loss, runs when ``--stages combined`` asks for it)."""
    if cfg.intermediate_distill == cfg.pred_distill:
        return ("intermediate", "pred")
    return ("intermediate",) if cfg.intermediate_distill else ("pred",)


def _successor(model: TheseusModel) -> nn.Module:
    return model.successor


_BERT_STUDENT = dict(student_num_hidden_layers=3, student_hidden_size=312, student_intermediate_size=1200,
                     student_num_attention_heads=12, student_init="scratch", num_epochs=3, learning_rate=5e-5,
                     seq_length=128)

register_recipe(Recipe(
    "teacher", "teacher", _teacher, (StageSpec("teacher", LABELS),),
    defaults=dict(teacher_model="auto", num_epochs=3, learning_rate=5e-5, batch_size_per_device=32, seq_length=128),
    needs_teacher=False, trains_teacher=True, compared_with=None,
    summary="fine-tunes the teacher (all-MiniLM-L6-v2, a Hugging Face BERT, or a BERT from scratch) on the labels"))
register_recipe(Recipe(
    "baseline", "labels-only student", _bert, (StageSpec("baseline", LABELS),), defaults=_BERT_STUDENT,
    compared_with=None, summary="the KD student trained on the labels alone: the reference of the table"))
register_recipe(Recipe(
    "kd", "KD", _bert, (StageSpec("kd", KD),), defaults=dict(_BERT_STUDENT, kd_alpha=0.8, temperature=1.0),
    summary="kd_alpha * CE + (1 - kd_alpha) * pred_distill (Hinton et al.)"))
register_recipe(Recipe(
    "bilstm", "Distilled-BiLSTM", _lstm, (StageSpec("bilstm", BILSTM),),
    defaults=dict(kd_alpha=0.7, temperature=1.0, seq_length=32, lstm_embedding_size=300, lstm_hidden_size=300,
                  lstm_intermediate_size=400, lstm_num_layers=1, bidirectional=False, num_epochs=3,
                  learning_rate=1e-3),
    compared_with="bilstm_baseline", summary="(1 - kd_alpha) * CE + kd_alpha * pred_distill into a (Bi)LSTM (Tang et al.)"))
register_recipe(Recipe(
    "bert_pkd", "BERT-PKD", _bert, (StageSpec("bert_pkd", BERT_PKD),),
    defaults=dict(_BERT_STUDENT, kd_alpha=0.2, kd_beta=10.0, temperature=1.0, student_hidden_size=768,
                  student_intermediate_size=3072, student_init="teacher"),
    summary="(1 - kd_alpha) * CE + kd_alpha * pred_distill + kd_beta * layer_distill (Sun et al.)"))
register_recipe(Recipe(
    "tinybert", "TinyBERT", _bert,
    (StageSpec("intermediate", TINYBERT_INTERMEDIATE), StageSpec("pred", TINYBERT_PRED),
     StageSpec("combined", TINYBERT_COMBINED)),
    defaults=dict(_BERT_STUDENT, student_num_hidden_layers=4, attention_output="probs", temperature=1.0,
                  stage2_num_epochs=3, stage2_learning_rate=5e-5),
    select_stages=_tinybert_stages,
    summary="att_distill + layer_distill, then pred_distill (Jiao et al.)"))
register_recipe(Recipe(
    "theseus", "BERT-of-Theseus", _theseus,
    (StageSpec("theseus", LABELS, exports=_successor),
     StageSpec("successor", LABELS, trains=_successor, exports=_successor)),
    defaults=dict(replace_prob=0.5, student_num_hidden_layers=4, num_epochs=3, learning_rate=5e-5,
                  stage2_num_epochs=3, stage2_learning_rate=5e-5, seq_length=128),
    summary="progressive module replacement, then the successor alone on the labels (Xu et al.)"))
register_recipe(Recipe(
    "lstm", "labels-only LSTM (no teacher)", _lstm, (StageSpec("lstm", LABELS),),
    defaults=dict(seq_length=32, lstm_embedding_size=300, lstm_hidden_size=300, lstm_intermediate_size=400,
                  lstm_num_layers=1, bidirectional=False, num_epochs=3, learning_rate=1e-3),
    needs_teacher=False, compared_with=None,
    summary="the (Bi)LSTM on the labels alone, without a teacher (the original's task_lstm.py)"))
register_recipe(Recipe(
    "minilm", "MiniLM", _minilm, (StageSpec("minilm", MINILM), StageSpec("pred", TINYBERT_PRED)),
    defaults=dict(_BERT_STUDENT, temperature=1.0, stage2_num_epochs=3, stage2_learning_rate=5e-5),
    summary="attention_kl of the last layers' attention scores + relation_kl of their values (Wang et al.), "
            "then pred_distill; the student may be narrower than the teacher"))
register_recipe(Recipe(
    "minilm_v2", "MiniLMv2", _minilm_v2, (StageSpec("minilm_v2", MINILM_V2), StageSpec("pred", TINYBERT_PRED)),
    defaults=dict(_BERT_STUDENT, num_relation_heads=12, minilm_teacher_layer=-1, temperature=1.0,
                  stage2_num_epochs=3, stage2_learning_rate=5e-5),
    summary="relation_kl of queries, keys and values (student's last layer, teacher's minilm_teacher_layer, "
            "num_relation_heads; Wang et al.), then pred_distill; any student width and head count"))



# ------------------------------------------------------- the recipes of the PyTorch toolkits (issue 20)
def evenly_spaced_layers(student_layers: int, teacher_layers: int) -> List[int]:
    """DistilBERT's initialisation: ``student_layers`` teacher layers evenly spaced from the first to the last
    (``round(i * (Lt - 1) / (Ls - 1))``), every other layer for half the depth.

    >>> evenly_spaced_layers(6, 12), evenly_spaced_layers(2, 6), evenly_spaced_layers(1, 2)
    ([0, 2, 4, 7, 9, 11], [0, 5], [0])
    """
    if student_layers == 1:
        return [0]
    return [int(i * (teacher_layers - 1) / (student_layers - 1) + 0.5) for i in range(student_layers)]


def _distilbert(ctx: BuildContext) -> nn.Module:
    """The BERT student initialised, with ``student_init 'teacher'`` and no ``student_init_layers``, from
    teacher layers :func:`evenly_spaced_layers` (DistilBERT's 0, 2, 4, 7, 9, 11 of 12)."""
    import dataclasses

    cfg = ctx.cfg
    if cfg.student_init == "teacher" and cfg.student_init_layers is None:
        layers = evenly_spaced_layers(cfg.student_num_hidden_layers, ctx.teacher.config["num_hidden_layers"])
        ctx = dataclasses.replace(ctx, cfg=dataclasses.replace(cfg, student_init_layers=layers))
    return _bert(ctx)


def _pkd_patience(ctx: BuildContext) -> nn.Module:
    """The BERT student of BERT-PKD: at least 2 layers (the patience loss reads the intermediate ones) and, for
    ``pkd_strategy 'last'``, no deeper than the teacher."""
    from ..config.schema import ConfigError

    cfg, layers = ctx.cfg, ctx.teacher.config["num_hidden_layers"]
    if cfg.student_num_hidden_layers < 2:
        raise ConfigError(f"pkd_patience matches the student's intermediate layers (all but its last) and "
                          f"student_num_hidden_layers is {cfg.student_num_hidden_layers}; pass at least 2")
    if cfg.student_num_hidden_layers > layers:
        raise ConfigError(f"student_num_hidden_layers {cfg.student_num_hidden_layers} exceeds teacher "
                          f"{cfg.teacher_model}'s {layers} layers; pass at most {layers}")
    return _bert(ctx)


def _custom(ctx: BuildContext) -> nn.Module:
    """A BERT student of any width, with the configuration's logit terms and intermediate matches checked against
    both models."""
    from ..config.schema import ConfigError
    from .custom import check_logit_terms, check_match_losses, resolve_matches

    cfg = ctx.cfg
    terms = check_logit_terms(cfg.logit_terms, cfg.temperature)
    bert = bert_student(cfg, ctx.spec, ctx.teacher, False)
    matches = resolve_matches(cfg.intermediate_matches, bert.config, ctx.teacher.config)
    if not terms and not matches and not cfg.hard_label_weight > 0:
        raise ConfigError("recipe 'custom' has nothing to train: no logit_terms, no intermediate_matches and "
                          "hard_label_weight 0; give at least one of them in the config file")
    check_match_losses(matches)
    if cfg.student_model:
        load_student_weights(bert, cfg.student_model)
    return bert


def _custom_stage() -> StageSpec:
    from .custom import CUSTOM

    return StageSpec("custom", CUSTOM)


_WIDE_STUDENT = dict(_BERT_STUDENT, student_num_hidden_layers=6, student_hidden_size=768,
                     student_intermediate_size=3072, student_init="teacher")

register_recipe(Recipe(
    "distilbert", "DistilBERT", _distilbert, (StageSpec("distilbert", DISTILBERT),),
    defaults=dict(_WIDE_STUDENT, temperature=2.0, logit_weight=5.0, hidden_weight=1.0, hard_label_weight=2.0),
    summary="logit_weight * kl_div * T^2 + hard_label_weight * CE + hidden_weight * hidden_cosine of the last "
            "hidden states (Sanh et al.); student from evenly spaced teacher layers"))
register_recipe(Recipe(
    "pkd_patience", "BERT-PKD (published)", _pkd_patience, (StageSpec("pkd_patience", PKD_PATIENCE),),
    defaults=dict(_WIDE_STUDENT, kd_alpha=0.7, kd_beta=500.0, temperature=10.0, learning_rate=1e-5,
                  pkd_strategy="skip"),
    summary="(1 - kd_alpha) * CE + kd_alpha * soft CE at T + kd_beta * pkd_loss of the normalised [CLS] vectors, "
            "pkd_strategy skip or last (Sun et al., as published)"))
register_recipe(Recipe(
    "multi_teacher_kd", "multi-teacher KD", _bert, (StageSpec("multi_teacher_kd", KD),),
    defaults=dict(_BERT_STUDENT, kd_alpha=0.8, temperature=1.0),
    summary="kd_alpha * CE + (1 - kd_alpha) * pred_distill against the weighted average of several teachers' "
            "logits (teacher_models, teacher_weights)"))
register_recipe(Recipe(
    "custom", "custom", _custom, (_custom_stage(),),
    defaults=dict(_BERT_STUDENT, logit_terms=[{"loss": "kl_div", "weight": 1.0, "temperature": 1.0}],
                  hard_label_weight=1.0),
    summary="read from the config: logit_terms, intermediate_matches (TextBrewer's format) and "
            "hard_label_weight"))
