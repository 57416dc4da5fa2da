"""Statistics: frozen dataclasses that read like the maps they replace.

Every ``statistics()`` in busd returns a subclass of :class:`Stats`: a
frozen dataclass, so its fields are named, typed and cannot be changed by
the reader, and a read-only mapping of its fields, so ``stats["sent"]``,
``dict(stats)`` and ``stats == {"sent": 1, ...}`` keep working for code
(and msgpack replies) that took the map::

    @dataclass(frozen=True, eq=False)
    class SendStats(Stats):
        sent: int
        errors: int

Subclasses are declared with ``eq=False``: equality is the mapping's, so a
snapshot compares equal to a plain dict with the same items.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True, eq=False)
class Stats(Mapping[str, Any]):
    """A frozen snapshot of counters, read by attribute or by key."""

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def _names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (nested Stats included), for msgpack and JSON."""
        return {k: v.as_dict() if isinstance(v, Stats) else v for k, v in self.items()}


__all__ = ["Stats"]
