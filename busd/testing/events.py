"""The master's watch stream, read in a test: each STATE, PUBLISH and EVENT as a dict.

::

    busd master --PUB--> [SUB] Events --> {"kind": "publish", "channel": ..., "seq": ...}

Read in the test's own thread, with deadlines; no background thread.
"""

from __future__ import annotations

import collections
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from busd.core.control import Control
from busd.core.endpoints import PUB_HWM, configure
from busd.core.errors import ProtocolError
from busd.core.wire import Kind, decode_messages

__all__ = ["PROBE", "Events"]

#: The channel a new watch stream sends itself to know it is live.
PROBE = "busd.test.probe"


class Events:
    """The master's watch stream: each STATE, PUBLISH and EVENT as a dict.

    ``{"kind": "state", "state": ...}``, ``{"kind": "publish", "channel":
    ..., "args": [...], "kwargs": {...}}``, ``{"kind": "event", "event":
    ..., "data": {...}}``, each with ``seq``.  Given ``control``, the stream
    is live when made (a SUB socket misses what is published before its
    subscription reaches the master): everything published after arrives.
    """

    def __init__(self, pub: str, control: Control | None = None, timeout: float = 10.0) -> None:
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._sub = self._ctx.socket(zmq.SUB)
        configure(self._sub, PUB_HWM)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._sub.connect(pub)
        self.seen: list[dict[str, Any]] = []
        #: Messages read (of a BATCH) but not yet returned by next().
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        if control is not None:
            try:
                self.wait_live(control, timeout)
            except BaseException:
                self.close()
                raise

    def wait_live(self, control: Control, timeout: float) -> None:
        """Broadcast a probe until this stream sees it, then forget it."""
        token = uuid.uuid4().hex
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            control.request("broadcast", channel=PROBE, args=[token], kwargs={})
            until = time.monotonic() + 0.2
            while (doc := self.next(max(0.0, until - time.monotonic()))) is not None:
                if doc.get("channel") == PROBE and doc["args"] == [token]:
                    self.seen.clear()
                    return
        pytest.fail(f"no message of the master reached this test within {timeout}s", pytrace=False)

    def next(self, timeout: float = 10.0) -> dict[str, Any] | None:
        """The next message, or None past ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if self._pending:
                doc = self._pending.popleft()
                self.seen.append(doc)
                return doc
            if remaining <= 0 or not self._sub.poll(int(remaining * 1000) + 1):
                return None
            try:
                msgs = decode_messages(self._sub.recv())
            except ProtocolError:
                continue
            # A BATCH holds several: the first now, the rest on the next calls.
            self._pending.extend(doc for doc in map(_describe, msgs) if doc is not None)

    def expect(self, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """The next message whose fields equal ``match`` (``event="worker_exited"``)."""
        deadline = time.monotonic() + timeout
        while True:
            doc = self.next(deadline - time.monotonic())
            if doc is None:
                pytest.fail(
                    f"no message matching {match} within {timeout}s; seen: {self.seen[-10:]}",
                    pytrace=False,
                )
            if all(doc.get(k) == v for k, v in match.items()):
                return doc

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while (doc := self.next()) is not None:
            yield doc

    def wait_readable(self, timeout: float) -> None:
        """Return when a message is waiting or ``timeout`` passed (for wait loops)."""
        self._sub.poll(max(1, int(timeout * 1000)))

    def close(self) -> None:
        """Close the socket and its context."""
        self._sub.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> Events:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _describe(msg: Any) -> dict[str, Any] | None:
    doc: dict[str, Any] = {"seq": msg.seq, "kind": msg.kind.name.lower()}
    if msg.kind is Kind.STATE:
        doc["state"] = msg.items[2]
    elif msg.kind is Kind.PUBLISH:
        channel, args, kwargs, _ack = msg.items[2:]
        doc.update(channel=channel, args=args, kwargs=kwargs)
    elif msg.kind is Kind.EVENT:
        doc.update(event=msg.items[2], data=msg.items[3])
    else:
        return None
    return doc
