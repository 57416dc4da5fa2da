"""Fixtures shared by the unit tests of the bus and its plugins."""

from __future__ import annotations

import atexit
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from busd import Bus, ChannelFailures, states


@pytest.fixture
def no_atexit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Buses made in the test register no atexit handler."""

    def register(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[..., Any]:
        return func

    monkeypatch.setattr(atexit, "register", register)


@pytest.fixture
def bus() -> Iterator[Bus]:
    """A fresh Bus, exited at teardown if the test left it running."""
    bus = Bus()
    yield bus
    if bus.state is not states.EXITING:
        try:
            bus.exit()
        except ChannelFailures:
            logging.getLogger(__name__).info("listeners failed while tearing down a test bus")


@pytest.fixture
def logs(bus: Bus) -> list[tuple[str, int]]:
    """``(message, level)`` of everything ``bus`` logs from now on."""
    lines: list[tuple[str, int]] = []
    bus.subscribe("log", lambda msg, level=20: lines.append((msg, level)))
    return lines
