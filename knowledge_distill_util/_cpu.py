"""The kernel set of OneFlow's bundled OpenBLAS, chosen before OneFlow is imported.

OneFlow 0.9 links OpenBLAS 0.3.3 (2018) into its library for every float32 matrix product on the CPU. That
OpenBLAS picks its kernels from the CPU's model number once, when the library loads (``import oneflow``),
and does not know newer CPUs: on an AMD EPYC of the Zen 4 generation it falls back to its ``Barcelona``
kernels (SSE only), about 3x slower per matrix product than its AVX2 kernels. OpenBLAS reads the
environment variable ``OPENBLAS_CORETYPE`` at that moment to override its choice.

:func:`choose_openblas_coretype` maps ``/proc/cpuinfo`` (vendor, flags) to a kernel set of that library:

- a CPU with ``avx2`` and ``fma``: ``Zen`` on AMD (and Hygon), ``SkylakeX`` on Intel with ``avx512f``
  (OpenBLAS 0.3.3 as OneFlow 0.9 builds it has no AVX-512 kernels and runs its ``Haswell`` ones then),
  ``Haswell`` on other CPUs;
- anything else (no AVX2/FMA, not x86, no ``/proc/cpuinfo``): ``None``, the library's own choice.

:func:`set_openblas_coretype` runs in the package's ``__init__`` right before its ``import oneflow``: when
``OPENBLAS_CORETYPE`` is unset (or empty) it sets ``os.environ["OPENBLAS_CORETYPE"]`` to that choice and
leaves it set, so the processes a run starts (``kdu-compress``'s students, the launcher's ranks, data
workers) load their OpenBLAS with the same kernels. Other OpenBLAS copies loaded later (NumPy's) read the
variable too: every named kernel set runs on the CPU whose flags chose it. It keeps a value the user set,
does nothing with ``KDU_OPENBLAS_CORETYPE=keep`` (the opt-out) or when OneFlow is already imported (then
it is too late: a debug note), and logs its choice once at INFO level on the ``knowledge_distill_util._cpu``
logger. ``OPENBLAS_VERBOSE=2`` makes OpenBLAS print the kernels it loads (``Core: Zen``).

The kernel sets give the same values to float32 rounding (they sum the products in another order):
measured in docs/performance.md, section "CPU kernels and threads". OneFlow's OpenBLAS is built without
threads (``openblas_set_num_threads`` is absent from the library, ``goto_set_num_threads`` is empty), so
``OPENBLAS_NUM_THREADS`` changes nothing.
"""
import logging
import os
import sys
from typing import Mapping, MutableMapping, Optional

from ._env import env_choice

__all__ = ["choose_openblas_coretype", "set_openblas_coretype", "oneflow_openblas_core", "OPT_OUT_VARIABLE"]

logger = logging.getLogger(__name__)

#: ``KDU_OPENBLAS_CORETYPE=keep``: leave ``OPENBLAS_CORETYPE`` alone (OpenBLAS's own choice); ``auto`` or
#: unset: the choice of :func:`choose_openblas_coretype`.
OPT_OUT_VARIABLE = "KDU_OPENBLAS_CORETYPE"
_CHOICES = ("auto", "keep")
_AMD_VENDORS = ("AuthenticAMD", "HygonGenuine")


def _first_cpu(cpuinfo: str) -> Mapping[str, str]:
    """The ``key: value`` fields of the first processor block of a ``/proc/cpuinfo`` text."""
    fields = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def choose_openblas_coretype(cpuinfo: str) -> Optional[str]:
    """The ``OPENBLAS_CORETYPE`` for the CPU described by ``cpuinfo`` (the text of ``/proc/cpuinfo``), or
    None to leave OpenBLAS's own choice (see the module doc for the rule).

    >>> choose_openblas_coretype("vendor_id\\t: AuthenticAMD\\nflags\\t\\t: sse2 avx fma avx2 avx512f\\n")
    'Zen'
    >>> choose_openblas_coretype("vendor_id\\t: GenuineIntel\\nflags\\t\\t: sse2 avx fma avx2\\n")
    'Haswell'
    >>> print(choose_openblas_coretype("vendor_id\\t: GenuineIntel\\nflags\\t\\t: sse2 sse4_2 avx\\n"))
    None
    """
    fields = _first_cpu(cpuinfo)
    flags = set(fields.get("flags", "").split())
    if not {"avx2", "fma"} <= flags:
        return None
    vendor = fields.get("vendor_id", "")
    if vendor in _AMD_VENDORS:
        return "Zen"
    if vendor == "GenuineIntel" and "avx512f" in flags:
        return "SkylakeX"
    return "Haswell"


def _read_cpuinfo(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            return stream.read()
    except OSError:
        return ""


def _opt_out(environ: Mapping[str, str]) -> bool:
    try:
        return env_choice(OPT_OUT_VARIABLE, _CHOICES, "auto", environ) == "keep"
    except ValueError as error:  # at import time: one sentence, as _startup does for KDU_START_TIMEOUT
        sys.stderr.write(f"error: {error}\n")
        sys.exit(2)


def set_openblas_coretype(environ: Optional[MutableMapping[str, str]] = None, cpuinfo_path: str = "/proc/cpuinfo",
                          modules: Optional[Mapping[str, object]] = None) -> Optional[str]:
    """Before the first ``import oneflow``: set ``OPENBLAS_CORETYPE`` in ``environ`` (default ``os.environ``)
    as the module doc says; returns the value set, or None when nothing was set. An unknown
    ``KDU_OPENBLAS_CORETYPE`` ends the process with one sentence (exit 2), as the other start-up variables."""
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if _opt_out(environ):
        logger.debug("%s=keep: OPENBLAS_CORETYPE left as it is", OPT_OUT_VARIABLE)
        return None
    user = environ.get("OPENBLAS_CORETYPE", "").strip()
    if user:
        logger.debug("OPENBLAS_CORETYPE=%s set by the user: kept", user)
        return None
    if "oneflow" in modules:
        logger.debug("OneFlow was imported before knowledge_distill_util: its OpenBLAS chose its kernels itself "
                     "(import knowledge_distill_util first, or set OPENBLAS_CORETYPE, to choose them)")
        return None
    choice = choose_openblas_coretype(_read_cpuinfo(cpuinfo_path))
    if choice is None:
        logger.debug("no OPENBLAS_CORETYPE for this CPU (no AVX2 and FMA in %s): OpenBLAS chooses", cpuinfo_path)
        return None
    environ["OPENBLAS_CORETYPE"] = choice
    logger.info("OPENBLAS_CORETYPE=%s set for OneFlow's bundled OpenBLAS (from %s; %s=keep leaves it unset)",
                choice, cpuinfo_path, OPT_OUT_VARIABLE)
    return choice


def oneflow_openblas_core() -> Optional[str]:
    """The kernel set OneFlow's loaded OpenBLAS uses (``gotoblas_corename()``, e.g. ``"Zen"``), or None when
    OneFlow is not imported or its library does not export the function."""
    import ctypes

    if "oneflow" not in sys.modules:
        return None
    try:
        with open("/proc/self/maps", encoding="utf-8") as stream:
            paths = {line.split()[-1] for line in stream if "liboneflow" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            function = ctypes.CDLL(path).gotoblas_corename
        except (OSError, AttributeError):
            continue
        function.restype = ctypes.c_char_p
        name = function()
        return name.decode() if name else None
    return None
