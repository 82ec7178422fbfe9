"""Training: recipes as registered objects, and everything that runs them.

- :mod:`knowledge_distill_util.config`: one flat typed configuration (jsonargparse: flags, ``--config`` files,
  ``--quick``); it imports no recipe: :func:`parse_config` below passes it :data:`RECIPES`.
- :mod:`.objectives`: the loss of each recipe (KD, Distilled-BiLSTM, BERT-PKD, TinyBERT, MiniLM, DistilBERT), its
  formulas in :mod:`.kd_objectives` and :mod:`.attention_objectives`, its schedules in :mod:`.objective_schedules`.
- :mod:`.recipes`: :class:`Recipe`, :data:`RECIPES`, :func:`register_recipe` and the built-in recipes
  (``tinybert_general`` is registered by :mod:`.general` and ``distilbert_mlm`` by :mod:`.masked_lm`, which
  run them).
- :mod:`.builders`: teachers and students (BERT-of-Theseus's model: :mod:`knowledge_distill_util.models.theseus`).
- :mod:`.artifacts`: a trained model on disk; :mod:`.plan`: everything a run needs, checked first.
- :mod:`.trainer`: each recipe stage as a configuration of the engine's
  :class:`~knowledge_distill_util.engine.Distiller`, whose loop trains every recipe; its batches:
  :mod:`.feature_batches`.
- :mod:`.run`: ``kdu-train``'s run (:mod:`.run_dir`: its directory's checks); :mod:`.compression`:
  ``kdu-compress``'s run (:mod:`.job_progress`: its jobs' progress); their command lines are
  :mod:`knowledge_distill_util.cli.train` and :mod:`knowledge_distill_util.cli.compress`; :mod:`.summary` (a
  model's predictions and metrics: :mod:`knowledge_distill_util.engine.evaluate`).
"""
from typing import Optional, Sequence

from ..config import schema as _config
from ..config.schema import ConfigError, TrainConfig
from .objectives import Objective
from .recipes import RECIPES, BuildContext, Recipe, StageSpec, register_recipe
from .._registry import Registry
from . import general  # noqa: E402,F401  (registers the recipe tinybert_general)
from . import masked_lm  # noqa: E402,F401  (registers the recipe distilbert_mlm)

__all__ = ["TrainConfig", "ConfigError", "parse_config", "Objective", "Recipe", "StageSpec", "BuildContext",
           "RECIPES", "register_recipe", "Registry"]


def parse_config(argv: Sequence[str], recipe: Optional[str] = None, prog: Optional[str] = None,
                 description: str = "") -> TrainConfig:
    """:func:`knowledge_distill_util.config.schema.parse_config` with the registered recipes (:data:`RECIPES`): the
    :class:`TrainConfig` of ``argv`` for ``recipe`` (or the one named by ``--recipe``).

    >>> parse_config(["--kd_alpha", "0.5"], recipe="kd").kd_alpha
    0.5
    """
    return _config.parse_config(argv, recipe, prog, description, recipes=RECIPES)
