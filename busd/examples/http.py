"""A pre-fork HTTP server: every worker accepts on the socket the master made.

    busd -w 4 --listen tcp:127.0.0.1:8000 --reload respawn busd.examples.http:main

Each worker serves on a duplicate of the inherited listening socket while
its bus is STARTED.  On stop it stops accepting and finishes the requests it
has; connections still waiting in the socket's backlog are accepted by the
other workers, so a ``--reload respawn`` (new workers first, then the old
ones leave) drops none.

Every worker waits on the same socket, so all of them wake for each new
connection and only one gets it: accept() must not block (the others would
sit in it, deaf to a stop).  The loop waits on the socket and a wake pipe,
so a stop is seen at once, not at the next poll.
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from busd.client.bus import ClientBus
from busd.pool.listen import inherited


class Handler(BaseHTTPRequestHandler):
    """Answers every GET with the worker that served it."""

    def do_GET(self) -> None:
        body = f"worker {os.environ.get('BUSD_WORKER', '?')} pid {os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a busy pool would drown its log."""


class Server(ThreadingHTTPServer):
    """An HTTP server on an already listening socket (no bind, no listen)."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock.getsockname() or ("", 0), Handler, bind_and_activate=False)
        self.socket.close()
        # Non-blocking is shared by every worker's copy (one open file), as it should be.
        sock.setblocking(False)
        self.socket = sock
        self._wake_r, self._wake_w = os.pipe()

    def serve_until_stopped(self) -> None:
        """Accept and serve until :meth:`stop_serving`; no polling interval."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if self._wake_r in ready:
                    return
                self._accept_one()

    def _accept_one(self) -> None:
        try:
            request, address = self.get_request()
        except OSError:  # another worker took it (EAGAIN), or the peer left
            return
        try:
            self.process_request(request, address)
        except Exception:  # noqa: BLE001 - one connection's failure, logged by the server
            self.handle_error(request, address)
            self.shutdown_request(request)

    def stop_serving(self) -> None:
        """Make :meth:`serve_until_stopped` return (from any thread)."""
        os.write(self._wake_w, b"\0")

    def server_close(self) -> None:
        """Close our socket, wait for the requests in progress, close the wake pipe."""
        super().server_close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)


class HttpWorker:
    """Serves while the bus is STARTED."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.server: Server | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Serve on a duplicate of the shared socket, in a thread."""
        self.server = Server(self.listener.dup())
        self.thread = threading.Thread(target=self.server.serve_until_stopped, name="http")
        self.thread.start()

    def stop(self) -> None:
        """Stop accepting, finish the requests in progress, close our duplicate."""
        server, self.server = self.server, None
        if server is None:
            return
        server.stop_serving()
        if self.thread is not None:
            self.thread.join(10.0)
        server.server_close()


def main(bus: ClientBus) -> None:
    """Serve HTTP on the first socket the master passed down."""
    listeners = inherited()
    if not listeners:
        raise SystemExit("busd.examples.http needs --listen tcp:HOST:PORT or unix:PATH")
    worker = HttpWorker(listeners[0])
    bus.subscribe("start", worker.start)
    bus.subscribe("stop", worker.stop)
