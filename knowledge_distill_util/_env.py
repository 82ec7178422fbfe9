"""The package's environment variables (``KDU_*``), read and checked in one place.

Every reader returns the default when the variable is unset or empty, else the parsed value; a value that
does not parse, is not finite or is out of range raises ``ValueError`` with one sentence naming the
variable, the value and the fix. Importing this module imports nothing heavy (``_startup`` uses it before
OneFlow is imported).

Variables (documented in docs/recipes.md and docs/models.md):

- ``KDU_DIST_TIMEOUT`` (seconds, default 60, in (0, 86400]): the multi-process watchdog's wait.
- ``KDU_START_TIMEOUT`` (seconds, default 300, in (0, 86400]): how long a multi-process job may take to start.
- ``KDU_WATCHDOG_PORT``, ``KDU_MASTER_PORT`` (TCP ports, 1-65535).
- ``KDU_NODE_RANK`` (an integer in ``[0, --num_nodes)``): this node's position in ``--node_ips``.
- ``KDU_ALLOW_LARGE_MODELS`` (``0``/``1``, default 0): lift the model size bounds (:mod:`.models._sizes`).
- ``KDU_NPROC`` (a positive integer or ``auto``, default auto): the default of ``kdu-train --nproc``, read by
  :mod:`.engine.launch` (docs/recipes.md, data-parallel training).
- ``KDU_OPENBLAS_CORETYPE`` (``auto``/``keep``, default auto): ``keep`` leaves ``OPENBLAS_CORETYPE`` to the
  user and OpenBLAS (:mod:`._cpu`, docs/performance.md).
"""
import math
import os
from typing import Mapping, Optional, Sequence

__all__ = ["env_float", "env_int", "env_port", "env_flag", "env_choice", "MAX_TIMEOUT_S"]

#: The largest timeout accepted (one day): a larger one is as good as none, and a hung job would wait it out.
MAX_TIMEOUT_S = 86400.0


def _raw(name: str, environ: Optional[Mapping[str, str]]) -> str:
    return (os.environ if environ is None else environ).get(name, "").strip()


def env_float(name: str, default: float, lo: float, hi: float, unit: str = "seconds",
              environ: Optional[Mapping[str, str]] = None) -> float:
    """``float(os.environ[name])`` in ``(lo, hi]`` (finite), or ``default`` when unset or empty.

    >>> env_float("KDU_DIST_TIMEOUT", 60.0, 0.0, 86400.0, environ={"KDU_DIST_TIMEOUT": "nan"})
    Traceback (most recent call last):
    ...
    ValueError: environment variable KDU_DIST_TIMEOUT='nan' must be a finite number of seconds in (0, 86400]; set it to such a number or unset it for the default 60
    """
    raw = _raw(name, environ)
    if not raw:
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and lo < value <= hi):
        raise ValueError(f"environment variable {name}={raw!r} must be a finite number of {unit} in ({lo:g}, {hi:g}]; "
                         f"set it to such a number or unset it for the default {default:g}")
    return value


def env_int(name: str, default: Optional[int], lo: int, hi: int, what: str = "an integer",
            environ: Optional[Mapping[str, str]] = None) -> Optional[int]:
    """``int(os.environ[name])`` in ``[lo, hi]``, or ``default`` when unset or empty.

    >>> env_int("KDU_NODE_RANK", None, 0, 1, environ={"KDU_NODE_RANK": "xyz"})
    Traceback (most recent call last):
    ...
    ValueError: environment variable KDU_NODE_RANK='xyz' must be an integer in [0, 1]; set it to such a number or unset it
    """
    raw = _raw(name, environ)
    if not raw:
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        tail = "" if default is None else f" for the default {default}"
        raise ValueError(f"environment variable {name}={raw!r} must be {what} in [{lo}, {hi}]; set it to such a "
                         f"number or unset it{tail}")
    return value


def env_port(name: str, default: Optional[int], environ: Optional[Mapping[str, str]] = None) -> Optional[int]:
    """A TCP port (1-65535) from ``name``, or ``default`` when unset or empty."""
    return env_int(name, default, 1, 65535, "a TCP port number", environ)


def env_flag(name: str, environ: Optional[Mapping[str, str]] = None) -> bool:
    """``True`` for ``1``/``true``/``yes``, ``False`` when unset, empty, ``0``/``false``/``no``."""
    raw = _raw(name, environ)
    if raw.lower() in ("", "0", "false", "no"):
        return False
    if raw.lower() in ("1", "true", "yes"):
        return True
    raise ValueError(f"environment variable {name}={raw!r} must be 1 or 0; set it to 1 to enable, or unset it")


def env_choice(name: str, choices: Sequence[str], default: str, environ: Optional[Mapping[str, str]] = None) -> str:
    """One of ``choices`` (compared in lower case), or ``default`` when unset or empty.

    >>> env_choice("KDU_OPENBLAS_CORETYPE", ("auto", "keep"), "auto", environ={"KDU_OPENBLAS_CORETYPE": "zen"})
    Traceback (most recent call last):
    ...
    ValueError: environment variable KDU_OPENBLAS_CORETYPE='zen' must be one of auto, keep; set it to one of them or unset it for the default auto
    """
    raw = _raw(name, environ)
    if not raw:
        return default
    if raw.lower() not in choices:
        raise ValueError(f"environment variable {name}={raw!r} must be one of {', '.join(choices)}; set it to one of "
                         f"them or unset it for the default {default}")
    return raw.lower()
