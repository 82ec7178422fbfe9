"""Upper bounds of the models' size fields, so that a typo in a ``config.json`` or ``model_config.json``
(``max_position_embeddings`` 1e12) is one sentence instead of a C++ ``allocate failed`` abort.

Every size must be an integer (``bool`` refused) ``>= 1`` and at most :data:`SIZE_LIMITS` (generous for real
models: BERT-large has hidden 1024, 24 layers, 512 positions; multilingual vocabularies ~250,000), and the
weights (float32, ``4 * parameters`` bytes) must fit in this machine's memory. ``KDU_ALLOW_LARGE_MODELS=1``
lifts both bounds (the type and ``>= 1`` checks stay).
"""
import os
from typing import Optional

from .._checks import check_int
from .._env import env_flag

__all__ = ["SIZE_LIMITS", "ALLOW_LARGE_MODELS_ENV", "check_size", "check_parameter_memory", "physical_memory"]

#: Environment variable that lifts the bounds of this module (``1`` to allow).
ALLOW_LARGE_MODELS_ENV = "KDU_ALLOW_LARGE_MODELS"

#: key -> largest accepted value.
SIZE_LIMITS = {
    "vocab_size": 1_000_000,
    "hidden_size": 65_536,
    "intermediate_size": 262_144,
    "embedding_size": 65_536,
    "fit_size": 65_536,
    "num_hidden_layers": 1_024,
    "num_attention_heads": 1_024,
    "max_position_embeddings": 65_536,
    "seq_length": 65_536,
    "type_vocab_size": 1_024,
    "label_num": 1_000_000,
}

_FIX = f"fix the value, or set {ALLOW_LARGE_MODELS_ENV}=1 if the model is really that large"


def _allowed() -> bool:
    return env_flag(ALLOW_LARGE_MODELS_ENV)


def check_size(name: str, value, source: Optional[str] = None) -> int:
    """``value`` as an ``int`` in ``[1, SIZE_LIMITS[name]]``; ``TypeError`` (not an integer, or a bool) or
    ``ValueError`` (out of range) naming ``name`` (and ``source``, a file), the value and the fix.

    >>> check_size("max_position_embeddings", 10 ** 12, source="config.json")
    Traceback (most recent call last):
    ...
    ValueError: max_position_embeddings in config.json must be at most 65536, got 1000000000000; fix the value, or set KDU_ALLOW_LARGE_MODELS=1 if the model is really that large
    """
    value = check_int(name, value, source=source)
    limit = SIZE_LIMITS.get(name)
    if limit is not None and value > limit and not _allowed():
        where = f" in {source}" if source else ""
        raise ValueError(f"{name}{where} must be at most {limit}, got {value}; {_FIX}")
    return value


def physical_memory() -> Optional[int]:
    """Bytes of memory of this machine (None if the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_parameter_memory(parameters: int, what: str, source: Optional[str] = None) -> None:
    """Refuse a model whose float32 weights (``4 * parameters`` bytes) exceed this machine's memory."""
    memory = physical_memory()
    if memory is None or 4 * parameters <= memory or _allowed():
        return
    where = f" of {source}" if source else ""
    raise ValueError(f"the {what}{where} would have {parameters:,} parameters ({4 * parameters / 2 ** 30:.1f} GiB "
                     f"of float32 weights), more than this machine's {memory / 2 ** 30:.1f} GiB of memory; {_FIX}")
