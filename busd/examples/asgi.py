"""The smallest ASGI application: a pool of uvicorn workers (``pip install 'busd[asgi]'``).

    busd -w 4 --listen tcp:127.0.0.1:8000 asgi:busd.examples.asgi:app

Each worker serves on the socket busd made; the body names the worker.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any


async def app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[Any]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """Answer every HTTP request with the worker that served it."""
    if scope["type"] != "http":
        return
    body = f"worker {os.environ.get('BUSD_WORKER', '?')} pid {os.getpid()}\n".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
