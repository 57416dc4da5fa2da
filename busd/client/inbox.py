"""The dispatcher's queue: what the link thread (and a signal handler) hands a ClientBus.

::

    busd-link --put([view...] | Synced | Gone)--+
    signal handler --put(Signalled)-------------+--> Inbox (deque + SimpleQueue; no bound,
    mirror() --put(Mirror), close() --put(Stop)--+    peak counted; one wake-up token)
                                                   --take()--> busd-dispatch

Every item is an :data:`InboxItem`: a relayed message (a
:mod:`busd.core.views` view), a snapshot to mirror (``Synced``), the master
lost (``Gone``), or one of the markers below; the dispatcher dispatches on
its type.

Nothing is ever refused: the link thread must never wait for listeners.
Until the bus mirrors, the dispatcher holds what it takes (see
:meth:`Inbox.hold_until_mirrored`), so listeners subscribed between
``connect()`` and ``block()`` miss nothing.
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from busd.client.link.messages import Delivered


@dataclass(frozen=True)
class Stop:
    """The dispatcher ends (after everything queued before it)."""


@dataclass(frozen=True)
class Mirror:
    """The dispatcher applies what it held, and from then on what arrives."""


@dataclass(frozen=True)
class Signalled:
    """This process leaves because of signal ``signum`` (put by its handler)."""

    signum: int
    master_alive: bool = True


#: What the dispatcher takes: what the link delivered, or a marker.
InboxItem = Delivered | Signalled | Mirror | Stop


class Inbox:
    """An unbounded queue with one consumer, the dispatcher thread.

    Items go in a deque; the dispatcher sleeps on a ``SimpleQueue`` that
    holds at most one wake-up token, put by the first ``put`` after the
    dispatcher last looked (a flag says one is already waiting), so a
    stream of deliveries costs one wake-up, and a ``put`` takes no lock
    that the dispatcher holds for long.
    """

    def __init__(self) -> None:
        self._items: collections.deque[InboxItem] = collections.deque()
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()
        #: A token is in ``_wake`` (set and cleared under ``_lock``, with the token).
        self._signalled = False
        # Reentrant: a signal handler may put while the main thread holds it.
        self._lock = threading.RLock()
        self._mirror_asked = False
        #: The most items ever waiting at once.
        self.peak = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, items: Sequence[InboxItem]) -> None:
        """Queue items, in order (any thread, a signal handler included; never refused)."""
        self._items.extend(items)
        waiting = len(self._items)
        if waiting > self.peak:
            self.peak = waiting
        with self._lock:
            if not self._signalled:
                self._signalled = True
                self._wake.put(None)

    def mirror(self) -> None:
        """Queue the one Mirror marker (later calls do nothing)."""
        with self._lock:
            if self._mirror_asked:
                return
            self._mirror_asked = True
        self.put([Mirror()])

    def take(self, timeout: float) -> list[InboxItem]:
        """Everything queued, waiting at most ``timeout`` s for one item (the dispatcher only).

        Empty if nothing came meanwhile.
        """
        if not self._items:
            try:
                self._wake.get(timeout=timeout)
            except queue.Empty:
                return []
        with self._lock:  # the token goes with the flag: a later put wakes us again
            if self._signalled:
                self._signalled = False
                if self._wake.qsize():
                    self._wake.get_nowait()
        pop = self._items.popleft
        return [pop() for _ in range(len(self._items))]

    def hold_until_mirrored(
        self, observe: Callable[[InboxItem], None], wait: float
    ) -> list[InboxItem] | None:
        """Take and hold items (each shown to ``observe``) until the Mirror marker.

        Returns what to apply first: everything held, or only a Signalled
        (a process told to go before it mirrored starts nothing); None when
        a Stop came first (the bus closed without mirroring).
        """
        held: list[InboxItem] = []
        while True:
            items = self.take(wait)  # nothing yet: wait again
            for i, item in enumerate(items):
                if type(item) is Stop:
                    return None
                if type(item) is Signalled:
                    return [item]
                if type(item) is Mirror:
                    return held + items[i + 1 :]
                observe(item)
                held.append(item)


__all__ = ["Inbox", "InboxItem", "Mirror", "Signalled", "Stop"]
