"""What the hub publishes for other threads: its clients and counters, and its statistics.

::

    [busd-hub] after each change, before any reply, post or ack news leaves it:
        HubViews.publish(HubView(ClientTable, counters))   (one reference swap + notify)
              |
              +--> current()   any thread, no lock: clients(), clients_by_pid(),
              |                expected(seq), the status board's counters
              +--> wait_for(predicate, timeout)   wakes on each new view

The hub is the only writer; a view is never changed after it is made, so
readers take the newest one without a lock (the condition is only for
waiting on the next one).  Statistics are asked for (a ``StatsAsked``
message on the hub's outbox) and answered by the hub as a frozen
:class:`HubStats`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from busd.core.stats import Stats
from busd.master.backlog import PublishedStats, RepliesStats
from busd.master.clients import ClientInfo, ClientTable
from busd.master.replay import ReplayStats


def _no_counters() -> Mapping[str, int]:
    return MappingProxyType({})


@dataclass(frozen=True)
class HubView:
    """The hub's clients and counters at one moment."""

    clients: ClientTable = field(default_factory=ClientTable)
    #: Requests, acks and every rejected frame, by error code.
    counters: Mapping[str, int] = field(default_factory=_no_counters)


class HubViews:
    """The newest :class:`HubView`: written by the hub thread, read by any."""

    def __init__(self) -> None:
        self._view = HubView()
        self._cond = threading.Condition()
        self._stats: HubStats | None = None

    def keep_stats(self, stats: HubStats) -> None:
        """Keep the statistics the hub made last (the answer once it no longer runs)."""
        self._stats = stats

    def last_stats(self) -> HubStats:
        """The statistics the hub made last (it makes one before it starts)."""
        assert self._stats is not None, "the hub makes its statistics before it starts"
        return self._stats

    def current(self) -> HubView:
        """The newest view (no lock: the reference is swapped whole)."""
        return self._view

    def publish(self, view: HubView) -> None:
        """Make ``view`` the newest and wake the waiters (the hub thread only)."""
        with self._cond:
            self._view = view
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[ClientInfo]], bool], timeout: float) -> bool:
        """Wait until ``predicate(clients)`` holds; False if ``timeout`` passed first.

        The predicate runs on the calling thread, outside the condition, once
        per new view.
        """
        deadline = time.monotonic() + timeout
        view = self._view
        while not predicate(list(view.clients.clients)):
            with self._cond:
                while self._view is view:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                view = self._view
        return True


@dataclass(frozen=True, eq=False)
class UnreadStats(Stats):
    """Bytes handed to libzmq that peers have not taken (busd.master.backlog)."""

    replies: RepliesStats
    published: PublishedStats


@dataclass(frozen=True, eq=False)
class HubStats(Stats):
    """The hub's counters, endpoints, clients, replay window, unread bytes and descriptors."""

    #: Requests, acks, repairs and rejected input, by name or error code.
    counters: dict[str, int]
    #: Endpoints rebound after their files were removed (busd.master.rundir).
    rundir: Mapping[str, int]
    pub: list[str]
    ctl: list[str]
    #: How many clients are registered.
    clients: int
    #: CURVE keys and refused handshakes (None without CURVE).
    curve: Mapping[str, Any] | None
    replay: ReplayStats
    unread: UnreadStats
    #: Open descriptors and the gate's reserves (busd.master.fdbudget).
    fds: Mapping[str, int]
