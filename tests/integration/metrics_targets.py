"""A worker with its own prometheus_client metrics, for the metrics tests."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from busd.client.bus import ClientBus

HITS = Counter("app_hits", "Hits counted by each worker's listener")
BUSY = Gauge("app_busy", "A gauge per worker")
QUEUE = Gauge("app_queue", "A gauge summed per pool", multiprocess_mode="livesum")


def main(bus: ClientBus) -> None:
    """Count each ``hit``; set the gauges at start."""
    bus.subscribe("hit", lambda: HITS.inc())
    bus.subscribe("start", lambda: (BUSY.set(1), QUEUE.set(2)))
