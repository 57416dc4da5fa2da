"""A worker with metrics of its own, in plain prometheus_client (``busd[metrics]``).

    busd --metrics 127.0.0.1:9100 -w 4 busd.examples.metrics:main
    busctl publish hit                      # every worker's listener counts it
    curl -s 127.0.0.1:9100/metrics | grep busd_example_hits_total

The worker counts each message on the channel ``hit`` in a Counter of the
default registry, as any application would; busd gathers every worker's
registry when it is scraped and serves the pool's sum
(``busd_example_hits_total{pool="main"} 4.0`` after one publish to 4
workers).  ``BUSD_EXAMPLE_SERIES=N`` adds N counters
``busd_example_series_<i>``, each incremented once at start: a registry of
a given size, for scripts/bench_metrics.py.
"""

from __future__ import annotations

import os

from prometheus_client import Counter

from busd.client.bus import ClientBus

#: How many extra counters a worker makes (the bench asks for 50).
SERIES_ENV = "BUSD_EXAMPLE_SERIES"


def series_wanted() -> int:
    """``BUSD_EXAMPLE_SERIES`` as a count (0 when unset)."""
    text = os.environ.get(SERIES_ENV, "").strip()
    if not text:
        return 0
    if not text.isdigit():
        raise ValueError(f"{SERIES_ENV} is a count of series, not {text!r}")
    return int(text)


def main(bus: ClientBus) -> None:
    """Count ``hit`` messages; make the extra series; block until the bus exits."""
    hits = Counter("busd_example_hits", "Messages this worker received on the channel 'hit'.")
    extra = [
        Counter(f"busd_example_series_{i}", f"Extra series {i}, incremented once at start.")
        for i in range(series_wanted())
    ]
    for counter in extra:
        counter.inc()
    bus.subscribe("hit", lambda *args, **kwargs: hits.inc())
    bus.block()
