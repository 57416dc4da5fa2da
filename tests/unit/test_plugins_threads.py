"""ThreadManager: per-thread start/stop channels, driven from real threads."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from busd import Bus, ChannelFailures
from busd.plugins import ThreadManager

TIMEOUT = 5.0


def _record(
    events: list[tuple[str, int, int]], lock: threading.Lock, what: str
) -> Callable[[int], None]:
    def listener(index: int) -> None:
        with lock:
            events.append((what, index, threading.get_ident()))

    return listener


def _run_threads(count: int, body: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=body, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive(), f"{thread.name} did not finish"


def test_the_four_channels_are_declared() -> None:
    bus = Bus()
    ThreadManager(bus)
    for channel in ("acquire_thread", "start_thread", "release_thread", "stop_thread"):
        assert channel in bus.listeners


def test_real_threads_get_one_index_each_and_release_it() -> None:
    bus = Bus()
    manager = ThreadManager(bus)
    manager.subscribe()
    events: list[tuple[str, int, int]] = []
    lock = threading.Lock()
    bus.subscribe("start_thread", _record(events, lock, "start"))
    bus.subscribe("stop_thread", _record(events, lock, "stop"))
    all_acquired = threading.Barrier(4, timeout=TIMEOUT)

    def body(n: int) -> None:
        bus.publish("acquire_thread")
        bus.publish("acquire_thread")  # a second acquire publishes nothing
        # Everyone holds an index at once, so indices cannot be reused here.
        all_acquired.wait()
        bus.publish("release_thread")
        bus.publish("release_thread")

    _run_threads(4, body)
    starts = {ident: index for what, index, ident in events if what == "start"}
    stops = {ident: index for what, index, ident in events if what == "stop"}
    assert len(events) == 8
    assert sorted(starts.values()) == [1, 2, 3, 4]
    assert stops == starts, "a thread was released under another thread's index"
    assert manager.threads == {}


def test_stop_releases_every_thread_still_acquired() -> None:
    bus = Bus()
    manager = ThreadManager(bus)
    manager.subscribe()
    stopped: list[int] = []
    bus.subscribe("stop_thread", stopped.append)
    _run_threads(3, lambda n: bus.publish("acquire_thread"))
    assert sorted(manager.threads.values()) == [1, 2, 3]
    bus.start()
    bus.exit()
    assert sorted(stopped) == [1, 2, 3]
    assert manager.threads == {}
    assert manager.statistics() == {"threads": []}


def test_graceful_releases_too_and_indices_are_not_reused() -> None:
    bus = Bus()
    manager = ThreadManager(bus)
    manager.subscribe()
    started: list[int] = []
    stopped: list[int] = []
    bus.subscribe("start_thread", started.append)
    bus.subscribe("stop_thread", stopped.append)
    bus.publish("acquire_thread")
    bus.graceful()
    bus.publish("acquire_thread")
    assert started == [1, 2]
    assert stopped == [1]


def test_stop_releases_all_even_when_a_listener_fails() -> None:
    bus = Bus()
    manager = ThreadManager(bus)
    stopped: list[int] = []

    def listener(index: int) -> None:
        stopped.append(index)
        if index == 1:
            raise ZeroDivisionError("stop_thread listener")

    bus.subscribe("stop_thread", listener)
    _run_threads(2, lambda n: manager.acquire_thread())
    with pytest.raises(ChannelFailures) as info:
        manager.stop()
    assert sorted(stopped) == [1, 2]
    assert [type(e) for e in info.value.get_instances()] == [ZeroDivisionError]
    assert manager.threads == {}


def test_a_new_thread_is_not_mistaken_for_an_ended_one() -> None:
    bus = Bus()
    manager = ThreadManager(bus)
    started: list[int] = []
    bus.subscribe("start_thread", started.append)
    for _ in range(3):
        # One after the other: the OS may hand each the previous one's ident.
        _run_threads(1, lambda n: manager.acquire_thread())
    assert started == [1, 2, 3]
