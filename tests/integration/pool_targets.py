"""Workers and a program for the several-pools tests: each reports what it runs, and when.

Every report carries the worker's ``pool`` (``BUSD_POOL``), its slot and
``at``, the system's monotonic clock (the same in every process), so a test
can order what different pools did.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time
from typing import Any

from busd.client.bus import ClientBus
from busd.testing.probe import Probe


def reporter(bus: ClientBus) -> None:
    """Report start, stop, exit, graceful and the ``hello`` channel."""
    probe = Probe()
    pool = os.environ.get("BUSD_POOL", "")
    slot = int(os.environ.get("BUSD_WORKER", "-1"))

    def say(event: str, **data: Any) -> None:
        probe.report(event, pool=pool, worker=slot, at=time.monotonic(), **data)

    bus.subscribe("start", lambda: say("start"))
    bus.subscribe("stop", lambda: say("stop"))
    bus.subscribe("graceful", lambda: say("graceful"))
    bus.subscribe("hello", lambda *args: say("hello", args=list(args)))
    bus.subscribe("exit", lambda: say("exit"))
    bus.subscribe("exit", probe.close, priority=100)


def program(path: str) -> int:
    """A program that does not speak the bus: listens on the unix socket ``path``,
    reports ``program_start``, ``program_hup`` on SIGHUP, ``program_stop`` on SIGTERM."""
    probe = Probe()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    caught: list[int] = []
    signal.signal(signal.SIGHUP, lambda signum, frame: caught.append(signum))
    signal.signal(signal.SIGTERM, lambda signum, frame: caught.append(signum))
    probe.report("program_start", pool=os.environ.get("BUSD_POOL", ""), at=time.monotonic())
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        if os.path.exists(path):
            os.unlink(path)
        server.bind(path)
        server.listen(16)
        while True:
            ready, _, _ = select.select([server, wake_r], [], [], 60.0)
            if server in ready:
                server.accept()[0].close()
            if wake_r in ready:
                os.read(wake_r, 64)
            while caught:
                signum = caught.pop(0)
                if signum == signal.SIGHUP:
                    probe.report("program_hup", at=time.monotonic())
                else:
                    probe.report("program_stop", at=time.monotonic())
                    probe.close()
                    os.unlink(path)
                    return 0


if __name__ == "__main__":
    sys.exit(program(sys.argv[1]))
