"""A pool worker's main: connect, call TARGET with the bus, block until exit.

``python -m busd.client.worker.main pkg.mod:func`` is what ``busd -w N pkg.mod:func``
runs in each worker.  The worker dies with its master (``PR_SET_PDEATHSIG``,
then a check that the parent is still the master, closing the race of a
master that died first), ignores SIGINT (a terminal's Ctrl-C goes to the
whole process group; the master decides), and treats SIGTERM as "this
worker leaves": its stop and exit listeners run and it tells the master.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import logging
import os
import select
import signal
import sys
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any

from setproctitle import setproctitle

from busd.client.bus import ClientBus, connect
from busd.client.worker.descendants import end_descendants
from busd.client.worker.logfiles import follow as follow_log_file
from busd.client.worker.serve import SERVERS, server_target
from busd.core.errors import MasterLost

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Have the kernel send ``sig`` when the parent ends; raise if it already has.

    Does nothing outside Linux or outside a pool (no ``BUSD_PARENT_PID``).
    Call it from the main thread.
    """
    parent = os.environ.get("BUSD_PARENT_PID", "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)  # the process's own libc; no ldconfig run
    if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != int(parent):
        raise MasterLost(f"the master (pid {parent}) ended before this worker started")


def load_target(target: str) -> Callable[[ClientBus], Any]:
    """Import ``pkg.mod:func`` and return ``func``.

    ``asgi:pkg.mod:app`` and ``wsgi:pkg.mod:app`` import ``app`` and return a
    function serving it on the listening sockets (see :mod:`busd.client.worker.serve`).
    """
    kind, _, spec = target.partition(":")
    if kind in SERVERS:
        return server_target(kind, spec)
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"TARGET is pkg.module:function, not {target!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    return obj  # type: ignore[no-any-return]


def master_watch() -> int | None:
    """A pidfd of the master when this worker was forked by a fork server, else None."""
    master = os.environ.get("BUSD_MASTER_PID", "")
    if not master.isdigit() or int(master) == os.getppid():
        return None
    try:
        return os.pidfd_open(int(master))
    except OSError:
        return None


def _ended(pidfd: int | None) -> bool:
    return pidfd is None or bool(select.select([pidfd], [], [], 0)[0])


def install_signals(bus: ClientBus) -> None:
    """SIGTERM: leave (this worker only); SIGINT: ignored; SIGHUP: local graceful."""
    parent = os.getppid()
    master = master_watch()

    def on_term(signum: int, frame: FrameType | None) -> None:
        # From the pool (scale down, retire) or from the kernel when the master
        # died (PR_SET_PDEATHSIG): then there is nobody to say goodbye to.
        nonlocal parent
        now = os.getppid()
        if now != parent and master is not None and not _ended(master):
            # The fork server that made this worker ended, not the master: stay.
            # From now on the heartbeat tells whether the master lives.
            parent = now
            return
        alive = now == parent
        bus.defer(lambda: bus.leave("SIGTERM", master_alive=alive))

    def on_hup(signum: int, frame: FrameType | None) -> None:
        bus.defer(bus._do_graceful)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_hup)


def report_boot_failure(headline: str) -> bool:
    """Write ``headline`` and the current traceback for the pool (``BUSD_BOOT_DIR``).

    The pool shows each distinct boot error once, however many workers hit
    it.  False when there is no boot dir or it cannot be written: then the
    caller logs the error itself.
    """
    directory = os.environ.get("BUSD_BOOT_DIR")
    if not directory:
        return False
    text = f"{headline}\n{traceback.format_exc()}"
    path = os.path.join(directory, str(os.getpid()))
    try:
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    except OSError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Run one worker; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m busd.client.worker.main pkg.module:function", file=sys.stderr)
        return 2
    # As busd.pool.proctitle's (busd.client does not import the master side):
    # ps tells workers apart.
    setproctitle(
        f"busd: worker {os.environ.get('BUSD_NAME') or 'busd'} "
        f"{os.environ.get('BUSD_WORKER') or '?'}"
    )
    configure_logging()
    return run(args[0])


def configure_logging() -> None:
    """Log to stderr at ``BUSD_LOG_LEVEL``, each line naming the worker (a process main)."""
    stamp = "" if os.environ.get("BUSD_LOG_FORMAT") == "plain" else "%(asctime)s.%(msecs)03d "
    logging.basicConfig(
        level=os.environ.get("BUSD_LOG_LEVEL", "WARNING").upper(),
        format=f"{stamp}worker {os.environ.get('BUSD_WORKER', '?')} "
        "[%(process)d] %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        force=True,
    )


def run(target: str | Callable[[ClientBus], Any]) -> int:
    """Be a worker for ``target`` (a name to import, or the function itself).

    Whatever processes the worker started and left running end with it.
    """
    try:
        return _serve(target)
    finally:
        end_descendants()


def _serve(target: str | Callable[[ClientBus], Any]) -> int:
    log = logging.getLogger(__name__)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        die_with_parent()
        func = load_target(target) if isinstance(target, str) else target
        bus = connect(mirror=False)
    except Exception as exc:
        if not report_boot_failure("worker could not start"):
            log.exception("worker could not start: %s", exc)
        return 70
    install_signals(bus)
    follow_log_file(bus)
    try:
        func(bus)
    except Exception:
        if not report_boot_failure(f"TARGET {target} failed"):
            log.exception("TARGET %s failed", target)
        bus.leave("target failed")
        return 70
    bus.block()
    # Everything alive now lives until the end: spare the final collection
    # (tens of ms of CPU per worker, all at once when a pool exits).
    gc.freeze()
    return 0


if __name__ == "__main__":
    sys.exit(main())
