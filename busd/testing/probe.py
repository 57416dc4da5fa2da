"""Reports from a process under test to the test that started it.

A test binds a PULL socket (:class:`busd.testing.Sink`) and passes its
endpoint in ``BUSD_PROBE``; code in the child calls ``probe.report("started",
n=1)``.  Each report is one msgpack map with ``event`` and ``pid``.  The
socket lingers up to two seconds on close so the last reports of a process
that is exiting still arrive.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import msgpack
import zmq

from busd.core.stats import Stats

ENV = "BUSD_PROBE"


class Probe:
    """A PUSH socket to the test's sink; safe to call from several threads."""

    def __init__(self, endpoint: str | None = None) -> None:
        self.endpoint = endpoint or os.environ[ENV]
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._sock = self._ctx.socket(zmq.PUSH)
        self._sock.setsockopt(zmq.LINGER, 2000)
        self._sock.connect(self.endpoint)
        self._lock = threading.Lock()

    def report(self, event: str, **data: Any) -> None:
        """Send one report."""
        frame = msgpack.packb(
            {"event": event, "pid": os.getpid(), **data}, use_bin_type=True, default=_plain
        )
        with self._lock:
            self._sock.send(frame)

    def close(self) -> None:
        """Flush (bounded by the linger) and close."""
        with self._lock:
            self._sock.close()
            self._ctx.term()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _plain(value: Any) -> Any:
    """A statistics snapshot (busd.core.stats.Stats) travels as the map it reads as."""
    if isinstance(value, Stats):
        return value.as_dict()
    raise TypeError(f"cannot serialize {type(value).__name__!r} object")
