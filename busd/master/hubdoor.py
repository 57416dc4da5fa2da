"""The hub's door: how another thread asks the hub thread something, and waits.

::

    pool / command thread / any thread              [busd-hub]
      excuse_pids, forget_pids --ExcusePid, ForgetPid (+ Future)--> Registry
      statistics()                     --StatsAsked (+ Future)-----------> HubStats
      add_state_hook(hook)             --AddStateHook-------------------> Registry.state_hooks
      watch_acks / unwatch_acks        --WatchAcks, Unwatch-------------> Registry watches
                                       <--Future answers, at most ANSWER_WAIT
      client_table(), counters()       <--HubViews.current() (no lock, no wait)
      wait_clients(predicate, timeout) <--HubViews: wakes on each new view

Every request is a typed message on the hub's one outbox; nothing here
reads what the hub owns.  An answer is waited for at most
:data:`ANSWER_WAIT`; when the hub does not run (not started, closing or
gone), the answer is made from the newest view instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as AnswerTimeout
from dataclasses import replace
from typing import TypeVar

from busd.core.endpoints import Outbox
from busd.master.acks import AckSink
from busd.master.clients import ClientInfo, ClientTable
from busd.master.hubmsg import (
    AddStateHook,
    ExcusePid,
    ForgetPid,
    HubMessage,
    StatsAsked,
    Unwatch,
    WatchAcks,
)
from busd.master.hubview import HubStats, HubViews

#: The hub's logger: this is part of the hub (its log lines keep their name).
log = logging.getLogger("busd.master.hub")

T = TypeVar("T")

#: How long a thread asking the hub something waits for its answer.
ANSWER_WAIT = 1.0


class HubDoor:
    """Typed requests to the hub thread, and its published views, for any other thread."""

    def __init__(
        self, outbox: Outbox[HubMessage], views: HubViews, serving: Callable[[], bool]
    ) -> None:
        self._outbox = outbox
        self._views = views
        self._serving = serving

    def client_table(self) -> ClientTable:
        """The newest snapshot of the registered clients (no lock)."""
        return self._views.current().clients

    def counters(self) -> Mapping[str, int]:
        """The newest copy of the hub's counters (requests, acks, rejected frames)."""
        return self._views.current().counters

    def wait_clients(self, predicate: Callable[[list[ClientInfo]], bool], timeout: float) -> bool:
        """Wait until ``predicate(clients)`` holds (False past ``timeout`` seconds)."""
        return self._views.wait_for(predicate, timeout)

    def add_state_hook(self, hook: Callable[[ClientInfo], None]) -> None:
        """Call ``hook(client)`` on the hub thread when a client reports a new state."""
        self._outbox.put(AddStateHook(hook))

    def excuse_pids(self, pids: Iterable[int]) -> dict[int, ClientInfo | None]:
        """The clients of processes ``pids`` are retired on purpose: no ack wait waits
        for them (one round trip to the hub for them all)."""
        wanted = tuple(pids)
        table = self.client_table().by_pid()
        answer: Future[dict[int, ClientInfo | None]] = Future()

        def otherwise() -> dict[int, ClientInfo | None]:
            found = {pid: table.get(pid) for pid in wanted}
            return {
                pid: None if c is None else replace(c, leaving=True) for pid, c in found.items()
            }

        return self._ask(ExcusePid(wanted, answer), answer, otherwise)

    def forget_pids(self, pids: Iterable[int]) -> dict[int, ClientInfo | None]:
        """Processes ``pids`` ended: forget their clients (returned, where they had one)."""
        wanted = tuple(pids)
        table = self.client_table().by_pid()
        answer: Future[dict[int, ClientInfo | None]] = Future()
        return self._ask(
            ForgetPid(wanted, answer), answer, lambda: {pid: table.get(pid) for pid in wanted}
        )

    def watch_acks(self, seqs: tuple[int, ...], expected: frozenset[int], sink: AckSink) -> None:
        """Have the hub send ``sink`` the acks of ``seqs`` by ``expected``, and their
        departures (busd.master.acks)."""
        self._outbox.put(WatchAcks(seqs, expected, sink))

    def unwatch_acks(self, sink: AckSink) -> None:
        """Have the hub stop sending ``sink`` ack news."""
        self._outbox.put(Unwatch(sink))

    def statistics(self) -> HubStats:
        """The hub's statistics, made on its thread (at most ANSWER_WAIT); when it does
        not run, the last it made, with the newest counters."""
        answer: Future[HubStats] = Future()
        view = self._views.current()
        return self._ask(
            StatsAsked(answer),
            answer,
            lambda: replace(
                self._views.last_stats(),
                counters=dict(view.counters),
                clients=len(view.clients.clients),
            ),
        )

    def _ask(self, message: HubMessage, answer: Future[T], otherwise: Callable[[], T]) -> T:
        """Queue ``message`` and wait for its ``answer``; ``otherwise()`` if the hub is gone."""
        self._outbox.put(message)
        # Queued before the closing began: the hub answers it, even while closing.
        if self._serving():
            try:
                return answer.result(ANSWER_WAIT)
            except AnswerTimeout:
                log.warning(
                    "the hub did not answer a %s within %.1fs", type(message).__name__, ANSWER_WAIT
                )
        if answer.done():
            return answer.result()
        return otherwise()
