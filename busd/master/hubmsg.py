"""The messages into and out of the hub thread, one frozen dataclass per kind.

::

    any thread --Outbox[HubMessage]--> [busd-hub] --HubOwner.post(Request | ClientChange
      Publish, PublishRun, SendTo, Close,  |                     | StatusWanted)--> commands
      NewBoard, ExcusePid, ForgetPid,      +--answer (a Future)--> the asking thread
      AddStateHook, WatchAcks, Unwatch,    +--AckNews (busd.master.acks)--> a watch's inbox

      StatsAsked

Everything another thread wants of the hub goes through its one
:class:`busd.core.endpoints.Outbox`, in order, and wakes it.  The one
message that is not frozen is :class:`PublishRun`: the relay keeps adding
frames to the run it queued last until the hub takes it, so a burst of
publishes costs one queue operation (their frames may so go out before
messages queued after the run, never after them).  A message that
asks something carries the Future the hub answers; the asker waits for it
with a bound.
"""

from __future__ import annotations

import threading
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


class PublishRun:
    """Frames numbered ``first``, ``first + 1``, ..., still growing until the hub takes them.

    The relay appends under its ``lock`` while ``taken`` is false; the hub
    takes the run under the same lock, once, and from then on owns it.
    """

    __slots__ = ("first", "frames", "lock", "state", "taken")

    def __init__(self, frame: bytes, first: int, state: str, lock: threading.Lock) -> None:
        self.frames = [frame]
        self.first = first
        #: The state the last frame leaves clients in.
        self.state = state
        self.lock = lock
        self.taken = False

    def take(self) -> tuple[list[bytes], int, str]:
        """The frames, the first seq and the state they leave clients in (the hub, once)."""
        with self.lock:
            self.taken = True
            # The relay may keep this run (as its last) a while: it keeps no frame of it.
            frames, self.frames = self.frames, []
            return frames, self.first, self.state


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
    | PublishRun
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
