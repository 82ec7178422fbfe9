"""Training: recipes as registered objects, and everything that runs them.

- :mod:`.config`: one flat typed configuration (jsonargparse: flags, ``--config`` files, ``--quick``).
- :mod:`.objectives`: the loss of each recipe (KD, Distilled-BiLSTM, BERT-PKD, TinyBERT).
- :mod:`.recipes`: :class:`Recipe`, :data:`RECIPES`, :func:`register_recipe` and the built-in recipes.
- :mod:`.builders`: teachers and students; :mod:`.theseus`: BERT-of-Theseus module replacement.
- :mod:`.artifacts`: a trained model on disk; :mod:`.plan`: everything a run needs, checked first.
- :mod:`.trainer`: the loop; :mod:`.optim`, :mod:`.loss_log`, :mod:`.checkpoint`: its parts.
- :mod:`.run`: ``kdu-train``; :mod:`.compression`: ``kdu-compress``; :mod:`.evaluate`, :mod:`.summary`.
"""
from .config import ConfigError, TrainConfig, parse_config
from .objectives import Objective
from .recipes import RECIPES, BuildContext, Recipe, StageSpec, register_recipe
from .registry import Registry

__all__ = ["TrainConfig", "ConfigError", "parse_config", "Objective", "Recipe", "StageSpec", "BuildContext",
           "RECIPES", "register_recipe", "Registry"]
