"""Detach the process from its terminal and parent: the classic double fork.

::

    original ──fork──> child ──setsid──fork──> daemon (chdir /, umask 0, stdio redirected)
       │                 │
    _exit(0)           _exit(0)

The original's exit status only says the first fork succeeded: a later
failure in the daemon cannot reach the shell that started it.
"""

from __future__ import annotations

import os
import sys
import threading

from busd.core.bus import Bus
from busd.plugins.base import SimplePlugin

__all__ = ["Daemonizer"]


class Daemonizer(SimplePlugin):
    """Daemonize on start (priority 65: before a PID file is written).

    ``stdin``, ``stdout`` and ``stderr`` are the paths the daemon's standard
    streams are redirected to (output is appended).  Daemonizing twice is
    refused: a second start only logs.
    """

    def __init__(
        self,
        bus: Bus,
        stdin: str = "/dev/null",
        stdout: str = "/dev/null",
        stderr: str = "/dev/null",
    ) -> None:
        super().__init__(bus)
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.finalized = False

    def start(self) -> None:
        """Fork twice, start a session, and redirect the standard streams."""
        if self.finalized:
            self.bus.log(f"Already daemonized (PID {os.getpid()}); not forking again.", level=30)
            return
        self._warn_threads()
        # Resolved now: the daemon's working directory will be '/'.
        paths = [os.path.abspath(p) for p in (self.stdin, self.stdout, self.stderr)]
        self.bus.log("Forking once.")
        _fork_and_leave_parent(first=True)
        os.setsid()
        self.bus.log("Forking twice.")
        _fork_and_leave_parent(first=False)
        os.chdir("/")
        os.umask(0)
        _redirect_stdio(*paths)
        self.finalized = True
        self.bus.log(f"Daemonized to PID: {os.getpid()}")

    start.priority = 65  # type: ignore[attr-defined]

    def _warn_threads(self) -> None:
        # Only the forking thread survives a fork; locks other threads held
        # stay locked forever.  Threads that restart themselves are fine.
        others = [
            t
            for t in threading.enumerate()
            if t is not threading.current_thread() and not getattr(t, "fork_safe", False)
        ]
        if others:
            self.bus.log(
                f"There are {len(others)} other threads running "
                f"({', '.join(t.name for t in others)}). "
                "Daemonizing now may cause strange failures.",
                level=30,
            )


def _fork_and_leave_parent(first: bool) -> None:
    """Fork; the parent leaves at once, the child returns."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()  # or the child would write the parent's buffer again
    try:
        pid = os.fork()
    except OSError as exc:
        if first:
            raise RuntimeError(f"Daemonizer: fork #1 failed: {exc}") from exc
        # The original process already reported success; all we can do is say why.
        sys.stderr.write(f"Daemonizer: fork #2 failed: {exc}\n")
        os._exit(1)
    if pid:
        # _exit, not exit: the atexit handlers, the bus's exit listeners and
        # the buffered files belong to the daemon now; running them here
        # would, say, remove its PID file or flush its output twice.
        os._exit(0)


def _redirect_stdio(stdin: str, stdout: str, stderr: str) -> None:
    with open(stdin, "rb") as si, open(stdout, "ab") as so, open(stderr, "ab") as se:
        # dup2 replaces fds 0-2 in place, so sys.stdout and friends follow.
        os.dup2(si.fileno(), 0)
        os.dup2(so.fileno(), 1)
        os.dup2(se.fileno(), 2)
