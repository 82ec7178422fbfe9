"""Training recipes for the compression scripts: configuration, loss recipes, the training loop,
checkpoints, evaluation and the run summary.

- :mod:`.config`: one flat typed configuration (defaults < ``--config FILE`` < flags).
- :mod:`.recipes`: the loss of each recipe (KD, Distilled-BiLSTM, BERT-PKD, TinyBERT) and a registry.
- :mod:`.theseus`: BERT-of-Theseus module replacement.
- :mod:`.trainer`: the training loop (eager or ``nn.Graph``), loss logs and plots.
- :mod:`.checkpoint`: atomic checkpoints and ``--resume``.
"""
from .config import TrainConfig, resolve_config
from .recipes import RECIPES, Recipe, Registry

__all__ = ["TrainConfig", "resolve_config", "RECIPES", "Recipe", "Registry"]
