"""One name -> object table for the package's registries: the losses (:mod:`knowledge_distill_util.registry`)
and the training recipes (:data:`knowledge_distill_util.training.RECIPES`). Imports nothing from the package.

A name is a non-empty string (``TypeError`` otherwise), registered once (``ValueError`` for a second
registration; nothing is replaced); a failed lookup is a ``ValueError`` listing the known names, with the
closest one suggested.

>>> r = Registry("loss")
>>> r.register("kl_div", 1)
1
>>> r.get("kl_dv")
Traceback (most recent call last):
...
ValueError: unknown loss 'kl_dv'; known losses: kl_div; did you mean 'kl_div'?
"""
import difflib
from typing import Dict, Generic, List, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object table that refuses duplicates and lists the known names on a failed lookup.

    ``what`` names an entry in messages (``"loss"``, ``"recipe"``); :meth:`names` is sorted, or in
    registration order with ``sort=False``.
    """

    def __init__(self, what: str, sort: bool = True):
        self.what = what
        self.sort = sort
        self._items: Dict[str, T] = {}

    def check_name(self, name) -> str:
        """``name`` when it is a non-empty string; ``TypeError`` otherwise."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.what} name must be a non-empty string, got {name!r} ({type(name).__name__})")
        return name

    def check_free(self, name) -> str:
        """``name`` when it is a valid name not registered yet; ``ValueError`` naming what holds it otherwise."""
        self.check_name(name)
        if name in self._items:
            existing = self._items[name]
            qualname = getattr(existing, "__qualname__", None)
            where = f" ({getattr(existing, '__module__', '?')}.{qualname})" if qualname else ""
            raise ValueError(f"a {self.what} named {name!r} is already registered{where}; register yours under "
                             f"another name")
        return name

    def register(self, name: str, item: T) -> T:
        """Register ``item`` under ``name`` (see :meth:`check_free`); returns ``item``."""
        self._items[self.check_free(name)] = item
        return item

    def get(self, name: str) -> T:
        """The entry registered under ``name``; ``ValueError`` listing the known names otherwise."""
        self.check_name(name)
        if name not in self._items:
            plural = self.what + ("es" if self.what.endswith("s") else "s")
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown {self.what} {name!r}; known {plural}: {', '.join(self.names())}{hint}")
        return self._items[name]

    def names(self) -> List[str]:
        """The registered names, sorted (or in registration order with ``sort=False``)."""
        return sorted(self._items) if self.sort else list(self._items)

    def unregister(self, name: str) -> T:
        """Remove and return ``name`` (for plug-ins and tests that register temporarily)."""
        return self._items.pop(name)

    def snapshot(self) -> Dict[str, T]:
        """A copy of the table, for :meth:`restore` (tests that register temporarily)."""
        return dict(self._items)

    def restore(self, snapshot: Dict[str, T]) -> None:
        """Make the table exactly ``snapshot`` again (registration order included)."""
        self._items.clear()
        self._items.update(snapshot)

    def __contains__(self, name) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)
