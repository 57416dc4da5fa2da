"""busd.Bus: wait(), block() and defer().

No test sleeps: threads meet on Events, and every wait has a timeout.  The
elapsed-time assertions are bounds (``< 1 s`` against a 10 s interval), not
synchronisation.
"""

from __future__ import annotations

import _thread
import itertools
import logging
import threading
import time
from collections.abc import Callable

import pytest

from busd import Bus, WaitTimeout, states

WAITING_LINE = "Waiting for child threads to terminate..."


pytestmark = pytest.mark.usefixtures("no_atexit")


@pytest.fixture
def log_lines(bus: Bus) -> list[str]:
    lines: list[str] = []

    def record(msg: str, level: int = logging.INFO) -> None:
        lines.append(msg)

    bus.subscribe("log", record)
    return lines


def started_thread(target: Callable[[], object], daemon: bool = False) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=daemon)
    thread.start()
    return thread


# -- wait --------------------------------------------------------------------


def test_wait_returns_at_once_when_the_state_matches(bus: Bus) -> None:
    ticks: list[str] = []
    bus.subscribe("tick", lambda: ticks.append("tick"))

    began = time.monotonic()
    bus.wait(states.STOPPED, interval=10, channel="tick")
    bus.wait([states.STARTED, states.STOPPED], interval=10, channel="tick")
    bus.wait(states.STOPPED, interval=10, timeout=0)

    assert time.monotonic() - began < 1
    assert ticks == []


def test_wait_wakes_at_once_when_another_thread_changes_the_state(bus: Bus) -> None:
    go = threading.Event()

    def starter() -> None:
        assert go.wait(5)
        bus.start()

    thread = started_thread(starter)
    began = time.monotonic()
    go.set()
    bus.wait(states.STARTED, interval=10, timeout=5)
    elapsed = time.monotonic() - began
    thread.join(5)

    assert bus.state is states.STARTED
    assert elapsed < 1, f"wait() took {elapsed:.2f}s to see the change"


def test_wait_in_a_thread_for_one_of_several_states(bus: Bus) -> None:
    bus.start()
    woke: list[float] = []
    ready = threading.Event()

    def waiter() -> None:
        ready.set()
        began = time.monotonic()
        bus.wait([states.STOPPING, states.EXITING], interval=10, timeout=5)
        woke.append(time.monotonic() - began)

    thread = started_thread(waiter)
    assert ready.wait(5)
    bus.exit()
    thread.join(5)

    assert not thread.is_alive()
    assert len(woke) == 1, "the waiter raised or never returned"
    assert woke[0] < 1


def test_wait_publishes_to_its_channel_every_interval(bus: Bus) -> None:
    interval = 0.02
    ticks: list[float] = []

    def tick() -> None:
        ticks.append(time.monotonic())
        if len(ticks) == 3:
            bus.start()

    bus.subscribe("tick", tick)
    began = time.monotonic()

    bus.wait(states.STARTED, interval=interval, channel="tick", timeout=5)

    assert len(ticks) == 3
    gaps = [b - a for a, b in itertools.pairwise([began, *ticks])]
    assert min(gaps) >= interval * 0.75, f"published faster than every {interval}s: {gaps}"


def test_wait_raises_wait_timeout_past_its_timeout(bus: Bus) -> None:
    began = time.monotonic()

    with pytest.raises(WaitTimeout) as info:
        bus.wait(states.STARTED, interval=10, timeout=0.05)

    elapsed = time.monotonic() - began
    assert isinstance(info.value, TimeoutError)
    assert "STARTED" in str(info.value)
    assert 0.04 <= elapsed < 1
    assert bus.state is states.STOPPED


# -- block -------------------------------------------------------------------


def test_block_returns_once_the_bus_exits(
    bus: Bus, log_lines: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="busd")
    bus.start()
    exiter = started_thread(bus.exit)
    began = time.monotonic()

    bus.block(timeout=5)

    exiter.join(5)
    assert time.monotonic() - began < 5
    assert bus.state is states.EXITING
    assert WAITING_LINE in log_lines
    assert WAITING_LINE in [r.getMessage() for r in caplog.records if r.name == "busd"]


def test_block_returns_only_after_the_exit_listeners_ran(bus: Bus) -> None:
    """exit() in another thread: block() still waits for its exit listeners."""
    order: list[str] = []
    block_still_running = threading.Event()

    def in_blocked_thread() -> None:
        order.append(f"deferred call in {threading.current_thread().name}")
        block_still_running.set()

    def slow_exit_listener() -> None:
        order.append("exit listener begins")
        bus.defer(in_blocked_thread)  # runs in block()'s thread while it still waits
        block_still_running.wait(5)
        order.append("exit listener ends")

    ticking = threading.Event()
    bus.subscribe("main", ticking.set)  # published from inside block()

    def exit_once_blocked() -> None:
        if not ticking.wait(5):
            order.append("block() never published 'main'")
        bus.exit()

    bus.subscribe("exit", slow_exit_listener)
    bus.start()
    # A daemon, so that block() cannot wait for the exit by joining this thread.
    exiter = threading.Thread(target=exit_once_blocked, name="exiter", daemon=True)
    exiter.start()

    bus.block(interval=0.01, timeout=5)
    order.append("block returned")

    exiter.join(5)
    assert order == [
        "exit listener begins",
        f"deferred call in {threading.current_thread().name}",
        "exit listener ends",
        "block returned",
    ]


