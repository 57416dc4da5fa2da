"""What the busd command does around giving up root (``--user``, ``--group``).

::

    as root:   --pidfile written (root's: it may live in /run)
               --listen sockets bound (low ports), systemd's inherited
               --log-dir made for the new user when it does not exist yet
    switch:    no supplementary groups, then the gid, then the uid
    as USER:   the runtime dir, busd's log file, the fork server, the master,
               every worker

Without ``--user``/``--group`` the same steps run in the same order, as
whoever started busd.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
from pathlib import Path

from busd.core import endpoints as ep
from busd.core.bus import Bus
from busd.core.errors import BusError
from busd.plugins import PIDFile
from busd.plugins.pidfile import read_pid
from busd.plugins.privileges import drop_ids
from busd.pool.logdir import LogDir

log = logging.getLogger("busd.main")


class UsageError(BusError):
    """A flag's value that proved unusable at start (exit status 2)."""


def make_runtime_dir(runtime: Path, switched: bool) -> Path:
    """The runtime dir, made (mode 0700) or checked as ours; a dir we may not make is usage."""
    try:
        return ep.ensure_runtime_dir(runtime)
    except OSError as exc:
        hint = (
            f" (busd runs as uid {os.getuid()} since --user: give a --runtime-dir "
            "that user may make)"
            if switched
            else ""
        )
        raise UsageError(f"runtime dir {runtime}: {exc.strerror}{hint}") from None


def write_pidfile(path: str | None) -> PIDFile | None:
    """``--pidfile``, written now: before ``--user``, as root, so it may live in /run.

    A ``restart`` re-executes busd with the same pid: a file that names it
    already is kept as it is (busd may no longer be allowed to replace it).
    """
    if not path:
        return None
    bus = Bus()
    bus.subscribe("log", lambda msg, level=logging.INFO: log.log(level, "%s", msg))
    pidfile = PIDFile(bus, path)
    if read_pid(path) == os.getpid():
        pidfile.finalized = True
    else:
        pidfile.start()
    return pidfile


def remove_pidfile(pidfile: PIDFile) -> None:
    """Remove our PID file, or say why it stays: busd wrote it as root, then switched user."""
    directory = os.path.dirname(os.path.abspath(pidfile.pidfile))
    if read_pid(pidfile.pidfile) == os.getpid() and not os.access(directory, os.W_OK | os.X_OK):
        log.info(
            "PID file %s left: busd wrote it before --user and may not remove it "
            "from %s now (the next busd replaces it)",
            pidfile.pidfile,
            directory,
        )
        return
    pidfile.exit()


def make_log_dir(opts: argparse.Namespace) -> None:
    """With --user, a --log-dir that does not exist yet is made by root, owned by that user."""
    if not opts.log_dir or opts.uid is None or os.path.exists(opts.log_dir):
        return
    os.makedirs(opts.log_dir)
    os.chown(opts.log_dir, opts.uid, -1 if opts.gid is None else opts.gid)


def switch_user(opts: argparse.Namespace) -> None:
    """``--user``/``--group`` (checked and resolved by the parser): give up root now."""
    if opts.uid is None and opts.gid is None:
        return
    drop_ids(opts.uid, opts.gid)
    log.debug("switched to uid %d, gid %d", os.getuid(), os.getgid())


def open_logs(opts: argparse.Namespace) -> LogDir | None:
    """``--log-dir``: busd's own output to its file from now on (as the user busd runs as)."""
    if not opts.log_dir:
        return None
    logs = LogDir(opts.log_dir, opts.name or ep.DEFAULT_NAME)
    try:
        logs.redirect_master()
    except OSError as exc:
        raise UsageError(
            f"--log-dir {logs.directory}: {exc.strerror} (busd writes there as uid {os.getuid()})"
        ) from None
    return logs


def close_listeners(listeners: list[socket.socket]) -> None:
    """Close the --listen sockets and remove their files (no runtime dir of ours to clean)."""
    for sock in listeners:
        name = sock.getsockname()
        sock.close()
        if isinstance(name, str) and name:
            with contextlib.suppress(OSError):
                os.unlink(name)


__all__ = [
    "UsageError",
    "close_listeners",
    "make_log_dir",
    "make_runtime_dir",
    "open_logs",
    "remove_pidfile",
    "switch_user",
    "write_pidfile",
]
