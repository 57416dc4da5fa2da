"""Worker targets for the daemon tests: each step reported to the test's probe."""

from __future__ import annotations

import os

from busd import states
from busd.client.bus import ClientBus
from busd.testing.probe import Probe


def main(bus: ClientBus) -> None:
    """Report start, graceful, stop and exit of this worker."""
    probe = Probe()
    worker = int(os.environ.get("BUSD_WORKER", "-1"))
    for channel in ("start", "graceful", "stop", "exit"):
        bus.subscribe(channel, lambda channel=channel: probe.report(channel, worker=worker))
    bus.subscribe("exit", probe.close, priority=100)
    probe.report("spawned", worker=worker, generation=os.environ.get("BUSD_GENERATION"))


def crash(bus: ClientBus) -> None:
    """Fail at once, every time (a flapping worker)."""
    raise RuntimeError("this worker cannot start")


def slow_stop(bus: ClientBus) -> None:
    """Report start, then hang in the stop listener (a worker that will not stop)."""
    import threading

    probe = Probe()
    bus.subscribe("start", lambda: probe.report("start"))

    def stop() -> None:
        probe.report("stopping")
        threading.Event().wait(60)

    bus.subscribe("stop", stop)


def leave_at_once(bus: ClientBus) -> None:
    """Join, then leave straight away (a worker that only says who it is)."""
    bus.leave("done")


#: Not a function: ``busd ... tests.integration.targets:NOT_CALLABLE`` cannot boot.
NOT_CALLABLE = 42


def crash_later(bus: ClientBus) -> None:
    """Start, wait until the master counts this worker STARTED, then die (status 3)."""
    import threading
    import time

    def die_once_seen() -> None:
        bus.wait(states.STARTED, timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            clients = bus.status().get("clients") or []
            if any(c.get("pid") == os.getpid() and c.get("state") == "STARTED" for c in clients):
                break
        os._exit(3)

    threading.Thread(target=die_once_seen, daemon=True).start()
