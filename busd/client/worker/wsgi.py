"""``wsgi:pkg.mod:app``: a WSGI application served by waitress in each worker.

waitress's loop runs here one poll at a time, so stopping is done by its own
thread: the listening servers stop accepting (``accepting = False``: the
backlog stays for the other workers), every open channel finishes its
requests and closes, for at most the drain time; then the task threads end.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from busd.client.worker.serve import Served, drain_time

try:
    from waitress import wasyncore  # type: ignore[import-untyped]
    from waitress.server import BaseWSGIServer, create_server  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError("wsgi: targets need waitress (pip install 'busd[wsgi]')") from exc

POLL = 1.0
THREADS = 8


class WsgiServed(Served):
    """waitress in the serving thread."""

    def __init__(self, app: Any, name: str) -> None:
        super().__init__(app, name)
        self._stopping = threading.Event()
        self._wake: Any = None

    def serve(self, sockets: list[socket.socket]) -> None:
        """Poll waitress's map until stopped, then drain."""
        self._stopping.clear()
        # "Task queue depth is N" at every burst: a busy pool is not news.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        socket_map: dict[int, Any] = {}
        server: Any = create_server(
            self.app, map=socket_map, sockets=sockets, threads=THREADS, ident="busd"
        )
        listeners = [d for d in socket_map.values() if isinstance(d, BaseWSGIServer)]
        self._wake = listeners[0].trigger
        self.ready.set()
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=POLL, map=socket_map, use_poll=True, count=1)
            for listener in listeners:
                listener.accepting = False
            deadline = time.monotonic() + drain_time()
            while _channels(socket_map, listeners) and time.monotonic() < deadline:
                wasyncore.loop(timeout=0.05, map=socket_map, use_poll=True, count=1)
        finally:
            listeners[0].task_dispatcher.shutdown()
            wasyncore.close_all(socket_map)
            del server

    def request_stop(self) -> None:
        """Flag the loop and wake its poll."""
        self._stopping.set()
        if self._wake is not None:
            self._wake.pull_trigger()


def _channels(socket_map: dict[int, Any], listeners: list[Any]) -> list[Any]:
    triggers = {id(listener.trigger) for listener in listeners}
    return [d for d in socket_map.values() if d not in listeners and id(d) not in triggers]


def make(app: Any, name: str) -> Served:
    """The serving object for ``app`` (see busd.client.worker.serve)."""
    return WsgiServed(app, name)
