"""A ClientBus's dispatcher, without a master: typed inbox items in, listeners and acks out.

The bus is real (its link's sockets are made, never connected); the test puts
into its inbox what the link thread would deliver.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from busd.client.bus import ClientBus, ClientStats
from busd.client.inbox import Inbox, InboxItem, Signalled, Stop
from busd.client.link.messages import LinkStats
from busd.client.link.streamtypes import Synced
from busd.core import wire
from busd.core.endpoints import Endpoints
from busd.core.errors import BusError, NoMaster
from busd.core.stats import Stats
from busd.core.views import BatchMsg, EventMsg, PublishMsg, StateMsg, read_frame

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


# -- relayed messages: the listener cache, and BATCH frames run as they decode --------------


def batch(first: int, items: list[tuple[str, list[Any], bool]]) -> BatchMsg:
    """A BATCH of PUBLISHes (channel, args, ack) numbered from ``first``, as the link reads it."""
    frames = [
        wire.encode_publish(EPOCH, first + at, channel, args, {}, ack)
        for at, (channel, args, ack) in enumerate(items)
    ]
    msg = read_frame(wire.encode_batch(EPOCH, first, frames))
    assert type(msg) is BatchMsg
    return msg


def test_a_batch_runs_each_message_in_order_graceful_and_acked_ones_included(
    bus: ClientBus,
) -> None:
    seen: list[Any] = []
    done = threading.Event()
    bus.subscribe("ch", lambda i: seen.append(i))
    bus.subscribe("graceful", lambda: seen.append("graceful"))
    bus.subscribe("last", done.set)
    bus.mirror()
    bus._inbox.put(
        [
            batch(1, [("ch", [1], False), ("graceful", [], True), ("ch", [2], True)]),
            PublishMsg(EPOCH, 4, "ch", [3], {}, False),
            batch(5, [("ch", [4], False), ("last", [], False)]),
        ]
    )
    assert done.wait(5)
    assert seen == [1, "graceful", 2, 3, 4]
    assert bus.statistics()["bad_batched"] == 0


def test_a_batch_whose_message_does_not_decode_as_announced_drops_the_rest_counted(
    bus: ClientBus, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[int] = []
    done = threading.Event()
    bus.subscribe("ch", seen.append)
    bus.subscribe("last", done.set)
    bus.mirror()
    good = [wire.encode_publish(EPOCH, seq, "ch", [seq], {}, False) for seq in (1, 2)]
    # The third message is numbered 9: it and the two after it are dropped.
    rest = [wire.encode_publish(EPOCH, seq, "ch", [seq], {}, False) for seq in (9, 4, 5)]
    bad = read_frame(wire.encode_batch(EPOCH, 1, good + rest))
    bus._inbox.put([bad, PublishMsg(EPOCH, 6, "last", [], {}, False)])
    assert done.wait(5)
    assert seen == [1, 2]
    assert bus.statistics()["bad_batched"] == 3
    assert "dropped messages 3..5 of a BATCH" in caplog.text


def test_relayed_listeners_follow_subscribe_unsubscribe_and_priority(bus: ClientBus) -> None:
    seen: list[str] = []
    step = threading.Event()

    def early(i: int) -> None:
        seen.append(f"early{i}")

    def late(i: int) -> None:
        seen.append(f"late{i}")

    def failing(i: int) -> None:
        seen.append(f"failing{i}")
        raise ValueError("a listener fails; the others still run")

    bus.subscribe("ch", late, priority=90)
    bus.subscribe("ch", failing, priority=50)
    bus.subscribe("step", step.set)
    bus.mirror()

    def relay(i: int) -> None:
        step.clear()
        bus._inbox.put([PublishMsg(EPOCH, 2 * i, "ch", [i], {}, False)])
        bus._inbox.put([PublishMsg(EPOCH, 2 * i + 1, "step", [], {}, False)])
        assert step.wait(5)

    relay(1)
    bus.subscribe("ch", early, priority=10)  # the cached order is dropped: early runs first
    relay(2)
    bus.unsubscribe("ch", failing)
    relay(3)
    bus.listeners["ch"].discard(late)  # CherryPy-style: the set itself, no unsubscribe
    relay(4)
    assert seen == [
        "failing1",
        "late1",
        "early2",
        "failing2",
        "late2",
        "early3",
        "late3",
        "early4",
    ]


def test_the_inbox_loses_no_wake_up_between_several_putters() -> None:
    inbox = Inbox()
    count, putters = 2000, 3

    def put(tag: int) -> None:
        for i in range(count):
            inbox.put([Signalled(tag * count + i)])

    threads = [threading.Thread(target=put, args=(t,)) for t in range(putters)]
    for thread in threads:
        thread.start()
    got: list[InboxItem] = []
    deadline = time.monotonic() + 10
    while len(got) < count * putters:
        assert time.monotonic() < deadline, f"{len(got)} of {count * putters} taken"
        got += inbox.take(1.0)
    for thread in threads:
        thread.join(5)
    assert sorted(item.signum for item in got if type(item) is Signalled) == list(
        range(count * putters)
    )
    assert inbox.take(0.01) == []  # no wake-up token left to spin on
    assert inbox.peak >= 1
