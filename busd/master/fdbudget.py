"""The master's file-descriptor budget: never start what the fd limit cannot hold.

Each worker costs the master :data:`FDS_PER_WORKER` descriptors (its pidfd
and one connection on each of the XPUB and ROUTER sockets).  libzmq aborts
the whole process when it cannot accept a connection for lack of a
descriptor (``Too many open files (src/ipc_listener.cpp)``), taking every
worker with it, so the pool asks the budget *before* it makes a process or
a socket::

    busd start  --raise_nofile()--> soft RLIMIT_NOFILE := hard
    pool.start / scale / respawn --FdBudget.check(new workers, live workers)-->
        fits:     go on
        does not: FdBudgetExceeded (a BusError: one clear reply, the pool unchanged)

The projection is the larger of what is open now and what the model says
(descriptors at the pool's start plus the cost of the live workers: a
worker just spawned has not connected yet), plus the new workers, plus
:data:`RESERVE` (or a sixteenth of the limit, if more) for busctl
connections and short-lived files.

Clients that attach on their own (``busd.client.connect()``, another host's
pool) are not the pool's to count, so the hub guards the rest with
:class:`FdGate`: a HELLO is refused ``busy`` once fewer than a thirty-second
of the limit (at least :data:`HELLO_RESERVE`) would stay free, and a
connection accepted into the last sixty-fourth (at least
:data:`ACCEPT_RESERVE`) is cut at once.  That last guard reacts after libzmq
accepted: a burst of raw connections faster than the hub can see them
(dozens at once at a limit of 64) can still reach the limit, and libzmq's
ipc listener then aborts (``errno_assert`` allows EMFILE in its tcp
listener, not in its ipc one).  The hard limit raised at start makes that
burst enormous in practice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import socket
import struct
from dataclasses import dataclass
from typing import Any

import zmq

from busd.core.errors import BusError
from busd.core.stats import Stats

log = logging.getLogger(__name__)

#: pidfd + one XPUB connection + one ROUTER connection.
FDS_PER_WORKER = 3
#: Kept free for busctl and other clients connecting, and transient files.
RESERVE = 16


class FdBudgetExceeded(BusError):
    """Starting more workers would exceed the master's open-file limit."""


def raise_nofile() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft, hard


