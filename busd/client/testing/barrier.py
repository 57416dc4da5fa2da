"""Barriers across processes, over the bus: ``Barrier(bus, "3").wait("go", 8)``.

Each process that reaches barrier ``name`` broadcasts ``busd.barrier``
``[name, generation, member]`` through the master; each one returns from
:meth:`Barrier.wait` once it has seen ``parties`` distinct members arrive.
The k-th wait on a name is generation k, so a barrier can be used again
in a loop, as long as every member waits on it the same number of times.

::

    caller thread --wait()--> broadcast ---> master ---> every process
         ^                                                  |
         +---- Condition <---- [busd-dispatch] listener <---+

Every member must be connected to the master before the first one
arrives (a message published before a client joined never reaches it);
``busd_run`` lines its processes up for that before it calls the function.
:meth:`wait` must not be called from a listener: the dispatcher thread
that delivers the arrivals would be the one waiting.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from busd.core.errors import WaitTimeout

CHANNEL = "busd.barrier"


class Barrier:
    """Named, reusable barriers among the processes connected to one master."""

    def __init__(self, bus: Any, member: str) -> None:
        self.bus = bus
        self.member = member
        self._cond = threading.Condition()
        self._arrived: dict[tuple[str, int], set[str]] = collections.defaultdict(set)
        self._generation: collections.Counter[str] = collections.Counter()
        bus.subscribe(CHANNEL, self._on_arrival)

    def _on_arrival(self, name: str, generation: int, member: str) -> None:
        with self._cond:
            self._arrived[(name, generation)].add(member)
            self._cond.notify_all()

    def wait(self, name: str, parties: int, timeout: float = 30.0) -> None:
        """Return once ``parties`` members reached ``name``; WaitTimeout past ``timeout``."""
        with self._cond:
            self._generation[name] += 1
            key = (name, self._generation[name])
            self._arrived[key].add(self.member)
        self.bus.broadcast(CHANNEL, name, key[1], self.member)
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._arrived[key]) < parties:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(
                        f"barrier {name!r}: {len(self._arrived[key])} of {parties} arrived "
                        f"within {timeout:g}s ({sorted(self._arrived[key])})"
                    )
                self._cond.wait(remaining)
            del self._arrived[key]
