"""``busd --log-dir DIR``: the master's and every worker's output in files, reopened on demand.

::

    DIR/<name>.log              the master's stdout and stderr (and the fork server's)
    DIR/<name>-worker-<id>.log  each slot's worker (by slot: a replacement appends)

Files are opened for appending and written directly by each process (no
pipe through the master), so what a process wrote before it exited is in
the file.  After logrotate renames them, SIGUSR1 to busd or ``busctl
reopen-logs`` reopens the master's and publishes ``reopen_logs``: every
worker reopens its own (``busd.client.worker.logfiles``).  Until then, lines go on to
the renamed file: none is lost.

A full disk is said once when it fills and once when space returns
(:mod:`busd.pool.logspace`), on the stderr busd had before its output went to
the directory (a terminal, or the journal under systemd).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from busd.master.bus import MasterBus
from busd.pool.logspace import LogSpace

FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
CHANNEL = "reopen_logs"


class LogDir:
    """The log files of one busd."""

    def __init__(self, directory: str | Path, name: str) -> None:
        self.directory = Path(directory).absolute()
        self.name = name
        #: busd's stderr from before the first redirect (None until then).
        self.console: int | None = None
        self.space: LogSpace | None = None

    @property
    def master_log(self) -> Path:
        """Where the master's output goes."""
        return self.directory / f"{self.name}.log"

    def worker_log(self, slot: int) -> Path:
        """Where slot ``slot``'s worker's output goes."""
        return self.directory / f"{self.name}-worker-{slot}.log"

    def redirect_master(self, flush: bool = True) -> None:
        """Make the directory; put this process's stdout and stderr on its file.

        On a reopen (``flush=False``) the buffers are left alone: another
        thread may be halfway through a line, which then goes whole to the
        new file.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.master_log, FLAGS, 0o644)
        if self.console is None:
            try:
                self.console = os.dup(2)  # not inherited: os.dup makes it close-on-exec
            except OSError:
                self.console = None
        try:
            for stream in (sys.stdout, sys.stderr) if flush else ():
                if stream is not None:
                    stream.flush()
            os.dup2(fd, 1)
            os.dup2(fd, 2)
        finally:
            os.close(fd)

    def install(self, master: MasterBus) -> None:
        """Add the ``reopen-logs`` command; watch the directory's free space."""
        master.add_command("reopen-logs", lambda body: self.reopen(master))
        self.space = LogSpace(self.directory, self.console)
        self.space.install(master)

    def reopen(self, master: MasterBus) -> dict[str, Any]:
        """Reopen the master's file, and have every worker reopen its own."""
        self.redirect_master(flush=False)
        master.publish(CHANNEL)
        return {"reopened": str(self.directory)}
