"""``asgi:pkg.mod:app``: an ASGI application served by uvicorn in each worker.

uvicorn's own shutdown closes at once the connections it accepted but had
not read a request from yet; here the shutdown is ours: stop accepting (the
listening sockets leave the event loop before the servers close, so no
connection is half accepted), wait for every accepted connection to get its
answer and close, closing only idle keep-alive ones, for at most the drain
time; then what uvicorn does (lifespan shutdown).
"""

from __future__ import annotations

import asyncio
import math
import socket
from typing import Any

from busd.client.worker.serve import Served, drain_time

try:
    import uvicorn
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError("asgi: targets need uvicorn (pip install 'busd[asgi]')") from exc

POLL = 0.02


class _Server(uvicorn.Server):
    """uvicorn's server with a shutdown that answers every accepted connection."""

    def __init__(self, config: uvicorn.Config, served: AsgiServed) -> None:
        super().__init__(config)
        self.served = served

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.served.loop = asyncio.get_running_loop()
        self.served.ready.set()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        for server in self.servers:
            for sock in server.sockets:
                loop.remove_reader(sock.fileno())
        # Connections accepted in the last readiness event become transports now.
        await asyncio.sleep(POLL)
        for server in self.servers:
            server.close()
        deadline = loop.time() + drain_time()
        while self.server_state.connections and loop.time() < deadline:
            for connection in list(self.server_state.connections):
                cycle = getattr(connection, "cycle", None)
                if cycle is not None and cycle.response_complete:
                    connection.shutdown()  # idle keep-alive: nothing is owed
            await asyncio.sleep(POLL)
        await super().shutdown(sockets=None)


class AsgiServed(Served):
    """uvicorn in the serving thread, with its own event loop."""

    def __init__(self, app: Any, name: str) -> None:
        super().__init__(app, name)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: _Server | None = None

    def serve(self, sockets: list[socket.socket]) -> None:
        """Run uvicorn on ``sockets`` (its signal handling stays off: not the main thread)."""
        config = uvicorn.Config(
            self.app,
            lifespan="auto",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=math.ceil(drain_time()),
        )
        self._server = _Server(config, self)
        asyncio.run(self._server.serve(sockets=sockets))

    def request_stop(self) -> None:
        """Set uvicorn's exit flag from the loop's own thread."""
        server, loop = self._server, self.loop
        if server is None or loop is None:
            return

        def stop() -> None:
            server.should_exit = True

        loop.call_soon_threadsafe(stop)


def make(app: Any, name: str) -> Served:
    """The serving object for ``app`` (see busd.client.worker.serve)."""
    return AsgiServed(app, name)
