"""Ack waits as messages: the registry's owner sends news, the waiting thread tallies them.

No sockets: a stand-in hub thread owns a Registry and runs what it is sent,
in order, as the real hub runs its outbox.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from busd.core.errors import WaitTimeout
from busd.master.acks import AckSink, wait_acks
from busd.master.clients import NOT_JOINED, ClientInfo, ClientTable
from busd.master.commands import timeout_error
from busd.master.hubview import HubView, HubViews
from busd.master.registry import Registry

A, B, C = b"client-a", b"client-b", b"client-c"
WAIT = 5.0


def hello(pid: int, **fields: object) -> dict[str, object]:
    return {"token": b"t" * 12, "pid": pid, "role": "worker", "worker": pid % 10, **fields}


class HubStandIn:
    """One thread that owns a Registry and runs what it is sent, in order (an outbox)."""

    def __init__(self) -> None:
        self.registry = Registry()
        self._inbox: queue.SimpleQueue[Callable[[Registry], object] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="hub-stand-in", daemon=True)
        self.callers: set[str] = set()
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._inbox.get()
            if job is None:
                return
            job(self.registry)
            self.registry.deliver()

    def do(self, job: Callable[[Registry], Any], timeout: float = WAIT) -> Any:
        """Run ``job(registry)`` on the owner thread; its result."""
        done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._inbox.put(lambda r: done.put(job(r)))
        return done.get(timeout=timeout)

    def close(self) -> None:
        self._inbox.put(None)
        self._thread.join(WAIT)

    # The AckSource the waiting thread uses: every call is a message.
    def watch_acks(self, seqs: tuple[int, ...], expected: frozenset[int], sink: AckSink) -> None:
        self.callers.add(threading.current_thread().name)
        self._inbox.put(lambda r: r.watch(seqs, expected, sink))

    def unwatch_acks(self, sink: AckSink) -> None:
        self._inbox.put(lambda r: r.unwatch(sink))

    def client_table(self) -> ClientTable:
        table: ClientTable = self.do(lambda r: r.snapshot())
        return table


@pytest.fixture
def hub() -> Iterator[HubStandIn]:
    stand_in = HubStandIn()
    try:
        yield stand_in
    finally:
        stand_in.close()


def join(hub: HubStandIn, identity: bytes, pid: int, **fields: object) -> ClientInfo:
    info: ClientInfo = hub.do(lambda r: r.register(identity, hello(pid, **fields), joined_seq=0))
    return info


def never_times_out(*_: object) -> Exception:
    return AssertionError("the wait timed out")


def test_a_client_that_acks_and_leaves_before_the_wait_is_in_the_report(hub: HubStandIn) -> None:
    # The race MasterBus._state_changed names: who must ack is decided when
    # the seq is sent; the client acks (a failure) and says BYE while the
    # master's own listeners still run, before anybody waits.
    a, b = join(hub, A, 101), join(hub, B, 102)
    expected = hub.client_table().expected(1)
    failure = {"type": "ValueError", "message": "no"}
    hub.do(lambda r: r.record_ack(A, {"seq": 1, "ok": False, "errors": [failure]}))
    hub.do(lambda r: r.remove(A))
    hub.do(lambda r: r.record_ack(B, {"seq": 1, "ok": True, "result": 7}))

    report = wait_acks(hub, [1], expected, WAIT, never_times_out)

    assert [(x.client, x.ok) for x in report.acks] == [(a.id, False), (b.id, True)]
    assert report.lost == ()
    assert report.failures() == [f"{a.label()}: ValueError: no"]
    assert report.acks[1].result == 7


def test_acks_sent_while_the_thread_waits_end_the_wait(hub: HubStandIn) -> None:
    a, b = join(hub, A, 101), join(hub, B, 102)
    expected = hub.client_table().expected(2)
    answered: queue.SimpleQueue[Any] = queue.SimpleQueue()
    waiter = threading.Thread(
        target=lambda: answered.put(wait_acks(hub, [1, 2], expected, WAIT, never_times_out)),
        name="waiter",
    )
    waiter.start()
    for seq in (1, 2):
        hub.do(lambda r, seq=seq: r.record_ack(A, {"seq": seq, "ok": True, "result": seq}))
    hub.do(lambda r: r.record_ack(B, {"seq": 1, "ok": True}))
    hub.do(lambda r: r.record_ack(B, {"seq": 2, "ok": False, "errors": [{"type": "E"}]}))
    report = answered.get(timeout=WAIT)
    waiter.join(WAIT)

    assert hub.callers == {"waiter"}
    assert report.seqs == (1, 2)
    assert [(x.client, x.seq, x.ok, x.result) for x in report.acks] == [
        (a.id, 2, True, 2),
        (b.id, 2, False, None),
    ]
    assert hub.do(lambda r: r._watches) == []  # the wait unwatched


def test_a_client_lost_before_it_answered_is_lost_and_one_the_pool_retires_is_not(
    hub: HubStandIn,
) -> None:
    a, b = join(hub, A, 101), join(hub, B, 102)
    c = join(hub, C, 103)
    expected = hub.client_table().expected(1)
    assert expected == {a.id, b.id, c.id}
    hub.do(lambda r: r.record_ack(C, {"seq": 1, "ok": True}))
    waiter_report: queue.SimpleQueue[Any] = queue.SimpleQueue()
    waiter = threading.Thread(
        target=lambda: waiter_report.put(wait_acks(hub, [1], expected, WAIT, never_times_out))
    )
    waiter.start()
    hub.do(lambda r: r.remove(A))  # silent, then gone: lost
    hub.do(lambda r: r.excuse_pid(102))  # retired on purpose: not waited for, not lost
    report = waiter_report.get(timeout=WAIT)
    waiter.join(WAIT)

    assert [x.client for x in report.acks] == [c.id]
    assert [x.id for x in report.lost] == [a.id]
    assert report.failures() == [f"{a.label()}: lost before it answered"]
    assert b.id not in hub.client_table().expected(2)  # retired: later waits skip it too


def test_a_wait_past_its_timeout_names_the_silent_clients(hub: HubStandIn) -> None:
    a, b = join(hub, A, 101), join(hub, B, 102)
    expected = hub.client_table().expected(1)
    hub.do(lambda r: r.record_ack(B, {"seq": 1, "ok": True}))

    with pytest.raises(WaitTimeout) as info:
        wait_acks(hub, [1], expected, 0.05, timeout_error(0.05))

    assert str(info.value) == f"no ack within 0.05s from {a.label()}"
    details = getattr(info.value, "details", None)
    assert details is not None
    assert details["silent"] == [a.id]
    assert [x["client"] for x in details["acks"]["acks"]] == [b.id]


def test_nobody_expected_is_answered_at_once_without_asking_the_hub(hub: HubStandIn) -> None:
    report = wait_acks(hub, [3], set(), 0.0, never_times_out)
    assert report.ok
    assert (report.seqs, report.acks, report.lost) == ((3,), (), ())
    assert hub.callers == set()


def test_who_is_expected_is_read_from_the_published_table() -> None:
    registry = Registry()
    joined = registry.register(A, hello(101), joined_seq=4)
    registry.register(B, hello(102, role="control"), joined_seq=0)
    registry.register(C, hello(103), joined_seq=0, readonly=True)
    registry.register(b"late", hello(104), joined_seq=9)
    registry.register(b"waiting", hello(105), joined_seq=NOT_JOINED)
    registry.register(b"retired", hello(106), joined_seq=0)
    registry.excuse_pid(106)

    table = registry.snapshot()

    assert table.expected(5) == {joined.id}
    assert table.expected(4) == set()
    assert sorted(table.by_pid()) == [101, 102, 104, 105, 106]
    assert [c.id for c in table.clients] == sorted(c.id for c in table.clients)


def test_state_hooks_and_ack_news_wait_for_deliver() -> None:
    # The hub publishes the new table first, then delivers: whoever the news
    # wakes must find the change in the table.
    registry = Registry()
    registry.register(A, hello(101), joined_seq=0)
    seen: list[str] = []
    registry.state_hooks.append(lambda info: seen.append(info.state))
    news: queue.SimpleQueue[Any] = queue.SimpleQueue()
    registry.watch((1,), frozenset({1}), news)
    registry.pong(A, {"seq": 0, "state": "STARTED"})
    registry.record_ack(A, {"seq": 1, "ok": True})
    assert registry.changed
    assert (seen, news.qsize()) == ([], 0)
    registry.deliver()
    assert seen == ["STARTED"]
    assert [type(news.get_nowait()).__name__ for _ in range(news.qsize())] == [
        "Watching",
        "Acked",
    ]


def test_a_wait_for_clients_wakes_on_a_new_view_and_is_bounded() -> None:
    views = HubViews()
    registry = Registry()
    registry.register(A, hello(101), joined_seq=0)
    assert not views.wait_for(lambda clients: len(clients) == 1, 0.05)
    publisher = threading.Timer(0.05, lambda: views.publish(HubView(registry.snapshot())))
    publisher.start()
    try:
        assert views.wait_for(lambda clients: len(clients) == 1, WAIT)
    finally:
        publisher.join(WAIT)
    assert [c.pid for c in views.current().clients.clients] == [101]
