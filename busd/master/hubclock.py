"""When the hub thread wakes: its heartbeat, and one read of the clients' pongs.

::

    [busd-hub] poll(sockets, pidfds, outbox; for HubClock.sleep_ms(...))
        beat due           -> send the HEARTBEAT; next beat one heartbeat later
        a new pong slot    -> for PONG_GATHER the ROUTER is left out of the poll:
          (wall clock)        the pongs that heartbeat asks for arrive meanwhile
                              and are read in one wake-up, not one each
        anything else due  -> its own deadline (a board waiter, an ended client, a drain)
        nothing due        -> sleep until the next beat: no other timer runs

The clients answer the first heartbeat of each wall-clock slot of
``pong_interval`` (``busd.client.link``'s ``pong_due``): every client of the
host answers the same heartbeat, within a few milliseconds of each other.
Read as they come, each straggler would wake the hub (and it would sleep
again) once more; held back for a moment, they are read in one go.  Only
the ROUTER is held back, only then, only for ``PONG_GATHER``, and never
while a thread waits for acks (a graceful --wait): the outbox, the
subscriptions and the pidfds are watched all the while.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import zmq

#: How long the ROUTER is left unread after a heartbeat that asks for pongs (at most a
#: tenth of a heartbeat: a fast heartbeat keeps its requests answered as quickly).
PONG_GATHER = 0.01


class HubClock:
    """The hub thread's timers (owned by that thread)."""

    def __init__(self, heartbeat: float, pong_interval: float) -> None:
        self.heartbeat = heartbeat
        self.pong_interval = pong_interval
        self.gather = min(PONG_GATHER, heartbeat / 10)
        self.next_beat = time.monotonic()
        #: Until then (monotonic) the pongs asked for are gathered, unread.
        self.gather_until = 0.0
        self._slot = -1

    def beat_due(self, now: float) -> bool:
        """True when the next heartbeat is due."""
        return now >= self.next_beat

    def beaten(self, now: float, gather: bool = True) -> None:
        """A heartbeat went out at ``now``: the next is one heartbeat later; if it opened
        a pong slot (and ``gather``), hold the ROUTER back while the pongs come."""
        self.next_beat = now + self.heartbeat
        slot = int(time.time() / self.pong_interval)
        if slot != self._slot:
            self._slot = slot
            if gather:
                self.gather_until = now + self.gather

    def reading(self, now: float) -> bool:
        """False while pongs are gathered: the ROUTER is left out of the poll."""
        return now >= self.gather_until

    def sleep_ms(
        self, poller: zmq.Poller, router: zmq.Socket[Any], due: list[float], hold: bool = True
    ) -> int:
        """Ready ``poller`` for the next sleep (the ``router`` in it unless pongs are
        gathered) and say how long it may last (see :meth:`wait_ms`).  Not ``hold``
        (someone waits for acks): the ROUTER is read at once, gathering or not."""
        now = time.monotonic()
        if not hold:
            self.gather_until = 0.0
        poller.register(router, zmq.POLLIN if self.reading(now) else 0)
        return self.wait_ms(now, due)

    def wait_ms(self, now: float, deadlines: Iterable[float]) -> int:
        """Milliseconds to sleep: until the next beat, the end of a gathering or the
        earliest of ``deadlines``; rounded up, so a wake-up is never early."""
        wake = min([self.next_beat, *deadlines, *self._gathering(now)])
        return int(max(0.0, wake - now) * 1000) + 1

    def _gathering(self, now: float) -> tuple[float, ...]:
        return () if self.reading(now) else (self.gather_until,)


__all__ = ["PONG_GATHER", "HubClock"]
