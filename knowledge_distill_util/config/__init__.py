"""The configuration of ``kdu-train``: one schema that imports no recipe.

- :mod:`.schema`: :class:`~.schema.TrainConfig`, one flat typed dataclass of every key, parsed with jsonargparse
  from flags, ``--config`` files and ``--quick`` (:func:`~.schema.parse_config`, which takes the registered recipes
  as an argument: :func:`knowledge_distill_util.training.parse_config` passes them).
- :mod:`.fields`: the types of its fields (``Literal``, ``PositiveInt``, ``ClosedUnitInterval``, ...), each with its
  rule and the sentence a user sees.
"""
from .._errors import ConfigError
from .schema import TrainConfig

__all__ = ["TrainConfig", "ConfigError"]
