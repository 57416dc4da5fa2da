"""busd.Bus under concurrent use: publish, subscribe and transitions at once."""

from __future__ import annotations

import logging
import random
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from busd import Bus, states

THREADS = 8
OPS = 500


pytestmark = pytest.mark.usefixtures("no_atexit")


class Counter:
    """A thread-safe call counter usable as a listener."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self.count += 1


class LifecycleLines:
    """Counts the "Bus <STATE>" lines of the log channel."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.lines: list[str] = []

    def __call__(self, msg: str, level: int = logging.INFO) -> None:
        if msg.startswith("Bus "):
            with self._lock:
                self.lines.append(msg)


def run_together(targets: list[Callable[[], None]], timeout: float = 30) -> list[BaseException]:
    """Run each target in its own thread, released together; return what they raised."""
    barrier = threading.Barrier(len(targets))
    errors: list[BaseException] = []

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                barrier.wait(timeout)
                target()
            except BaseException as exc:  # noqa: BLE001 - returned to the test, which asserts
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"threads still running after {timeout}s: {stuck}"
    return errors


def make_listener(tag: str) -> Callable[..., str]:
    def listener(*args: Any, **kwargs: Any) -> str:
        return tag

    return listener


def test_publish_subscribe_unsubscribe_and_transitions_at_once(bus: Bus) -> None:
    keepers = [make_listener(f"keep{i}") for i in range(THREADS)]
    starts = Counter()
    bus.subscribe("start", starts)
    lifecycle = LifecycleLines()
    bus.subscribe("log", lifecycle)

    def worker(index: int) -> Callable[[], None]:
        rng = random.Random(index)

        def run() -> None:
            mine = [make_listener(f"t{index}-{k}") for k in range(4)]
            for op in range(OPS):
                callback = mine[op % len(mine)]
                kind = op % 5
                if kind == 0:
                    bus.subscribe("work", callback, priority=rng.randrange(100))
                elif kind == 1:
                    bus.publish("work", op)
                elif kind == 2:
                    bus.unsubscribe("work", callback)
                elif kind == 3:
                    bus.subscribe(f"private{index}", callback)
                else:
                    bus.publish(f"private{index}")
            for callback in mine:
                bus.unsubscribe("work", callback)
            bus.subscribe("work", keepers[index], priority=index)

        return run

    def transitions() -> None:
        # One thread drives the lifecycle while the others hammer the channels.
        for _ in range(OPS // 10):
            bus.start()
            bus.graceful()
            bus.stop()
        bus.start()

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so that operations interleave
    try:
        errors = run_together([*(worker(i) for i in range(THREADS)), transitions])
    finally:
        sys.setswitchinterval(previous)

    assert errors == []
    assert bus.listeners["work"] == set(keepers)
    assert bus.publish("work") == [f"keep{i}" for i in range(THREADS)]
    for index in range(THREADS):
        assert len(bus.listeners[f"private{index}"]) == 4
    assert bus.state is states.STARTED
    assert starts.count == OPS // 10 + 1
    assert lifecycle.lines.count("Bus STARTED") == OPS // 10 + 1


def test_listeners_may_subscribe_and_unsubscribe_while_being_published(bus: Bus) -> None:
    late = make_listener("late")

    def rewire() -> str:
        bus.unsubscribe("ch", rewire)
        bus.subscribe("ch", late)
        return "rewire"

    bus.subscribe("ch", rewire)

    assert bus.publish("ch") == ["rewire"]
    assert bus.publish("ch") == ["late"]


def test_concurrent_start_runs_start_listeners_once_per_transition(bus: Bus) -> None:
    starts = Counter()
    bus.subscribe("start", starts)
    lifecycle = LifecycleLines()
    bus.subscribe("log", lifecycle)

    errors = run_together([bus.start] * THREADS)

    assert errors == []
    assert bus.state is states.STARTED
    transitions = lifecycle.lines.count("Bus STARTING")
    assert 1 <= transitions <= THREADS
    assert starts.count == transitions
    assert lifecycle.lines.count("Bus STARTED") == transitions


def test_concurrent_exit_runs_exit_listeners_exactly_once(bus: Bus) -> None:
    exits = Counter()
    bus.subscribe("exit", exits)
    lifecycle = LifecycleLines()
    bus.subscribe("log", lifecycle)
    bus.start()

    errors = run_together([bus.exit] * THREADS)

    assert errors == []
    assert bus.state is states.EXITING
    assert exits.count == 1
    assert lifecycle.lines.count("Bus EXITING") == 1
    assert lifecycle.lines.count("Bus EXITED") == 1


def overlap_with_held_listener(
    bus: Bus, channel: str, first: Callable[[], None], others: Callable[[], None]
) -> tuple[list[BaseException], int]:
    """Run ``first`` in a thread, and ``others`` in THREADS - 1 threads while
    the first call is held inside its ``channel`` listener.

    Returns what the threads raised and how often the held listener ran.
    """
    holding = threading.Event()
    others_done = threading.Event()
    calls = Counter()

    def held() -> None:
        calls()
        holding.set()
        others_done.wait(5)

    bus.subscribe(channel, held)
    errors: list[BaseException] = []

    def call(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # noqa: BLE001 - returned to the test, which asserts
                errors.append(exc)

        return run

    leader = threading.Thread(target=call(first))
    leader.start()
    assert holding.wait(5), f"the first call never reached its {channel!r} listener"
    followers = [threading.Thread(target=call(others)) for _ in range(THREADS - 1)]
    for thread in followers:
        thread.start()
    for thread in followers:
        # Bounded: a bus that makes these calls wait for the first one is fine too.
        thread.join(0.5 / len(followers))
    others_done.set()
    for thread in [leader, *followers]:
        thread.join(30)
    assert not [t for t in [leader, *followers] if t.is_alive()], "threads still running"
    return errors, calls.count


def test_start_while_another_thread_is_starting(bus: Bus) -> None:
    lifecycle = LifecycleLines()
    bus.subscribe("log", lifecycle)

    errors, start_calls = overlap_with_held_listener(bus, "start", bus.start, bus.start)

    assert errors == []
    assert bus.state is states.STARTED
    assert start_calls == lifecycle.lines.count("Bus STARTING") == 1
    assert lifecycle.lines.count("Bus STARTED") == 1


def test_exit_while_another_thread_is_exiting(bus: Bus) -> None:
    exits = Counter()
    bus.subscribe("exit", exits)
    lifecycle = LifecycleLines()
    bus.subscribe("log", lifecycle)
    bus.start()

    errors, stop_calls = overlap_with_held_listener(bus, "stop", bus.exit, bus.exit)

    assert errors == []
    assert bus.state is states.EXITING
    assert exits.count == 1
    assert stop_calls == 1
    assert lifecycle.lines.count("Bus EXITING") == 1


def test_exit_called_from_a_stop_listener_finishes_the_exit_once(bus: Bus) -> None:
    stops = Counter()
    exits = Counter()

    def stop_and_exit() -> None:
        stops()
        bus.exit()

    bus.subscribe("stop", stop_and_exit)
    bus.subscribe("exit", exits)
    bus.start()

    try:
        bus.stop()
    finally:
        bus.unsubscribe("stop", stop_and_exit)  # keeps the fixture's teardown clean

    assert bus.state is states.EXITING
    assert (stops.count, exits.count) == (1, 1)


def test_a_second_exit_returns_only_once_the_bus_has_exited(bus: Bus) -> None:
    in_stop = threading.Event()
    release = threading.Event()

    def held_stop() -> None:
        in_stop.set()
        assert release.wait(10)

    bus.subscribe("stop", held_stop)
    bus.start()
    first = threading.Thread(target=bus.exit)
    first.start()
    assert in_stop.wait(10)
    second_done = threading.Event()

    def second_exit() -> None:
        bus.exit()
        second_done.set()

    second = threading.Thread(target=second_exit)
    second.start()
    assert not second_done.wait(0.2), "the second exit() returned while still STOPPING"
    release.set()
    first.join(10)
    second.join(10)
    assert second_done.is_set()
    assert bus.state is states.EXITING


def test_start_does_not_mark_started_a_start_that_is_not_its_own(bus: Bus) -> None:
    calls: list[str] = []
    second_in = threading.Event()
    release_second = threading.Event()

    def start_listener() -> None:
        if not calls:
            calls.append("first")
            bus.stop()
            threading.Thread(target=bus.start).start()
            assert second_in.wait(10)
        else:
            calls.append("second")
            second_in.set()
            assert release_second.wait(10)

    bus.subscribe("start", start_listener)
    bus.start()
    # The first start's listeners are done, but the second start's still run.
    assert bus.state is states.STARTING
    release_second.set()
    bus.wait(states.STARTED, timeout=10)
    assert calls == ["first", "second"]
