"""A name -> object table that refuses duplicate names and lists the known names on a failed lookup."""
from typing import Dict, Generic, List, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object table that refuses duplicates and lists the known names on a failed lookup.

    >>> r = Registry("loss")
    >>> r.register("a", 1)
    1
    >>> r.get("b")
    Traceback (most recent call last):
    ...
    KeyError: "unknown loss 'b'; known: ['a']"
    """

    def __init__(self, what: str, sort: bool = True):
        self.what = what
        self.sort = sort
        self._items: Dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.what} name must be a non-empty string, got {name!r}")
        if name in self._items:
            raise ValueError(f"a {self.what} named {name!r} is already registered; choose another name")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        if name not in self._items:
            raise KeyError(f"unknown {self.what} {name!r}; known: {self.names()}")
        return self._items[name]

    def names(self) -> List[str]:
        """The registered names, sorted (or in registration order with ``sort=False``)."""
        return sorted(self._items) if self.sort else list(self._items)

    def unregister(self, name: str) -> T:
        """Remove and return ``name`` (for plug-ins and tests that register temporarily)."""
        return self._items.pop(name)

    def __contains__(self, name) -> bool:
        return name in self._items
