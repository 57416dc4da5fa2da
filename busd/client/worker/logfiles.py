"""A worker's output file (``busd --log-dir``), reopened after rotation.

The pool starts the worker with stdout and stderr on ``BUSD_LOG_FILE``
(opened for appending).  ``busctl reopen-logs`` or SIGUSR1 to busd publishes
``reopen_logs``; each worker then opens the file by its name again and puts
the new descriptor on 1 and 2.  What was written before goes to the renamed
file, what is still in Python's buffers and everything after to the new one:
the swap of a descriptor is atomic, and no line is split between the two.
"""

from __future__ import annotations

import io
import os
import sys

from busd.client.bus import ClientBus

ENV = "BUSD_LOG_FILE"
CHANNEL = "reopen_logs"
FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC


def reopen(path: str) -> None:
    """Point stdout and stderr at ``path`` again (as it is named now)."""
    fd = os.open(path, FLAGS, 0o644)
    try:
        # No flush here: another thread may be halfway through a line in a
        # buffer; whatever is buffered is written, whole, to the new file.
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)


def follow(bus: ClientBus) -> None:
    """Reopen this worker's log file on ``reopen_logs`` (if it has one)."""
    path = os.environ.get(ENV, "")
    if path:
        # Each line in one write (even with PYTHONUNBUFFERED, which writes a
        # print in two), so a reopen never falls inside a line.
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, io.TextIOWrapper):
                stream.reconfigure(line_buffering=True, write_through=False)
        bus.subscribe(CHANNEL, lambda: reopen(path))
