"""Per-step dropout seeds, shared by the engine's loop and the recipes' trainer: with ``reseed`` before
every step the dropout masks of step ``s`` depend only on ``(seed, s)``, so a resumed run draws the masks
the uninterrupted run would have drawn."""
from typing import List

import numpy as np
import oneflow.nn as nn

__all__ = ["dropout_generators", "reseed"]


def dropout_generators(model: nn.Module) -> List:
    """The generator of every dropout module of ``model`` (OneFlow gives each ``nn.Dropout`` its own)."""
    return [module.generator for module in model.modules() if isinstance(module, nn.Dropout)]


def reseed(generators: List, seed: int, step: int) -> None:
    """Seed generator ``i`` from ``(seed, step, i)``: the masks of a step then depend on nothing else."""
    for index, generator in enumerate(generators):
        generator.manual_seed(int(np.random.SeedSequence([seed, step, index]).generate_state(1)[0]))
