"""A PID file that names this process while its bus runs.

Written atomically (a temporary file in the same directory, then linked or
renamed into place, so a reader never sees a partial number); refused when
it names another live process; removed on exit only while it still names us.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

from busd.bus import Bus
from busd.errors import BusError
from busd.plugins.base import SimplePlugin

__all__ = ["PIDFile", "PIDFileInUse", "pid_alive", "read_pid"]


class PIDFileInUse(BusError, RuntimeError):
    """The PID file names another process that is still running."""


class PIDFile(SimplePlugin):
    """Write this process's pid to ``pidfile`` on start; remove it on exit.

    Start (priority 70, after a ``Daemonizer`` so the daemon's pid is the
    one written) raises :class:`PIDFileInUse` when the file names another
    live process; the bus then logs it, exits and raises.  A stale file (a
    dead pid, or no pid at all) is replaced, and the replacement logged.
    """

    def __init__(self, bus: Bus, pidfile: str | os.PathLike[str]) -> None:
        super().__init__(bus)
        self.pidfile = os.fspath(pidfile)
        self.finalized = False

    def start(self) -> None:
        """Claim the PID file for this process."""
        pid = os.getpid()
        if self.finalized:
            self.bus.log(f"PID {pid} already written to {self.pidfile!r}.")
            return
        tmp = self._write_temp(pid)
        try:
            self._install(tmp, pid)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self.finalized = True
        self.bus.log(f"PID {pid} written to {self.pidfile!r}.")

    start.priority = 70  # type: ignore[attr-defined]

    def exit(self) -> None:
        """Remove the PID file if it still names this process."""
        pid = os.getpid()
        holder = read_pid(self.pidfile)
        if holder != pid:
            if self.finalized and os.path.exists(self.pidfile):
                self.bus.log(f"PID file {self.pidfile!r} no longer names us ({pid}); "
                             "leaving it.", level=30)
            return
        try:
            os.remove(self.pidfile)
        except OSError:
            self.bus.log(f"Could not remove PID file {self.pidfile!r}.", level=40,
                         traceback=True)
            return
        self.finalized = False
        self.bus.log(f"PID file removed: {self.pidfile!r}.")

    def _write_temp(self, pid: int) -> str:
        directory, name = os.path.split(os.path.abspath(self.pidfile))
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        try:
            os.fchmod(fd, 0o644)  # mkstemp makes it 0600; a pid file is for everyone
            os.write(fd, f"{pid}\n".encode())
        except BaseException:
            os.close(fd)
            os.unlink(tmp)  # a full disk must not leave a partial file behind
            raise
        os.close(fd)
        return tmp

    def _install(self, tmp: str, pid: int) -> None:
        # A link fails if the file exists, so two processes starting at once
        # cannot both win.  On failure (the file exists, or this file system
        # has no hard links) check what is there, then rename over it.
        with contextlib.suppress(OSError):
            os.link(tmp, self.pidfile)
            return
        self._check_holder(pid)
        os.replace(tmp, self.pidfile)

    def _check_holder(self, pid: int) -> None:
        try:
            with open(self.pidfile, encoding="ascii", errors="replace") as f:
                text = f.read(64)
        except FileNotFoundError:
            return
        holder = _parse_pid(text)
        if holder is None:
            self.bus.log(f"Replacing PID file {self.pidfile!r}: it holds no pid "
                         f"({text.strip()[:20]!r}).", level=30)
        elif holder != pid and pid_alive(holder):
            raise PIDFileInUse(
                f"PID file {self.pidfile!r} names process {holder}, which is running: "
                "is another instance up? (remove the file if it is not)")
        elif holder != pid:
            self.bus.log(f"Replacing stale PID file {self.pidfile!r}: "
                         f"process {holder} is not running.", level=30)


def read_pid(path: str | os.PathLike[str]) -> int | None:
    """The pid in the file at ``path``; None if it is missing or holds no pid."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return _parse_pid(f.read(64))
    except OSError:
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user's counts)."""
    if pid <= 0:
        # os.kill(0 or negative) would test a process group, not a process.
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parse_pid(text: str) -> int | None:
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        return None
    pid = int(text)
    return pid if pid > 0 else None
