"""How the pool names a worker's end: why it went, how, and why a boot failed.

A worker that cannot start (its TARGET does not import, is missing, is not
callable, raises) writes its traceback to a file named after its pid in the
pool's boot directory (``BUSD_BOOT_DIR``) instead of its stderr::

    worker (exec or forked) --writes--> <runtime dir>/boot/<pid>   (then exits)
    pool (supervisor thread, on the exit) --reads and removes--> BootReports

so that the master, which reaps it, shows each distinct error once, however
many workers failed with it.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
from pathlib import Path

#: Exit status of ``busd`` when its workers failed to boot (gunicorn's is 3 too).
EX_BOOT = 3
#: A boot report longer than this is cut (a traceback is a few kB).
MAX_REPORT = 64 * 1024


#: What a worker that never joins the bus is missing (said once per busd).
NEVER_JOINED = (
    "a command run by busd must call busd.client.connect() to join, "
    "or run with --no-bus (bus = false in a config file) if it does not speak the bus; "
    "a slow start needs a longer --startup-timeout"
)


def never_joined(startup_timeout: float, explain: bool) -> str:
    """Why a worker that never joined is killed, naming the flag; ``explain`` adds the fix."""
    text = f"did not join the bus within --startup-timeout {startup_timeout:g}s"
    return f"{text} ({NEVER_JOINED})" if explain else text


class ExitReason(enum.Enum):
    """Why a worker ended: the pool's intent, or CRASH when it had none."""

    CRASH = "crash"
    RECYCLE = "recycle"
    SCALE = "scale"
    RELOAD = "reload"
    TIMEOUT = "timeout"
    STOP = "stop"
    #: Its fork server died before it let the worker run: a lost spawn, not a crash.
    SPAWN_LOST = "spawn lost"


def describe_status(code: int | None) -> str:
    """``status 1`` or ``signal SIGKILL`` from ``os.waitstatus_to_exitcode``'s result.

    None (a worker forked by the fork server, which reaps its own children)
    is ``an unknown status``.
    """
    if code is None:
        return "an unknown status"
    if code >= 0:
        return f"status {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = str(-code)
    return f"signal {name}"


class BootReports:
    """The boot directory: reads what failed workers wrote, each error once."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seen: set[str] = set()

    def prepare(self) -> None:
        """Create the directory (0700) and clear reports a former master left."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path in self.directory.iterdir():
            with contextlib.suppress(OSError):
                path.unlink()

    def take(self, pid: int) -> str | None:
        """The report of worker ``pid`` (removed from disk), or None if it wrote none."""
        path = self.directory / str(pid)
        try:
            with path.open("rb") as f:
                text = f.read(MAX_REPORT).decode("utf-8", "replace")
        except OSError:
            return None
        with contextlib.suppress(OSError):
            path.unlink()
        return text.rstrip("\n") or None

    def first_time(self, text: str) -> bool:
        """True the first time this error text is seen (and only then)."""
        if text in self._seen:
            return False
        self._seen.add(text)
        return True

    def close(self) -> None:
        """Remove the directory and whatever is left in it."""
        with contextlib.suppress(OSError):
            for path in self.directory.iterdir():
                path.unlink()
            os.rmdir(self.directory)


__all__ = [
    "EX_BOOT",
    "NEVER_JOINED",
    "BootReports",
    "ExitReason",
    "describe_status",
    "never_joined",
]
