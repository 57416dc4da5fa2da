"""A PID file that names this process while its bus runs.

Written atomically (a temporary file in the same directory, then linked or
renamed into place, so a reader never sees a partial number); refused when
it names another live process; removed on exit only while it still names us.

What is there already is opened without following a symlink and read only
when it is a regular file (a planted link or FIFO is refused, not read as
whoever runs busd), and its content is never logged.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile

from busd.core.bus import Bus
from busd.core.errors import BusError
from busd.plugins.base import SimplePlugin

__all__ = ["PIDFile", "PIDFileInUse", "PIDFileUnsafe", "pid_alive", "read_pid"]

#: Bytes read of an existing PID file.
PID_FILE_BYTES = 64


class PIDFileInUse(BusError, RuntimeError):
    """The PID file names another process that is still running."""


class PIDFileUnsafe(BusError, RuntimeError):
    """The PID file's path holds something else than a regular file (a symlink, a FIFO)."""


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
                self.bus.log(
                    f"PID file {self.pidfile!r} no longer names us ({pid}); leaving it.", level=30
                )
            return
        try:
            os.remove(self.pidfile)
        except OSError:
            self.bus.log(f"Could not remove PID file {self.pidfile!r}.", level=40, traceback=True)
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
            text = _read_regular(self.pidfile)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise PIDFileUnsafe(
                f"PID file {self.pidfile!r} is not a regular file (a symlink, a FIFO?): "
                f"refusing to read or replace it ({exc.strerror}); remove it"
            ) from None
        holder = _parse_pid(text)
        if holder is None:
            self.bus.log(f"Replacing PID file {self.pidfile!r}: it holds no pid.", level=30)
        elif holder != pid and pid_alive(holder):
            raise PIDFileInUse(
                f"PID file {self.pidfile!r} names process {holder}, which is running: "
                "is another instance up? (remove the file if it is not)"
            )
        elif holder != pid:
            self.bus.log(
                f"Replacing stale PID file {self.pidfile!r}: process {holder} is not running.",
                level=30,
            )


def read_pid(path: str | os.PathLike[str]) -> int | None:
    """The pid in the file at ``path``; None if it is missing or holds no pid."""
    try:
        return _parse_pid(_read_regular(path))
    except OSError:
        return None


def _read_regular(path: str | os.PathLike[str]) -> str:
    """The start of the regular file at ``path``; OSError for a symlink or anything else."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file")
        return os.read(fd, PID_FILE_BYTES).decode("ascii", "replace")
    finally:
        os.close(fd)


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
