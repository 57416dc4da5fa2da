"""The smallest busd worker: logs each lifecycle step of its bus.

busd -w 4 busd.examples.hello:main
"""

from __future__ import annotations

import logging
import os

from busd.client.bus import ClientBus

log = logging.getLogger("busd.examples.hello")


def main(bus: ClientBus) -> None:
    """Subscribe listeners that say what happens to this worker."""
    worker = os.environ.get("BUSD_WORKER", "?")

    def say(what: str) -> None:
        print(f"worker {worker} (pid {os.getpid()}): {what}", flush=True)

    bus.subscribe("start", lambda: say("started"))
    bus.subscribe("graceful", lambda: say("reloaded"))
    bus.subscribe("stop", lambda: say("stopped"))
    bus.subscribe("exit", lambda: say("exiting"))