def test_block_turns_keyboard_interrupt_into_exit(bus: Bus) -> None:
    exits: list[str] = []
    bus.subscribe("exit", lambda: exits.append("exit"))

    def interrupt() -> None:
        raise KeyboardInterrupt

    bus.subscribe("main", interrupt)
    bus.start()

    try:
        bus.block(interval=0.01, timeout=5)
    except KeyboardInterrupt:
        pytest.fail("block() let KeyboardInterrupt escape instead of exiting the bus")

    assert bus.state is states.EXITING
    assert exits == ["exit"]


def test_block_exits_and_reraises_system_exit(bus: Bus, log_lines: list[str]) -> None:
    exits: list[str] = []
    bus.subscribe("exit", lambda: exits.append("exit"))

    def system_exit() -> None:
        raise SystemExit(4)

    bus.subscribe("main", system_exit)
    bus.start()

    with pytest.raises(SystemExit) as info:
        bus.block(interval=0.01, timeout=5)

    assert info.value.code == 4
    assert bus.state is states.EXITING
    assert exits == ["exit"]


class JoinSpy(threading.Thread):
    """A thread that knows when someone started joining it."""

    def __init__(self, target: Callable[[JoinSpy], None]) -> None:
        super().__init__(target=target, args=(self,))
        self.join_started = threading.Event()

    def join(self, timeout: float | None = None) -> None:
        self.join_started.set()
        super().join(timeout)


def test_block_joins_a_non_daemon_thread_that_finishes_after_the_exit(
    bus: Bus, log_lines: list[str]
) -> None:
    steps: list[str] = []
    bus.start()

    def worker(me: JoinSpy) -> None:
        bus.exit()
        steps.append(f"exited: {bus.state!r}")
        # Finish only once block() is joining this thread.
        steps.append(f"joined: {me.join_started.wait(5)}")

    spy = JoinSpy(worker)
    spy.start()
    try:
        bus.block()
        assert not spy.is_alive(), "block() returned before the thread finished"
        assert steps == ["exited: states.EXITING", "joined: True"]
        assert WAITING_LINE in log_lines
    finally:
        spy.join(10)


def test_block_skips_daemon_dummy_and_main_threads(bus: Bus, log_lines: list[str]) -> None:
    release = threading.Event()
    started_thread(lambda: release.wait(30), daemon=True)
    dummy_ready = threading.Event()

    def foreign_thread() -> None:
        threading.current_thread()  # registers a threading._DummyThread
        dummy_ready.set()
        release.wait(30)

    _thread.start_new_thread(foreign_thread, ())
    outcome: list[object] = []

    def blocker() -> None:
        try:
            bus.block()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome.append(exc)
        else:
            outcome.append("returned")

    try:
        assert dummy_ready.wait(5)
        assert any(isinstance(t, threading._DummyThread) for t in threading.enumerate())
        # block() runs in a daemon helper, so the main thread is "another" thread.
        helper = started_thread(blocker, daemon=True)
        bus.exit()
        helper.join(5)
        assert not helper.is_alive(), "block() is waiting for a daemon, dummy or main thread"
        assert outcome == ["returned"]
        assert WAITING_LINE in log_lines
    finally:
        release.set()


def test_block_timeout_bounds_the_join(bus: Bus) -> None:
    release = threading.Event()
    straggler = started_thread(lambda: release.wait(30))
    try:
        bus.exit()
        began = time.monotonic()

        bus.block(timeout=0.05)

        assert time.monotonic() - began < 2
        assert straggler.is_alive(), "block() waited past its timeout"
    finally:
        release.set()
        straggler.join(5)


# -- defer -------------------------------------------------------------------


def test_defer_runs_at_once_when_no_thread_is_blocked(bus: Bus) -> None:
    ran: list[threading.Thread] = []

    bus.defer(lambda: ran.append(threading.current_thread()))

    assert ran == [threading.current_thread()]


def test_defer_runs_in_the_thread_blocked_in_block(bus: Bus) -> None:
    blocked_thread = threading.current_thread()
    ticking = threading.Event()
    bus.subscribe("main", ticking.set)  # 'main' is published from inside block()
    exited = threading.Event()
    bus.subscribe("exit", exited.set)
    ran: list[threading.Thread] = []

    def deferred() -> None:
        ran.append(threading.current_thread())
        bus.exit()

    def helper() -> None:
        if ticking.wait(5):
            bus.defer(deferred)
        if not exited.wait(5):
            bus.exit()  # unblock the test; the assertion on `ran` reports it

    bus.start()
    thread = started_thread(helper)

    bus.block(interval=0.01, timeout=5)

    thread.join(5)
    assert ticking.is_set(), "block() never published 'main'"
    assert ran == [blocked_thread]
    assert bus.state is states.EXITING


def test_deferred_work_is_not_run_by_another_thread_that_waits(bus: Bus) -> None:
    """Only the thread in block() runs deferred work, not any thread in wait()."""
    blocked_thread = threading.current_thread()
    ticking = threading.Event()
    other_wait_done = threading.Event()

    def first_tick() -> None:
        # Keep block()'s thread busy while the other thread waits on the bus.
        bus.unsubscribe("main", first_tick)
        ticking.set()
        other_wait_done.wait(5)

    bus.subscribe("main", first_tick)
    ran: list[threading.Thread] = []

    def deferred() -> None:
        ran.append(threading.current_thread())
        bus.exit()

    def other() -> None:
        try:
            if ticking.wait(5):
                bus.defer(deferred)
                bus.wait(states.EXITING, interval=10, timeout=0.05)
        except WaitTimeout:
            pass  # expected: the deferred call is block()'s to run
        finally:
            other_wait_done.set()

    bus.start()
    thread = started_thread(other)

    bus.block(interval=0.01, timeout=5)

    thread.join(5)
    assert ran == [blocked_thread], "a thread waiting on the bus ran the deferred call"
