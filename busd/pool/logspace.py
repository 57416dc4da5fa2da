"""A full ``--log-dir`` disk, said: once when it fills, once when space returns.

::

    [busd-logspace] statvfs(DIR), again after ``interval`` (1 s) while full, else after
                    the time a fast writer (FILL_RATE) needs to fill the room left,
                    at most MAX_INTERVAL: an idle master on a roomy disk sleeps
        free < FULL_BELOW (or no inode left) -> FULL: one WARNING
        free >= BACK_ABOVE again             -> one WARNING "space returned"
    each said on busd's own stderr as it was before --log-dir took it (a
    terminal, or the journal under systemd), in the master's log file (if
    it still takes a line), and on the bus's ``log`` channel;
    ``busctl status`` shows it (``logs`` in --json, a ``logs:`` line)

The workers write their own files (no pipe through the master), so the
master cannot see their failed writes; the free space of the directory is
what it can see.  The pool keeps serving on a full disk: output is lost
until space returns, and this is how the operator learns of it.  The two
thresholds differ so a disk at the edge is not reported again and again.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from busd.master.bus import MasterBus
from busd.master.osthread import name_os_thread

#: Fewer free bytes than this: the disk is full (the next lines cannot go).
FULL_BELOW = 16 * 1024
#: Space has returned once this much is free again.
BACK_ABOVE = 64 * 1024
#: How often the directory is looked at while full (and at the most often).
INTERVAL = 1.0
#: The longest time between two looks (a disk with room to spare).
MAX_INTERVAL = 30.0
#: A fast writer's pace (bytes/s): the room left cannot fill sooner than room / FILL_RATE.
FILL_RATE = 256 * 1024 * 1024


@dataclass(frozen=True)
class SpaceState:
    """What ``status`` shows of the log directory's disk."""

    dir: str
    full: bool = False
    free: int | None = None
    #: Wall-clock time the current (or last) episode began.
    since: float | None = None
    #: How many times the disk filled.
    episodes: int = 0
    checks: int = 0
    error: str | None = None


class LogSpace:
    """Watches the free space of one log directory (its own thread owns the state)."""

    def __init__(self, directory: Path, console: int | None, interval: float = INTERVAL) -> None:
        self.directory = directory
        self.console = console
        self.interval = interval
        #: Replaced whole by the watcher thread; read by the status hook.
        self.state = SpaceState(dir=str(directory))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="busd-logspace", daemon=True)
        self._master: MasterBus | None = None

    def install(self, master: MasterBus) -> None:
        """Start watching; ``status`` shows it; the watch ends with the master's exit."""
        self._master = master
        master.add_status_hook(lambda status: status.update(logs=asdict(self.state)))
        master.subscribe("exit", self.close, priority=95)
        self._thread.start()

    def close(self) -> None:
        """Stop watching (bounded; an exit listener on the command thread, never the watcher)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.interval + 1.0)

    def check(self) -> SpaceState:
        """Look at the disk once; say it when it filled or when space returned."""
        old = self.state
        try:
            st = os.statvfs(self.directory)
        except OSError as exc:
            self.state = replace(old, checks=old.checks + 1, error=str(exc))
            return self.state
        free = st.f_bavail * st.f_frsize
        no_inode = st.f_files > 0 and st.f_favail == 0
        full = (free < FULL_BELOW or no_inode) if not old.full else (free < BACK_ABOVE or no_inode)
        new = replace(old, full=full, free=free, checks=old.checks + 1, error=None)
        if full and not old.full:
            new = replace(new, since=time.time(), episodes=old.episodes + 1)
            what = "no inode left" if no_inode else f"{free} bytes free"
            self._say(
                f"the log directory {self.directory} is full ({what}): workers' and "
                "busd's output is lost until space returns"
            )
        elif old.full and not full:
            self._say(
                f"space returned in the log directory {self.directory} ({free} bytes "
                f"free) after {time.time() - (old.since or time.time()):.0f}s: "
                "output is written again"
            )
        self.state = new
        return new

    def _watch(self) -> None:
        name_os_thread("busd-logspace")
        while not self._stop.is_set():
            self._stop.wait(self.next_look(self.check()))

    def next_look(self, state: SpaceState) -> float:
        """Seconds until the next look: ``interval`` while full (or unknown), else the
        time the room left takes to fill at FILL_RATE, within ``interval``..MAX_INTERVAL."""
        if state.full or state.free is None:
            return self.interval
        room = max(0, state.free - FULL_BELOW)
        return min(MAX_INTERVAL, max(self.interval, room / FILL_RATE))

    def _say(self, text: str) -> None:
        if self.console is not None:
            line = f"busd WARNING: {text}\n".encode(errors="replace")
            with contextlib.suppress(OSError):  # a console gone is nothing to tell
                os.write(self.console, line)
        master = self._master
        if master is not None:
            # On the command thread, as every log line of busd's: also to the
            # master's log file (if it takes it) and to `busctl watch log`.
            master.call_soon(lambda: master.log(text, level=30))


__all__ = ["BACK_ABOVE", "FULL_BELOW", "LogSpace", "SpaceState"]
