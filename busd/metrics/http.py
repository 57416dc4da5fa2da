"""``busd --metrics HOST:PORT``: ``GET /metrics``, one connection at a time, no polling.

::

    [busd-metrics-http] accept() (blocks, no timeout: no wake-up of its own)
        read the request (5 s at most, 16 KiB at most)
        GET /metrics --Scrape--> [busd-metrics] --> body --> 200, Connection: close
        anything else: 404 / 405;  close(): shutdown() ends the accept

A scraper that stalls holds the next one for at most its 5 seconds; a
scrape itself is bounded by the metrics thread's gather bound.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading

from busd.core.errors import BusError
from busd.master.osthread import name_os_thread
from busd.metrics.errors import MetricsError, parse_address
from busd.metrics.owner import MetricsOwner

log = logging.getLogger(__name__)

#: How long one connection may take to send its request and read the answer.
CONNECTION_TIMEOUT = 5.0
REQUEST_LIMIT = 16 * 1024


class MetricsEndpoint:
    """The listening socket and its thread."""

    def __init__(self, owner: MetricsOwner, address: str) -> None:
        self.owner = owner
        host, port = parse_address(address)
        try:
            self._sock = socket.create_server((host, port), reuse_port=False)
        except OSError as exc:
            raise MetricsError(f"--metrics {address}: {exc.strerror or exc}") from None
        self.address = self._sock.getsockname()[:2]
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="busd-metrics-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop accepting and end the thread."""
        self._closing.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(CONNECTION_TIMEOUT + 1.0)

    def _serve(self) -> None:
        name_os_thread("busd-metrics-http")
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                if self._closing.is_set():
                    return
                continue
            with conn:
                conn.settimeout(CONNECTION_TIMEOUT)
                try:
                    self._answer(conn)
                except OSError:
                    continue  # the scraper went away: its problem
                except Exception:
                    log.exception("metrics: a request failed")

    def _answer(self, conn: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request and len(request) < REQUEST_LIMIT:
            chunk = conn.recv(4096)
            if not chunk:
                return
            request += chunk
        head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        first, *lines = head.split("\r\n")
        parts = first.split()
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)
        }
        if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
            _reply(conn, 405, "text/plain", b"only GET\n")
            return
        if parts[1].split("?", 1)[0] != "/metrics":
            _reply(conn, 404, "text/plain", b"busd serves /metrics\n")
            return
        try:
            body, content_type, _ = self.owner.scrape(headers.get("accept", ""))
        except BusError as exc:
            _reply(conn, 503, "text/plain", f"{exc}\n".encode())
            return
        _reply(conn, 200, content_type, b"" if parts[0] == "HEAD" else body, len(body))


def _reply(
    conn: socket.socket, code: int, content_type: str, body: bytes, length: int | None = None
) -> None:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Unavailable"}[code]
    head = (
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\nConnection: close\r\n\r\n"
    )
    conn.sendall(head.encode("latin-1") + body)


__all__ = ["MetricsEndpoint"]