def open_fds() -> int:
    """How many descriptors this process has open now."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # the listing's own
    except OSError:
        return 0


def soft_limit() -> int:
    """The current soft RLIMIT_NOFILE (a huge number when unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 30


@dataclass(frozen=True)
class Projection:
    """What a change would leave open, against the limit."""

    needed: int
    limit: int
    afford: int

    @property
    def fits(self) -> bool:
        """True when the change stays within the limit."""
        return self.needed <= self.limit


@dataclass(frozen=True, eq=False)
class BudgetStats(Stats):
    """The pool's open-file budget."""

    #: Descriptors open now, and the soft RLIMIT_NOFILE.
    open: int
    limit: int
    #: Descriptors a worker costs the master, and those always kept free.
    per_worker: int
    reserve: int
    #: Spawns (scale, start) refused so far.
    refused: int


@dataclass(frozen=True, eq=False)
class GateStats(Stats):
    """The hub's open-file gate."""

    #: Descriptors open now, and the soft RLIMIT_NOFILE.
    open: int
    limit: int
    #: Descriptors a client costs the master.
    per_client: int
    #: Descriptors a HELLO, and an accepted connection, must leave free.
    hello_reserve: int
    accept_reserve: int
    #: HELLOs refused, and accepted connections cut, so far.
    refused: int
    cut: int


class FdBudget:
    """Knows what a worker costs and refuses what the limit cannot hold.

    Made when the pool is made (before any worker): ``base`` is what the
    master has open without workers.
    """

    def __init__(
        self, per_worker: int = FDS_PER_WORKER, reserve: int = RESERVE, base: int | None = None
    ) -> None:
        self.per_worker = per_worker
        self.reserve = reserve
        self.base = open_fds() if base is None else base
        self.refused = 0

    def project(self, new: int, live: int) -> Projection:
        """The descriptors needed with ``new`` more workers beside ``live`` ones."""
        limit = soft_limit()
        reserve = max(self.reserve, limit // POOL_SHARE)
        now = max(open_fds(), self.base + self.per_worker * live)
        needed = now + self.per_worker * max(0, new) + reserve
        afford = max(0, (limit - reserve - now) // self.per_worker)
        return Projection(needed=needed, limit=limit, afford=afford)

    def check(self, new: int, live: int, what: str) -> None:
        """Raise FdBudgetExceeded unless ``new`` more workers fit beside ``live``."""
        if new <= 0:
            return
        p = self.project(new, live)
        if p.fits:
            return
        self.refused += 1
        kept = max(self.reserve, p.limit // POOL_SHARE)
        raise FdBudgetExceeded(
            f"{what} refused: {new} more worker(s) need about {p.needed} open files "
            f"({self.per_worker} per worker, {kept} kept free) but the limit "
            f"(RLIMIT_NOFILE) is {p.limit}; at most {p.afford} more fit now. "
            "Raise the limit (ulimit -n, LimitNOFILE=) or run fewer workers"
        )

    def statistics(self) -> BudgetStats:
        """Open descriptors, the limit, the cost per worker and refusals so far."""
        return BudgetStats(
            open=open_fds(),
            limit=soft_limit(),
            per_worker=self.per_worker,
            reserve=self.reserve,
            refused=self.refused,
        )


#: Descriptors a HELLO must leave free, at least (fewer than the pool's RESERVE, so a
#: worker the pool's budget let start is admitted): busctl's connections, status reads.
HELLO_RESERVE = 8
#: Descriptors kept free at all times, at least: a connection accepted past this is cut.
ACCEPT_RESERVE = 4
#: Each reserve is also at least the limit divided by this (the pool's, the HELLO's,
#: the accept's: each half the one before), so a burst of connections has room in
#: proportion to the limit while the hub catches up with it.
POOL_SHARE, HELLO_SHARE, ACCEPT_SHARE = 16, 32, 64


class FdGate:
    """The hub's side of the budget: admits clients at HELLO and cuts surplus connections.

    libzmq accepts connections on its own thread, before any HELLO, and aborts
    the process when an ipc accept fails for lack of a descriptor.  So the hub
    refuses a client's HELLO (``busy``) while fewer than ``hello_reserve``
    descriptors would remain, and watches every accepted connection (a socket
    monitor): one accepted while fewer than ``accept_reserve`` remain is shut
    down at once (libzmq then closes it), so the last descriptors are never
    taken by a flood of connections that never say HELLO.
    """

    def __init__(
        self, hello_reserve: int = HELLO_RESERVE, accept_reserve: int = ACCEPT_RESERVE
    ) -> None:
        self.hello_reserve = hello_reserve
        self.accept_reserve = accept_reserve
        self.refused = 0
        self.cut = 0

    def reserves(self, limit: int) -> tuple[int, int]:
        """The HELLO and accept reserves under ``limit``."""
        return (
            max(self.hello_reserve, limit // HELLO_SHARE),
            max(self.accept_reserve, limit // ACCEPT_SHARE),
        )

    def admit(self) -> str | None:
        """None when one more client fits; else why not (and it is counted)."""
        opened, limit = open_fds(), soft_limit()
        reserve = self.reserves(limit)[0]
        if opened + FDS_PER_WORKER + reserve <= limit:
            return None
        self.refused += 1
        return (
            f"the master is at its open-file limit ({opened} of {limit} descriptors "
            f"open, {FDS_PER_WORKER} per client, {reserve} kept free): try "
            "again later, or raise its limit (ulimit -n, LimitNOFILE=)"
        )

    def accepted(self, fd: int) -> bool:
        """A connection was accepted on ``fd``: cut it if it ate into the reserve (True)."""
        limit = soft_limit()
        if open_fds() + self.reserves(limit)[1] <= limit:
            return False
        self.cut += 1
        try:
            sock = socket.socket(fileno=fd)
        except OSError:  # already closed (and maybe reused by a non-socket): nothing to cut
            return True
        try:
            sock.shutdown(socket.SHUT_RDWR)  # libzmq sees the end and closes it itself
        except OSError:
            pass
        finally:
            sock.detach()
        return True

    def describe(self) -> str:
        """The budget in one line, for the log at start."""
        fds = self.statistics()
        fit = max(0, fds.limit - fds.open - fds.hello_reserve) // FDS_PER_WORKER
        return (
            f"open files: {fds.open} of {fds.limit}; about {fit} more clients fit "
            f"({FDS_PER_WORKER} descriptors each)"
        )

    def statistics(self) -> GateStats:
        """Open descriptors, the limit, reserves, HELLOs refused, connections cut."""
        limit = soft_limit()
        hello, accept = self.reserves(limit)
        return GateStats(
            open=open_fds(),
            limit=limit,
            per_client=FDS_PER_WORKER,
            hello_reserve=hello,
            accept_reserve=accept,
            refused=self.refused,
            cut=self.cut,
        )


class AcceptWatch:
    """Monitors of the hub's listening sockets: each accepted connection goes to the gate.

    Made (and read, and closed) by the hub's thread only.
    """

    def __init__(self, sockets: list[zmq.Socket[Any]], gate: FdGate) -> None:
        self.gate = gate
        self._watched = sockets
        self.monitors = [sock.get_monitor_socket(zmq.EVENT_ACCEPTED) for sock in sockets]

    def read(self, monitor: zmq.Socket[Any]) -> None:
        """Take every event waiting on ``monitor``."""
        while True:
            try:
                frames = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            event = accepted_fd(frames)
            if event is not None:
                self.gate.accepted(event)

    def close(self) -> None:
        """Stop monitoring and close the monitor sockets."""
        for sock, monitor in zip(self._watched, self.monitors, strict=True):
            if not sock.closed:
                with contextlib.suppress(zmq.ZMQError):
                    sock.disable_monitor()
            monitor.close(linger=0)


__all__ = [
    "AcceptWatch",
    "BudgetStats",
    "FdBudget",
    "FdBudgetExceeded",
    "FdGate",
    "GateStats",
    "raise_nofile",
]


#: A monitor event's first frame: its id (16 bits) and value (32 bits), native order.
_EVENT = struct.Struct("=Hi")


def accepted_fd(frames: list[bytes]) -> int | None:
    """The descriptor of an EVENT_ACCEPTED monitor message; None for any other.

    Read here rather than with ``zmq.utils.monitor``, which loads asyncio
    (some 10 ms of the master's start).
    """
    if len(frames) != 2 or len(frames[0]) != _EVENT.size:
        return None
    event, value = _EVENT.unpack(frames[0])
    return value if event == zmq.EVENT_ACCEPTED else None
