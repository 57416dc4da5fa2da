"""statistics() of the bus, the plugins, ZAP, the runtime dir and the fd budget: Stats.

Each returns a frozen dataclass deriving from busd.core.stats.Stats: fields
read by name, nothing writable, and still a map (``stats["x"]``, ``== {...}``)
that ``as_dict()`` turns into what msgpack and JSON take.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from busd import Bus
from busd.client.ctl.keygen import write_key_pair
from busd.core.bus import BusStats
from busd.core.stats import Stats
from busd.master.fdbudget import BudgetStats, FdBudget, FdGate, GateStats
from busd.master.rundir import EndpointGuard, GuardStats
from busd.plugins import BackgroundTask, Monitor, SdNotify, ThreadManager
from busd.plugins.monitor import MonitorIdle, TaskStats
from busd.plugins.sdnotify import SdNotifyStats
from busd.plugins.threads import ThreadStats
from busd.security.zap import CurveServer, CurveStats

pytestmark = pytest.mark.usefixtures("no_atexit")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="st", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def check(stats: Stats, kind: type[Stats], expected: dict[str, Any]) -> None:
    """``stats`` is a frozen ``kind`` equal to ``expected``, and travels as a plain dict."""
    assert type(stats) is kind
    assert stats == expected
    assert dict(stats) == expected
    first = next(iter(expected))
    assert getattr(stats, first) == stats[first] == expected[first]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(stats, first, None)
    plain = stats.as_dict()
    assert type(plain) is dict
    assert msgpack.unpackb(msgpack.packb(plain), raw=False) == json.loads(json.dumps(plain))


def test_the_bus(bus: Bus) -> None:
    bus.subscribe("custom", print)
    stats = bus.statistics()
    listeners = {ch: len(cbs) for ch, cbs in bus.listeners.items()}
    check(stats, BusStats, {"state": "STOPPED", "listeners": listeners})
    assert stats.listeners["custom"] == 1


def test_a_background_task_and_a_monitor(bus: Bus) -> None:
    check(Monitor(bus, lambda: None).statistics(), MonitorIdle, {"running": False})
    task = BackgroundTask(30, lambda: None, bus=bus)
    expected = {"name": task.name, "interval": 30, "calls": 0, "errors": 0, "running": False}
    check(task.statistics(), TaskStats, expected)


def test_the_thread_manager(bus: Bus) -> None:
    check(ThreadManager(bus).statistics(), ThreadStats, {"threads": []})


def test_sd_notify(bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    expected = {"socket": None, "sent": 0, "errors": 0, "watchdog": False}
    check(SdNotify(bus).statistics(), SdNotifyStats, expected)


def test_the_curve_server(short_dir: Path) -> None:
    keys, allowed = short_dir / "keys", short_dir / "allowed"
    for directory in (keys, allowed):
        directory.mkdir(mode=0o700)
    _, secret = write_key_pair(keys, "master")
    public, _ = write_key_pair(keys, "worker")
    shutil.copy(public, allowed / "worker.key")
    server = CurveServer(secret, allowed)
    expected = {"keys_per_role": {"full": 1}, "refused": 0, "refusals_not_logged": 0}
    check(server.statistics(), CurveStats, expected)


def test_the_endpoint_guard() -> None:
    guard = EndpointGuard()
    try:
        check(guard.statistics(), GuardStats, {"rebound": 0, "rebind_failed": 0})
    finally:
        guard.close()


def test_the_fd_budget_and_gate() -> None:
    budget = FdBudget(per_worker=3, reserve=16)
    stats = budget.statistics()
    assert stats.per_worker == 3
    check(stats, BudgetStats, {**dict(stats), "refused": 0})
    gate = FdGate()
    stats_gate = gate.statistics()
    check(stats_gate, GateStats, {**dict(stats_gate), "refused": 0, "cut": 0})
    assert stats_gate.hello_reserve >= 0
    assert "open files:" in gate.describe()
