"""The hub thread is the only one that uses the registry and reads the hub's counters.

A real master and real client processes; every public method of the
Registry records the thread that called it, and the hub's counter map
records the threads that read it.  Every question other threads ask about
clients (clients(), the pool's questions, waits for acks, status,
statistics) must go through the hub's messages and published views.
"""

from __future__ import annotations

import collections
import signal
import threading
from collections.abc import Callable, Iterator, KeysView
from typing import Any

import pytest

from busd.master.bus import MasterBus
from busd.master.registry import Registry
from busd.testing import Processes, Sink

TIMEOUT = 20.0

WORKER = """
    import sys
    from busd import client
    from busd.testing.probe import Probe

    probe = Probe()
    bus = client.connect(mirror=False, timeout=10)
    bus.subscribe("custom", lambda: "done")
    probe.report("joined")
    bus.block()
    probe.close()
"""


class Callers:
    """The names of the threads that called each watched function."""

    def __init__(self) -> None:
        self.by_name: dict[str, set[str]] = collections.defaultdict(set)
        self._lock = threading.Lock()

    def note(self, what: str) -> None:
        with self._lock:
            self.by_name[what].add(threading.current_thread().name)

    def threads(self) -> set[str]:
        with self._lock:
            return {t for names in self.by_name.values() for t in names}

    def wrap(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def watched(*args: Any, **kwargs: Any) -> Any:
            self.note(name)
            return func(*args, **kwargs)

        return watched


class ReadCounter(collections.Counter[str]):
    """The hub's counters, noting each thread that reads the map (the hub writes it)."""

    callers: Callers

    def __iter__(self) -> Iterator[str]:
        self.callers.note("counters")
        return super().__iter__()

    def keys(self) -> KeysView[str]:  # what dict(counter) reads
        self.callers.note("counters")
        return super().keys()


@pytest.fixture
def callers(monkeypatch: pytest.MonkeyPatch) -> Callers:
    seen = Callers()
    for name, member in list(vars(Registry).items()):
        if callable(member) and not name.startswith("__"):
            monkeypatch.setattr(Registry, name, seen.wrap(name, member))
    return seen


def test_only_the_hub_thread_uses_the_registry_and_its_counters(
    busd_master: Any, busd_procs: Processes, busd_sink: Sink, callers: Callers
) -> None:
    master: MasterBus = busd_master()
    counters = ReadCounter()
    counters.callers = callers
    master.hub.stats = counters  # before any client: nothing counted yet
    workers = [busd_procs.python(WORKER, name=f"worker{i}") for i in range(2)]
    busd_sink.collect("joined", 2, timeout=TIMEOUT)
    assert master.wait_for_clients(lambda clients: len(clients) == 2, TIMEOUT)

    start = master.start(wait=True, timeout=TIMEOUT)
    assert start is not None
    assert [a.ok for a in start.acks] == [True, True]
    custom = master.broadcast_and_wait("custom", timeout=TIMEOUT)
    assert [a.result for a in custom.acks] == [["done"], ["done"]]
    assert {c.pid for c in master.clients()} == {w.pid for w in workers}
    assert set(master.clients_by_pid()) == {w.pid for w in workers}
    assert master.status()["counters"]["acks"] >= 4
    assert master.statistics()["hub"]["counters"]["acks"] >= 4

    # Retired on purpose: the next wait does not count on it (decided at once).
    retired = master.excuse_pid(workers[1].pid)
    assert retired is not None
    assert retired.leaving
    graceful = master.graceful(wait=True, timeout=TIMEOUT)
    assert graceful is not None
    assert [a.client for a in graceful.acks] == [master.clients_by_pid()[workers[0].pid].id]
    workers[1].send_signal(signal.SIGKILL)
    workers[1].wait(TIMEOUT)
    master.forget_pid(workers[1].pid)
    assert master.wait_for_clients(lambda clients: len(clients) == 1, TIMEOUT)

    master.exit()
    master.close()
    assert callers.threads() == {"busd-hub"}, dict(callers.by_name)
    assert {"register", "record_ack", "excuse_pid", "remove_pid", "watch"} <= set(callers.by_name)
