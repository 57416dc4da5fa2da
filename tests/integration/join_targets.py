"""A worker target for the joined-pool tests: each lifecycle step and "news" message reported."""

from __future__ import annotations

import os
from typing import Any

from busd.client.bus import ClientBus
from busd.testing.probe import Probe


def main(bus: ClientBus) -> None:
    """Report start, graceful, stop, exit and each 'news' message of this worker."""
    probe = Probe()
    worker = int(os.environ.get("BUSD_WORKER", "-1"))
    for channel in ("start", "graceful", "stop", "exit"):
        bus.subscribe(channel, lambda channel=channel: probe.report(channel, worker=worker))

    def news(value: Any) -> None:
        probe.report("news", worker=worker, value=value)

    bus.subscribe("news", news)
    bus.subscribe("exit", probe.close, priority=100)
