"""The dispatcher's queue: what the link thread (and a signal handler) hands a ClientBus.

::

    busd-link --put([msg...] | Synced | Gone)--+
    signal handler --put(Signalled)------------+--> Inbox (deque + condition; no bound,
    mirror() --put(Mirror), close() --put(Stop)-+    peak counted) --take()--> busd-dispatch

Nothing is ever refused: the link thread must never wait for listeners.
Until the bus mirrors, the dispatcher holds what it takes (see
:meth:`Inbox.hold_until_mirrored`), so listeners subscribed between
``connect()`` and ``block()`` miss nothing.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


class Stop:
    """The dispatcher ends (after everything queued before it)."""


class Mirror:
    """The dispatcher applies what it held, and from then on what arrives."""


@dataclass(frozen=True)
class Signalled:
    """This process leaves because of signal ``signum`` (put by its handler)."""

    signum: int
    master_alive: bool = True


class Inbox:
    """An unbounded queue with one consumer, the dispatcher thread."""

    def __init__(self) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._mirror_asked = False
        #: The most items ever waiting at once.
        self.peak = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, items: Sequence[Any]) -> None:
        """Queue items, in order (any thread, a signal handler included; never refused)."""
        with self._cond:
            self._items.extend(items)
            self.peak = max(self.peak, len(self._items))
            self._cond.notify()

    def mirror(self) -> None:
        """Queue the one Mirror marker (later calls do nothing)."""
        with self._cond:
            if self._mirror_asked:
                return
            self._mirror_asked = True
            self._items.append(Mirror())
            self._cond.notify()

    def take(self) -> list[Any]:
        """Everything queued, waiting for at least one item (the dispatcher only)."""
        with self._cond:
            while not self._items:
                self._cond.wait()
            items = list(self._items)
            self._items.clear()
        return items

    def hold_until_mirrored(self, observe: Callable[[Any], None]) -> list[Any] | None:
        """Take and hold items (each shown to ``observe``) until the Mirror marker.

        Returns what to apply first: everything held, or only a Signalled
        (a process told to go before it mirrored starts nothing); None when
        a Stop came first (the bus closed without mirroring).
        """
        held: list[Any] = []
        while True:
            items = self.take()
            for i, item in enumerate(items):
                kind = type(item)
                if kind is Stop:
                    return None
                if kind is Signalled:
                    return [item]
                if kind is Mirror:
                    return held + items[i + 1 :]
                observe(item)
                held.append(item)


__all__ = ["Inbox", "Mirror", "Signalled", "Stop"]
