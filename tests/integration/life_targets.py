"""Worker targets and a master plugin for the worker-life tests (recycling, logs, hooks)."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from busd.client.bus import ClientBus
from busd.testing.probe import Probe

#: Enough to pass a --max-rss of 64 MiB above an interpreter's own ~25 MiB.
BIG = 96 << 20


def _generation() -> int:
    return int(os.environ.get("BUSD_WORKER_GENERATION", "0"))


def _report_start(bus: ClientBus, probe: Probe, **data: Any) -> None:
    worker = int(os.environ.get("BUSD_WORKER", "-1"))
    bus.subscribe(
        "start", lambda: probe.report("start", worker=worker, generation=_generation(), **data)
    )
    bus.subscribe("exit", probe.close, priority=100)


def env(bus: ClientBus) -> None:
    """Report the environment the pool gave this worker."""
    probe = Probe()
    _report_start(
        bus,
        probe,
        env={
            k: os.environ.get(k)
            for k in ("FOO", "BAZ", "QUX", "BUSD_WORKER", "BUSD_WORKER_GENERATION")
        },
    )


def steady(bus: ClientBus) -> None:
    """Report start; nothing else (recycled by age)."""
    _report_start(bus, Probe())


_kept: list[bytearray] = []


def grow(bus: ClientBus) -> None:
    """The first worker of slot 1 fills BIG bytes once started (recycled by RSS)."""
    probe = Probe()
    _report_start(bus, probe)
    if os.environ.get("BUSD_WORKER") == "1" and _generation() == 1:
        bus.subscribe("start", lambda: _kept.append(bytearray(b"\1") * BIG), priority=60)


def recycle_me(bus: ClientBus) -> None:
    """The first worker of each slot asks to be recycled once started."""
    probe = Probe()
    _report_start(bus, probe)
    if _generation() == 1:
        bus.subscribe(
            "start", lambda: probe.report("asked", reply=bus.recycle("done 1 job")), priority=60
        )


def chatter(bus: ClientBus) -> None:
    """Write numbered lines to stdout without pause; the last one in the exit listener."""
    stop = threading.Event()
    count = [0]

    def write() -> None:
        while not stop.is_set():
            print(f"line {count[0]}", flush=True)
            count[0] += 1

    writer = threading.Thread(target=write, name="chatter")

    def finish() -> None:
        stop.set()
        writer.join(10)
        print(f"last {count[0]}", flush=True)

    bus.subscribe("start", writer.start)
    bus.subscribe("exit", finish)
    print("stderr too", file=sys.stderr, flush=True)


def hooks_plugin(master: Any) -> None:
    """``--plugin``: report every hook channel the master publishes, with its thread."""
    probe = Probe()
    for channel in (
        "worker_spawned",
        "worker_started",
        "worker_exited",
        "reload_begin",
        "reload_end",
    ):
        master.subscribe(
            channel,
            lambda info, channel=channel: probe.report(
                "hook", channel=channel, info=info, thread=threading.current_thread().name
            ),
        )
    master.subscribe("exit", probe.close, priority=100)


def broken_plugin(master: Any) -> None:
    """A ``--plugin`` that fails."""
    raise RuntimeError("this plugin is broken")
