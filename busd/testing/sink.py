"""The test's end of the probes (:mod:`busd.testing.probe`): reports from child processes.

::

    child: Probe().report(event, **data) --PUSH--> [PULL] Sink (the test thread)

Reports are read with deadlines; one not asked for yet is kept for later.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

__all__ = ["Report", "Sink"]

Report = dict[str, Any]


class Sink:
    """The test's end of the probes: a PULL socket, read with deadlines."""

    def __init__(self, directory: Path) -> None:
        self.endpoint = f"ipc://{directory}/probe.sock"
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._sock = self._ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(self.endpoint)
        self.seen: list[Report] = []
        self._unclaimed: collections.deque[Report] = collections.deque()

    def _read(self, timeout: float) -> Report | None:
        if not self._sock.poll(max(1, int(timeout * 1000))):
            return None
        report: Report = msgpack.unpackb(self._sock.recv(), raw=False)
        self.seen.append(report)
        return report

    def get(
        self, event: str, timeout: float, where: Callable[[Report], bool] | None = None
    ) -> Report | None:
        """The next report of ``event`` (matching ``where``), or None past ``timeout``."""

        def wanted(r: Report) -> bool:
            return bool(r.get("event") == event and (where is None or where(r)))

        for r in self._unclaimed:
            if wanted(r):
                self._unclaimed.remove(r)
                return r
        deadline = time.monotonic() + timeout
        while True:
            report = self._read(deadline - time.monotonic())
            if report is None:
                return None
            if wanted(report):
                return report
            self._unclaimed.append(report)

    def expect(
        self, event: str, timeout: float = 10.0, where: Callable[[Report], bool] | None = None
    ) -> Report:
        """The next report of ``event`` (matching ``where``); fail past ``timeout``."""
        return self.collect(event, 1, timeout, where)[0]

    def collect(
        self,
        event: str,
        count: int,
        timeout: float = 10.0,
        where: Callable[[Report], bool] | None = None,
    ) -> list[Report]:
        """``count`` reports of ``event``, in arrival order; fail past ``timeout``."""

        def wanted(r: Report) -> bool:
            return bool(r.get("event") == event and (where is None or where(r)))

        found = [r for r in self._unclaimed if wanted(r)][:count]
        for r in found:
            self._unclaimed.remove(r)
        deadline = time.monotonic() + timeout
        while len(found) < count:
            report = self._read(deadline - time.monotonic())
            if report is None:
                pytest.fail(
                    f"got {len(found)} of {count} {event!r} reports in {timeout}s; "
                    f"other reports: {list(self._unclaimed)[-10:]}"
                )
            if wanted(report):
                found.append(report)
            else:
                self._unclaimed.append(report)
        return found

    def close(self) -> None:
        """Close the socket and its context."""
        self._sock.close(linger=0)
        self._ctx.term()
