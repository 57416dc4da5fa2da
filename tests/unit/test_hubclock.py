"""The hub's clock: a heartbeat that opens a pong slot holds the ROUTER back a moment,
unless some thread waits for acks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from busd.master.hubclock import HubClock


@pytest.fixture
def router() -> Iterator[zmq.Socket[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    yield sock
    sock.close(0)
    ctx.term()


def flags(poller: zmq.Poller, sock: zmq.Socket[Any]) -> int:
    """What ``poller`` waits for on ``sock`` (0: left out; registering 0 removes it)."""
    return int(dict(poller.sockets).get(sock, 0))


def test_the_router_is_held_back_after_a_slot_opens_unless_acks_are_awaited(
    router: zmq.Socket[Any],
) -> None:
    clock = HubClock(heartbeat=1.0, pong_interval=5.0)
    poller = zmq.Poller()
    now = time.monotonic()
    clock.beaten(now)  # the first beat opens a pong slot

    assert not clock.reading(now)
    wait = clock.sleep_ms(poller, router, [])
    assert flags(poller, router) == 0  # held back while the pongs come
    assert wait <= clock.gather * 1000 + 1  # and woken when the gathering ends

    clock.sleep_ms(poller, router, [], hold=False)  # a graceful --wait began
    assert flags(poller, router) == zmq.POLLIN
    assert clock.reading(time.monotonic())
    clock.sleep_ms(poller, router, [])
    assert flags(poller, router) == zmq.POLLIN  # the gathering is over, not resumed
