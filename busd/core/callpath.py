"""What the current call path is doing for a bus: roles, in place of thread identity.

A bus must tell a call made from inside its own work from a call made from
elsewhere: ``exit()`` called by one of the stop or exit listeners that an
exit is running returns at once (the exit it is part of finishes after it),
while ``exit()`` from anywhere else waits for that exit to finish; and only
code running inside ``block()`` runs the work handed over with ``defer()``.

The bus says so explicitly: around the listener calls it makes itself, it
marks the call path with a :class:`Role` (``with holding(role):``), and asks
``holds(role)`` later.  The marks live in a :class:`contextvars.ContextVar`,
so they follow the call path (nested calls, and asyncio tasks or
``asyncio.to_thread`` calls made from it, which copy the context) and no
other: another thread starts with its own context and holds nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["Role", "holding", "holds"]


class Role:
    """A part a call path can play for one bus (``stop``, ``exit``, ``block``)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<Role {self.name} {id(self):#x}>"


#: The roles the current call path holds; a context holds each only inside ``holding``.
_HELD: ContextVar[frozenset[Role]] = ContextVar("busd_roles_held", default=frozenset())


@contextmanager
def holding(role: Role) -> Iterator[None]:
    """Mark the current call path as playing ``role`` for the ``with`` block."""
    token = _HELD.set(_HELD.get() | {role})
    try:
        yield
    finally:
        _HELD.reset(token)


def holds(role: Role | None) -> bool:
    """True if the current call path is inside a ``holding(role)`` block."""
    return role is not None and role in _HELD.get()
