"""Real HTTP servers in pool workers: ``asgi:pkg.mod:app`` and ``wsgi:pkg.mod:app``.

::

    worker main thread       dispatcher thread (bus listeners)      [busd-serve] thread
    run(TARGET) -> block     start: Served.start() ---------------> server loop: accept,
                               waits until it accepts                 answer (uvicorn or
                             stop:  Served.stop() -- request_stop ->  waitress); on stop:
                               waits (bounded) for the thread         stop accepting, drain

Each worker serves on duplicates of the listening sockets the master made
(``BUSD_LISTEN_FDS``) while its bus is STARTED.  On stop it first stops
accepting (connections still in the shared backlog go to the other workers),
then lets every connection it accepted get its answer, for at most the drain
time (``BUSD_GRACEFUL_TIMEOUT`` less a second: the pool kills a worker that
takes longer); idle keep-alive connections are closed.  Only then does the
server close: no connection accepted here is closed without an answer.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from busd.client.bus import ClientBus

log = logging.getLogger(__name__)

#: TARGET prefixes and the module serving each.
SERVERS = {"asgi": "busd.client.worker.asgi", "wsgi": "busd.client.worker.wsgi"}
START_TIMEOUT = 30.0


def inherited(environ: dict[str, str] | None = None) -> list[socket.socket]:
    """Duplicates of the listening sockets the master passed down (ours to close)."""
    env = os.environ if environ is None else environ
    fds = [int(fd) for fd in env.get("BUSD_LISTEN_FDS", "").split(",") if fd.strip()]
    return [socket.socket(fileno=os.dup(fd)) for fd in fds]


def drain_time(environ: dict[str, str] | None = None) -> float:
    """How long a stopping worker lets its connections finish."""
    env = os.environ if environ is None else environ
    try:
        graceful = float(env.get("BUSD_GRACEFUL_TIMEOUT", "10"))
    except ValueError:
        graceful = 10.0
    return max(0.5, graceful - 1.0)


class Served:
    """A server running in its own thread while the bus is STARTED (subclasses say how)."""

    def __init__(self, app: Any, name: str) -> None:
        self.app = app
        self.name = name
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Serve in a thread; return once it accepts (raise if it cannot)."""
        sockets = inherited()
        if not sockets:
            raise RuntimeError(f"{self.name} needs --listen tcp:HOST:PORT or unix:PATH")
        self.ready.clear()
        self._thread = threading.Thread(target=self._guarded, args=(sockets,), name="busd-serve")
        self._thread.start()
        if not self.ready.wait(START_TIMEOUT):
            raise RuntimeError(f"{self.name} did not start within {START_TIMEOUT}s")
        if self.failure is not None:
            self._thread.join(START_TIMEOUT)
            raise RuntimeError(f"{self.name} could not start: {self.failure}")

    def stop(self) -> None:
        """Stop accepting, drain, close; wait (bounded) for the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self.request_stop()
        thread.join(drain_time() + 5.0)
        if thread.is_alive():
            log.error("%s did not stop in time", self.name)

    def _guarded(self, sockets: list[socket.socket]) -> None:
        self.failure = None
        try:
            self.serve(sockets)
        except BaseException as exc:  # a thread's boundary: say why, then let stop() go on
            log.exception("%s failed", self.name)
            self.failure = exc
        finally:
            self.ready.set()
            for sock in sockets:
                sock.close()

    def serve(self, sockets: list[socket.socket]) -> None:
        """Run the server on ``sockets`` until stopped; set ``ready`` once accepting."""
        raise NotImplementedError

    def request_stop(self) -> None:
        """Ask the serving thread to stop accepting and drain (from another thread)."""
        raise NotImplementedError


def load_app(spec: str) -> Any:
    """Import ``pkg.mod:app`` and return ``app``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"an application is pkg.module:app, not {spec!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def server_target(kind: str, spec: str) -> Callable[[ClientBus], None]:
    """The worker function serving application ``spec`` with server ``kind``."""
    module: Any = importlib.import_module(SERVERS[kind])
    served: Served = module.make(load_app(spec), f"{kind}:{spec}")

    def main(bus: ClientBus) -> None:
        bus.subscribe("start", served.start)
        bus.subscribe("stop", served.stop)

    return main
