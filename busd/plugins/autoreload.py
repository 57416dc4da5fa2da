"""Restart the process when one of its source files changes."""

from __future__ import annotations

import os
import re
import sys

from busd.core.bus import Bus
from busd.plugins.monitor import Monitor

__all__ = ["Autoreloader"]


class Autoreloader(Monitor):
    """A monitor that restarts the bus when a watched file changes or vanishes.

    Watched: the files of imported modules whose name matches the regular
    expression ``match``, plus the paths in ``files``.  A file's first
    modification time is recorded when first seen; any later difference
    (newer *or older*, as when an older version is checked out) or its
    deletion logs ``Restarting because <file> changed.`` and restarts.
    """

    def __init__(self, bus: Bus, frequency: float = 1, match: str = ".*") -> None:
        #: Extra paths to watch besides the modules' files.
        self.files: set[str] = set()
        #: Path to the modification time first seen (None: did not exist).
        self.mtimes: dict[str, float | None] = {}
        self.match = match
        # Module paths can be relative to the startup directory, and the
        # application may chdir later: resolve them against this one.
        self._base = os.getcwd()
        super().__init__(bus, self.run, frequency)

    def start(self) -> None:
        """Start watching; a fresh start forgets the recorded times."""
        if self.thread is None:
            self.mtimes = {}
        super().start()

    start.priority = 70  # type: ignore[attr-defined]

    def sysfiles(self) -> set[str]:
        """The files of the imported modules whose name matches ``match``."""
        pattern = re.compile(self.match)
        files = set()
        for name, module in list(sys.modules.items()):
            if not pattern.match(name):
                continue
            archive = getattr(getattr(module, "__loader__", None), "archive", None)
            filename = archive if isinstance(archive, str) else getattr(module, "__file__", None)
            if isinstance(filename, str):
                files.add(os.path.normpath(os.path.join(self._base, filename)))
        return files

    def run(self) -> None:
        """Check every watched file once; restart on the first change."""
        for filename in self.sysfiles() | {os.fspath(f) for f in self.files}:
            if filename.endswith(".pyc"):
                filename = filename[:-1]
            if filename not in self.mtimes:
                self.mtimes[filename] = _mtime(filename)
                continue
            oldtime = self.mtimes[filename]
            if oldtime is None:
                # Never existed (a module without source): nothing to compare.
                continue
            mtime = _mtime(filename)
            if mtime is None or mtime != oldtime:
                self.bus.log(f"Restarting because {filename} changed.")
                self._restart()
                return

    def _restart(self) -> None:
        thread = self.thread
        if thread is not None:
            # Cancel first, so that a slow restart cannot make it fire twice.
            thread.cancel()
            self.bus.log(f"Stopped thread {thread.name!r}.")
        # Deferred to the thread in bus.block(): there the exit listeners
        # finish before the re-exec; run from here they would race it.
        self.bus.defer(self.bus.restart)


def _mtime(filename: str) -> float | None:
    try:
        return os.stat(filename).st_mtime
    except OSError:
        return None
