"""The requests a client sent its master and waits for: one Future per request id.

::

    any thread --add(req_id)--> Pending <--settle(req_id, reply) | fail_all()-- [busd-link]
    (it sends the request)        |  a caller that gave up: forget(future)
                                  +--> Future: the reply's result, or its error

The requesting thread waits on its Future (with a timeout); the link thread
settles it when the reply comes, or fails every one when the link closes.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

from busd.core.control import reply_result
from busd.core.errors import MasterLost
from busd.core.wire import Message


class Pending:
    """Futures by request id; safe to use from any thread."""

    def __init__(self) -> None:
        self._futures: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()

    def add(self, req_id: int) -> Future[Any]:
        """A Future for the reply to ``req_id`` (asked before the request is sent)."""
        future: Future[Any] = Future()
        future.req_id = req_id  # type: ignore[attr-defined]
        with self._lock:
            self._futures[req_id] = future
        return future

    def forget(self, future: Future[Any]) -> None:
        """Stop waiting for a request's reply (its caller timed out)."""
        with self._lock:
            self._futures.pop(getattr(future, "req_id", -1), None)

    def settle(self, req_id: int, msg: Message) -> None:
        """The reply to ``req_id`` came: its result or error goes to the waiting Future."""
        with self._lock:
            future = self._futures.pop(req_id, None)
        if future is None or future.done():
            return
        try:
            future.set_result(reply_result(msg))
        except Exception as exc:  # noqa: BLE001 - handed to the requesting thread
            future.set_exception(exc)

    def fail_all(self) -> None:
        """The link closed: every request still waiting fails with MasterLost."""
        with self._lock:
            futures, self._futures = self._futures, {}
        for future in futures.values():
            if not future.done():
                future.set_exception(MasterLost("the link to the master closed"))


__all__ = ["Pending"]
