"""The fork server's strays: what it inherits as the workers' subreaper, ended.

::

    a worker's child ends first, or the worker ends (killed, crashed) --> the
    orphans are reparented to the fork server (PR_SET_CHILD_SUBREAPER) --> on
    its next SIGCHLD the server lists its children (/proc) --> each one that
    is not a worker it forked:
        from a live worker (BUSD_WORKER_PID in its environment)  kept, until
                                                                  that worker is reaped
        else (its worker ended, or it does not say)              SIGTERM, then SIGKILL
                                                                  after ``grace``, reaped here

A worker may start a daemon of its own (``sh -c "tool &"``): it lives as
long as its worker, and ends with it.  Each process ended is logged once,
at WARNING, naming its pid and command, as a worker names what it leaves
(busd.client.worker.descendants), so a test's fixture can name it as a leak.

Runs in the fork server process only (one thread, no psutil).
"""

from __future__ import annotations

import logging
import os
import signal
import time

log = logging.getLogger(__name__)

#: The variable a forked worker sets to its pid (busd.pool.forkchild.WORKER_PID_ENV).
WORKER_PID_ENV = b"BUSD_WORKER_PID="


class Strays:
    """What the server inherits as subreaper: kept while its worker lives, then ended.

    The server's children are its workers and what it inherited: a process
    a worker left when it ended (killed by the pool, or crashed), or one
    whose parent ended first (a daemon a worker started).  The latter is
    kept while the worker it names lives, and ended when that worker is
    reaped; no inherited process outlives its worker.  Each one ended gets
    SIGTERM, then SIGKILL ``grace`` seconds later; it is the server's
    unreaped child until then, so its pid names it and no other.
    """

    def __init__(self, me: int, grace: float = 1.0) -> None:
        self.me = me
        self.grace = grace
        #: The workers this server forked and has not reaped.
        self.workers: set[int] = set()
        #: Inherited processes sent SIGTERM, with when they get SIGKILL.
        self.ending: dict[int, float] = {}
        #: Inherited processes sent SIGKILL, not reaped yet.
        self.killed: set[int] = set()
        #: Inherited processes of a live worker, by that worker: ended when it is reaped.
        self.kept: dict[int, set[int]] = {}

    def forget(self, ended: list[int]) -> None:
        """Children that were reaped: what a reaped worker kept is ended now."""
        for pid in ended:
            self.workers.discard(pid)
            self.ending.pop(pid, None)
            self.killed.discard(pid)
            for kept in self.kept.values():
                kept.discard(pid)
        for pid in ended:
            left = self.kept.pop(pid, set())
            if left:
                self._end(sorted(left), f"worker pid {pid}")

    def end_inherited(self) -> None:
        """Keep what a live worker started; SIGTERM every other inherited child (once each)."""
        strays = []
        for pid in children_of(self.me):
            if (
                pid in self.workers
                or pid in self.ending
                or pid in self.killed
                or any(pid in kept for kept in self.kept.values())
            ):
                continue
            owner = worker_of(pid)
            if owner in self.workers:
                self.kept.setdefault(owner, set()).add(pid)
            else:
                strays.append(pid)
        if strays:
            self._end(strays, "a worker that ended")

    def _end(self, pids: list[int], whose: str) -> None:
        log.warning(
            "ending %d process(es) %s left running: %s (%s)",
            len(pids),
            whose,
            ", ".join(map(str, pids)),
            "; ".join(command_of(pid) for pid in pids),
        )
        for pid in pids:
            self.ending[pid] = time.monotonic() + self.grace
            _signal(pid, signal.SIGTERM)

    def kill_due(self) -> None:
        """SIGKILL the inherited processes whose grace is over."""
        now = time.monotonic()
        for pid, when in list(self.ending.items()):
            if when <= now:
                del self.ending[pid]
                self.killed.add(pid)
                _signal(pid, signal.SIGKILL)

    def timeout(self) -> float | None:
        """How long the server's loop may sleep (None: until something happens)."""
        if not self.ending:
            return None
        return max(0.0, min(self.ending.values()) - time.monotonic())


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return


def worker_of(pid: int) -> int | None:
    """The worker ``pid`` comes from, as its environment says (None: it does not say)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(WORKER_PID_ENV):
            value = entry[len(WORKER_PID_ENV) :]
            return int(value) if value.isdigit() else None
    return None


def command_of(pid: int) -> str:
    """``pid``'s command line, for a log line (its name in brackets when it has none)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().rstrip(b"\0").split(b"\0")
    except OSError:
        return "?"
    return " ".join(a.decode(errors="replace") for a in args)[:200] or "?"


def children_of(parent: int) -> list[int]:
    """The pids whose parent is ``parent`` (from /proc; empty where there is none)."""
    found = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == parent:
            found.append(int(name))
    return found


__all__ = ["Strays", "children_of", "command_of", "worker_of"]
