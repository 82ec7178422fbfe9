"""The package's error types that several layers raise. Imports nothing from the package.

:class:`ConfigError` is raised by the training package (configuration, data, checkpoints) and by the
engine's checkpoint and lock modules; ``knowledge_distill_util.training`` re-exports it.
"""

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration, data or checkpoint problem found before training (one clear sentence)."""
