"""Implementations by name: the one registry type of the package.

MBR utilities and rejected-pick rules (``core.mbr``) and sampling engines
(``sampling``) are registered by name, as ``mbrs`` registers its metrics and
decoders; a setting that names one is validated against its registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Implementations by name, in registration order (the order errors list).

    Iterating yields the names, so a registry is the list of valid values of
    its setting: ``LabelConfig`` validates against it at validation time, and
    a name registered later is valid from then on.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> None:
        """Register ``item`` as ``name``; a name is never silently replaced."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item

    def remove(self, name: str) -> None:
        """Drop a registered name (for tests and plugins that clean up)."""
        del self._items[name]

    def get(self, name: str) -> T:
        """The implementation of ``name``, or an error listing the valid names."""
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(self)
            raise ValueError(
                f"unknown {self.kind} {name!r}: use one of {valid}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._items))

    def __len__(self) -> int:
        return len(self._items)
