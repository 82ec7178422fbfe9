"""A name -> loss-function registry, so that recipes and users pick losses from configuration.

The built-in names are the function names of :mod:`knowledge_distill_util.functional`'s losses. A name
can be registered once (a second registration is refused, as in torchdistill); a failed lookup lists
the known names and suggests the closest. The table is a :class:`~knowledge_distill_util._registry.Registry`,
the class the training recipes use too.

Example::

    >>> import oneflow as flow
    >>> from knowledge_distill_util import available_losses, get_loss, register_loss
    >>> "kl_div" in available_losses()
    True
    >>> get_loss("hidden_mse")(flow.ones(1, 2, 3), flow.zeros(1, 2, 3)).item()
    1.0
    >>> @register_loss("doctest_l1")
    ... def l1(student, teacher, *, mask=None):
    ...     return (student - teacher.detach()).abs().mean()
    >>> get_loss("doctest_l1") is l1
    True
"""
import inspect
from typing import Callable, List, Sequence

from . import functional
from ._registry import Registry

__all__ = ["register_loss", "get_loss", "available_losses", "BUILTIN_LOSSES"]

LossFunction = Callable[..., object]

#: The losses registered when the package is imported, under their function names.
BUILTIN_LOSSES = (
    functional.soft_cross_entropy,
    functional.kl_div,
    functional.hidden_mse,
    functional.hidden_cosine,
    functional.pkd_loss,
    functional.attention_mse,
    functional.attention_kl,
    functional.relation_kl,
    functional.fsp_loss,
    functional.mmd_loss,
    functional.reverse_kl,
    functional.js_divergence,
    functional.skew_kl,
    functional.skew_reverse_kl,
    functional.tv_distance,
    functional.uld_loss,
)

_LOSSES: Registry[LossFunction] = Registry("loss")


def takes_temperatures(loss: LossFunction) -> bool:
    """``loss`` takes ``student_temperature`` (a divergence of softened distributions, a logit loss)."""
    return "student_temperature" in inspect.signature(loss).parameters


def keyword_options(loss: LossFunction, exclude: Sequence[str] = ()) -> List[str]:
    """The options of ``loss``: its keyword-only parameter names, in order, but those in ``exclude``."""
    return [p.name for p in inspect.signature(loss).parameters.values()
            if p.kind == inspect.Parameter.KEYWORD_ONLY and p.name not in exclude]


def register_loss(name: str) -> Callable[[LossFunction], LossFunction]:
    """Decorator registering ``fn(student, teacher, *, mask=None, ...)`` under ``name``.

    Raises ``ValueError`` when ``name`` is taken (nothing is replaced) and ``TypeError`` when ``name``
    is not a non-empty string or the decorated object is not callable.
    """
    _LOSSES.check_free(name)

    def decorator(fn: LossFunction) -> LossFunction:
        if not callable(fn):
            raise TypeError(f"register_loss({name!r}) decorates a callable, got {type(fn).__name__}")
        return _LOSSES.register(name, fn)

    return decorator


def get_loss(name: str) -> LossFunction:
    """The loss function registered under ``name``; ``ValueError`` listing the known names (and the closest)
    otherwise, ``TypeError`` when ``name`` is not a non-empty string."""
    return _LOSSES.get(name)


def available_losses() -> List[str]:
    """The registered names, sorted."""
    return _LOSSES.names()


for _fn in BUILTIN_LOSSES:
    register_loss(_fn.__name__)(_fn)
del _fn
