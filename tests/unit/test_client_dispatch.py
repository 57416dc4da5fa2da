"""A ClientBus's dispatcher, without a master: typed inbox items in, listeners and acks out.

The bus is real (its link's sockets are made, never connected); the test puts
into its inbox what the link thread would deliver.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from busd.client.bus import ClientBus, ClientStats
from busd.client.inbox import Inbox, Signalled, Stop
from busd.client.link.messages import LinkStats
from busd.client.link.streamtypes import Synced
from busd.core.endpoints import Endpoints
from busd.core.errors import BusError, NoMaster
from busd.core.stats import Stats
from busd.core.views import EventMsg, PublishMsg, StateMsg

EPOCH = 7


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[ClientBus]:
    endpoints = Endpoints(pub=f"ipc://{tmp_path}/pub", ctl=f"ipc://{tmp_path}/ctl")
    client = ClientBus(endpoints, timeout=5.0, shutdown_timeout=5.0)
    client._dispatcher.start()
    yield client
    client.close(timeout=5.0, linger=0.0)
    assert not client._dispatcher.is_alive()


def test_an_empty_inbox_take_returns_after_its_timeout() -> None:
    inbox = Inbox()
    began = time.monotonic()
    assert inbox.take(0.05) == []
    assert time.monotonic() - began >= 0.04
    inbox.put([Stop()])
    assert inbox.take(0.05) == [Stop()]


def test_the_dispatcher_applies_typed_items_by_type(bus: ClientBus) -> None:
    seen: list[object] = []
    done = threading.Event()
    bus.subscribe("ch", lambda *args, **kwargs: seen.append(("ch", args, kwargs)))
    bus.subscribe("busd.event", lambda name, data: seen.append(("event", name, data)))
    bus.subscribe("last", done.set)
    bus._inbox.put([Synced(EPOCH, 0, None, 0), StateMsg(EPOCH, 1, "STOPPED")])
    assert bus._heard.wait(5), "a snapshot held before mirroring is still observed"
    assert bus.master_state is bus.states.STOPPED
    bus.mirror()
    bus._inbox.put(
        [
            PublishMsg(EPOCH, 2, "ch", [1, 2], {"k": "v"}, False),
            EventMsg(EPOCH, 3, "client_joined", {"id": 1}),
            PublishMsg(EPOCH, 4, "last", [], {}, False),
        ]
    )
    assert done.wait(5)
    assert seen == [("ch", (1, 2), {"k": "v"}), ("event", "client_joined", {"id": 1})]


def test_a_listener_that_would_wait_for_its_own_ack_is_told_so(bus: ClientBus) -> None:
    told: list[BaseException] = []
    done = threading.Event()

    def graceful_and_wait() -> None:
        try:
            bus.graceful(wait=True, timeout=0.1)
        except BusError as exc:
            told.append(exc)
        done.set()

    bus.subscribe("ch", graceful_and_wait)
    bus.mirror()
    bus._inbox.put([PublishMsg(EPOCH, 1, "ch", [], {}, False)])
    assert done.wait(5)
    assert len(told) == 1, told
    assert "its own ack" in str(told[0]), told


def test_another_thread_may_wait_for_acks_while_a_listener_runs(bus: ClientBus) -> None:
    running, release = threading.Event(), threading.Event()

    def busy() -> None:
        running.set()
        release.wait(5)

    bus.subscribe("ch", busy)
    bus.mirror()
    bus._inbox.put([PublishMsg(EPOCH, 1, "ch", [], {}, False)])
    assert running.wait(5)
    try:
        # Refused only inside the dispatcher: here it is sent, and (no master) times out.
        with pytest.raises(NoMaster):
            bus.request("graceful", timeout=0.1, body={"wait": True})
    finally:
        release.set()


def test_a_signal_before_mirroring_makes_the_process_leave_without_starting(
    bus: ClientBus,
) -> None:
    bus._inbox.put([StateMsg(EPOCH, 1, "STARTED"), Signalled(15, master_alive=False)])
    bus._dispatcher.join(5)
    assert not bus._dispatcher.is_alive()
    assert bus.state is bus.states.EXITING


def test_statistics_are_stats_with_the_links_nested(bus: ClientBus) -> None:
    stats = bus.statistics()
    assert isinstance(stats, ClientStats)
    assert isinstance(stats, Stats)
    assert isinstance(stats.link, LinkStats)
    assert stats["link"]["missed"] == 0
    assert stats.link.epoch == 0
    assert stats["state"] == "STOPPED"
    assert stats["queued"] == 0
    plain = stats.as_dict()
    assert type(plain["link"]) is dict
    assert plain["link"]["received"] == 0
    assert stats == plain
