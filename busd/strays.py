"""The fork server's strays: what it inherits as the workers' subreaper, ended.

::

    worker ends (killed, crashed) --> its children are reparented to the fork
    server (PR_SET_CHILD_SUBREAPER) --> on its next SIGCHLD the server lists
    its children (/proc) --> each one that is not a worker it forked gets
    SIGTERM, then SIGKILL after ``grace`` --> reaped there

Runs in the fork server process only (one thread, no psutil).
"""

from __future__ import annotations

import os
import signal
import time


class Strays:
    """What the server inherits as subreaper: ended, never kept (no orphans, on any path).

    The server's children are its workers and what it inherited: a process
    a worker left when it ended (killed by the pool, crashed, or one that
    daemonized itself), reparented here.  A live worker's children are its
    own, never the server's, so this cannot end them.  Each inherited
    process gets SIGTERM, then SIGKILL ``grace`` seconds later; it is the
    server's unreaped child until then, so its pid names it and no other.
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

    def forget(self, ended: list[int]) -> None:
        """Children that were reaped."""
        for pid in ended:
            self.workers.discard(pid)
            self.ending.pop(pid, None)
            self.killed.discard(pid)

    def end_inherited(self) -> None:
        """SIGTERM every child that is not a worker of this server (once each)."""
        for pid in children_of(self.me):
            if pid in self.workers or pid in self.ending or pid in self.killed:
                continue
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
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == parent:
            found.append(int(name))
    return found


__all__ = ["Strays", "children_of"]
