"""The messages into and out of the hub thread, one frozen dataclass per kind.

::

    any thread --Outbox[HubMessage]--> [busd-hub] --HubOwner.post(Request | ClientChange
      Publish, SendTo, Close, NewBoard     |                     | StatusWanted)--> commands
      ExcusePid, ForgetPid, AddStateHook   +--answer (a Future)--> the asking thread
      WatchAcks, Unwatch, StatsAsked       +--AckNews (busd.master.acks)--> a watch's inbox

Everything another thread wants of the hub goes through its one
:class:`busd.core.endpoints.Outbox`, in order, and wakes it.  A message that
asks something carries the Future the hub answers; the asker waits for it
with a bound.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from busd.master.acks import AckSink
from busd.master.board import Board
from busd.master.clients import ClientInfo
from busd.master.hubview import HubStats

# -- what other threads send the hub (through its Outbox) ------------------------


@dataclass(frozen=True)
class Publish:
    """Send frames numbered ``first``, ``first + 1``, ... on PUB, leaving clients in ``state``."""

    frames: tuple[bytes, ...]
    first: int
    state: str


@dataclass(frozen=True)
class SendTo:
    """Send one frame to the client at ``identity`` (a reply)."""

    identity: bytes
    frame: bytes


@dataclass(frozen=True)
class Close:
    """Flush for at most ``flush`` seconds, then close the sockets and end.

    With a ``final`` message (the master's closing EVENT), send it first and
    keep serving (replays, heartbeats, BYEs) until every live client has it
    or the ``drain`` seconds have passed; publishes after it are dropped.
    """

    flush: float
    final: Publish | None = None
    drain: float = 0.0


@dataclass(frozen=True)
class NewBoard:
    """The command thread's latest read-only answers."""

    board: Board


@dataclass(frozen=True)
class ExcusePid:
    """The pool retires processes ``pids``: no ack wait waits for their clients
    (answered with each one's client, if it had one)."""

    pids: tuple[int, ...]
    answer: Future[dict[int, ClientInfo | None]]


@dataclass(frozen=True)
class ForgetPid:
    """Processes ``pids`` ended: forget their clients (answered with each one's client)."""

    pids: tuple[int, ...]
    answer: Future[dict[int, ClientInfo | None]]


@dataclass(frozen=True)
class AddStateHook:
    """Call ``hook(client)`` on the hub thread when a client reports a new state."""

    hook: Callable[[ClientInfo], None]


@dataclass(frozen=True)
class WatchAcks:
    """Send ``sink`` the acks of ``seqs`` by ``expected`` clients, and their departures."""

    seqs: tuple[int, ...]
    expected: frozenset[int]
    sink: AckSink


@dataclass(frozen=True)
class Unwatch:
    """Stop sending ``sink`` ack news."""

    sink: AckSink


@dataclass(frozen=True)
class StatsAsked:
    """Answer with the hub's statistics (a frozen HubStats)."""

    answer: Future[HubStats]


HubMessage = (
    Publish
    | SendTo
    | Close
    | NewBoard
    | ExcusePid
    | ForgetPid
    | AddStateHook
    | WatchAcks
    | Unwatch
    | StatsAsked
)


# -- what the hub posts to its owner's command thread ------------------------------


@dataclass(frozen=True)
class Request:
    """A command to run on the command thread; answer it with :meth:`Hub.reply`."""

    identity: bytes
    req_id: int
    body: dict[str, Any]


@dataclass(frozen=True)
class ClientChange:
    """A client joined, left (BYE) or was lost (silent, or its process ended)."""

    event: str
    client: dict[str, Any]


@dataclass(frozen=True)
class StatusWanted:
    """The board is stale and somebody asked: publish a new one."""


class HubOwner(Protocol):
    """What the hub needs from the bus that owns it."""

    epoch: int

    def post(self, message: Request | ClientChange | StatusWanted) -> None:
        """Queue a message for the command thread (never blocks, never runs it here)."""
