"""Daemonizer's refusals, without forking (the real double fork: tests/integration)."""

from __future__ import annotations

import os

import pytest

from busd import Bus
from busd.plugins import Daemonizer


def _no_fork() -> int:
    raise AssertionError("must not fork")


def test_a_second_start_does_not_fork_again(monkeypatch: pytest.MonkeyPatch) -> None:
    logs: list[tuple[str, int]] = []
    bus = Bus()
    bus.subscribe("log", lambda msg, level=20: logs.append((msg, level)))
    plugin = Daemonizer(bus)
    plugin.finalized = True
    monkeypatch.setattr(os, "fork", _no_fork)
    plugin.start()
    assert any(msg.startswith("Already daemonized") and level == 30 for msg, level in logs)


def test_a_failed_first_fork_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", failing_fork)
    plugin = Daemonizer(Bus())
    with pytest.raises(RuntimeError, match="fork #1 failed"):
        plugin.start()
    assert not plugin.finalized


def test_start_listens_at_priority_65() -> None:
    bus = Bus()
    plugin = Daemonizer(bus)
    plugin.subscribe()
    assert bus._priorities[("start", plugin.start)] == 65
