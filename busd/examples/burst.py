"""A master plugin for load tests: bursts of publishes, on request.

::

    busd --plugin busd.examples.burst:plugin -w 4 busd.examples.hello:main

A broadcast of ``burst`` with ``(channel, first, count)`` makes the master
publish ``count`` messages on ``channel``, numbered ``first`` to ``first +
count - 1``, at once (:meth:`busd.master.bus.MasterBus.publish_many`: they
reach every client in BATCH frames, in order, nothing between them).
``scripts/soak.py`` soaks the relay with it.
"""

from __future__ import annotations

from typing import Any

#: Most messages one burst may ask for.
MAX_BURST = 1_000_000


def plugin(master: Any) -> None:
    """Subscribe the master to ``burst``."""

    def burst(channel: str, first: int, count: int) -> int:
        if not isinstance(channel, str) or not 0 < count <= MAX_BURST:
            raise ValueError(f"burst: a channel and 1..{MAX_BURST} messages")
        return int(master.publish_many(channel, ((i,) for i in range(first, first + count))))

    master.subscribe("burst", burst)
