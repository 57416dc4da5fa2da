"""The status board: read-only answers the command thread publishes for the hub.

::

    [busd-commands] (owns the bus, the pool) --hub.publish_board(answers)--> Board
                     runs status hooks, psutil               |  (immutable; swapped whole)
    [busd-hub] status / workers request --StatusWanted--> (a new Board, if it is free)
               answers from the newest Board within 10 ms --> reads the current Board,
                                                              adds what it owns itself
                                                              (clients, last seq sent)

A :class:`Board` is never changed after it is made: the owner builds a new
one and the hub's reference to it is replaced in one assignment, so the hub
reads a consistent value without taking anybody's lock.  Live parts the hub
owns (the clients it registered, the last sequence number it sent, each
worker's mirrored state as its client reported it) are laid over the
published answers when a request is answered, so a stale board never hides
a client that left.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from busd.master.clients import ClientInfo


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Board:
    """Answers by command name (``status``, ``workers``, ...), and when they were made."""

    answers: Mapping[str, Any] = field(default_factory=_empty)
    made_at: float = 0.0
    #: The names of the master's other read-only (quick) commands.
    quick: frozenset[str] = frozenset()

    @classmethod
    def of(cls, answers: Mapping[str, Any], quick: frozenset[str] = frozenset()) -> Board:
        """A board holding a copy of ``answers``, made now."""
        return cls(MappingProxyType(dict(answers)), time.monotonic(), quick)


def live_workers(rows: Any, clients: list[ClientInfo]) -> list[dict[str, Any]]:
    """Worker rows with each one's state as its client last reported it."""
    if not isinstance(rows, list):
        return []
    by_pid = {c.pid: c for c in clients}
    live = []
    for row in rows:
        pid = row.get("pid") if isinstance(row, dict) else None
        client = by_pid.get(pid) if isinstance(pid, int) else None
        live.append({**row, "state": client.state} if client is not None else row)
    return live


def live_status(board: Board, clients: list[ClientInfo], seq: int, now: float) -> dict[str, Any]:
    """The published status with the hub's own live parts laid over it."""
    status = dict(board.answers.get("status") or {})
    started = status.get("started_at")
    if isinstance(started, float):
        status["uptime"] = round(time.time() - started, 3)
    status.pop("started_at", None)
    status["seq"] = seq
    status["clients"] = [c.as_dict(now) for c in clients]
    status["workers"] = live_workers(status.get("workers", []), clients)
    status["status_age"] = round(max(0.0, now - board.made_at), 3)
    return status
