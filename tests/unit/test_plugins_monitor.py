"""BackgroundTask and Monitor: periodic calls in a thread, started and stopped by the bus."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from busd import Bus
from busd.plugins import BackgroundTask, Monitor

TIMEOUT = 5.0


class Counter:
    """A callback counting its calls; ``reached(n)`` waits for the n-th."""

    def __init__(self, fail_first: int = 0) -> None:
        self.calls = 0
        self.threads: set[threading.Thread] = set()
        self._fail_first = fail_first
        self._cond = threading.Condition()

    def __call__(self) -> None:
        with self._cond:
            self.calls += 1
            self.threads.add(threading.current_thread())
            self._cond.notify_all()
            if self.calls <= self._fail_first:
                raise ZeroDivisionError(f"failure {self.calls}")

    def reached(self, n: int, timeout: float = TIMEOUT) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.calls >= n, timeout)


@pytest.fixture
def tasks() -> Iterator[Callable[..., BackgroundTask]]:
    made: list[BackgroundTask] = []

    def make(*args: object, **kwargs: object) -> BackgroundTask:
        task = BackgroundTask(*args, **kwargs)  # type: ignore[arg-type]
        made.append(task)
        return task

    yield make
    for task in made:
        task.cancel()
        task.join(TIMEOUT)


def test_background_task_calls_repeatedly_with_its_arguments(
    tasks: Callable[..., BackgroundTask],
) -> None:
    seen: list[tuple[object, ...]] = []
    counter = Counter()

    def function(a: int, b: int = 0) -> None:
        seen.append((a, b))
        counter()

    task = tasks(0.005, function, args=(1,), kwargs={"b": 2})
    assert task.daemon
    task.start()
    assert counter.reached(3), f"only {counter.calls} calls"
    task.cancel()
    task.join(TIMEOUT)
    assert not task.is_alive()
    assert seen[:3] == [(1, 2)] * 3
    assert task.calls == len(seen)


def test_cancel_wakes_the_task_at_once(tasks: Callable[..., BackgroundTask]) -> None:
    counter = Counter()
    task = tasks(3600, counter)
    task.start()
    assert task.running
    task.cancel()
    task.join(TIMEOUT)
    # Within TIMEOUT, far less than the hour a sleep would have taken.
    assert not task.is_alive()
    assert not task.running
    assert counter.calls == 0


def test_an_exception_is_logged_and_the_task_keeps_running(
    tasks: Callable[..., BackgroundTask], bus: Bus, logs: list[tuple[str, int]]
) -> None:
    counter = Counter(fail_first=2)
    task = tasks(0.005, counter, bus=bus)
    task.start()
    assert counter.reached(3), "the task stopped after an exception"
    task.cancel()
    task.join(TIMEOUT)
    assert task.errors == 2
    errors = [msg for msg, level in logs if level == 40]
    assert len(errors) == 2
    assert "Error in background task" in errors[0]
    assert "ZeroDivisionError: failure 1" in errors[0]


def test_without_a_bus_an_exception_goes_to_stderr(
    tasks: Callable[..., BackgroundTask], capsys: pytest.CaptureFixture[str]
) -> None:
    counter = Counter(fail_first=1)
    task = tasks(0.005, counter)
    task.start()
    assert counter.reached(2)
    task.cancel()
    task.join(TIMEOUT)
    assert "ZeroDivisionError: failure 1" in capsys.readouterr().err


def test_monitor_runs_while_the_bus_is_started(bus: Bus) -> None:
    counter = Counter()
    monitor = Monitor(bus, counter, frequency=0.005, name="ticker")
    monitor.subscribe()
    bus.start()
    thread = monitor.thread
    assert thread is not None
    assert thread.name == "ticker"
    assert counter.reached(2)
    assert counter.threads == {thread}
    bus.stop()
    assert monitor.thread is None
    assert not thread.is_alive(), "stop did not join the monitor thread"
    calls_after_stop = counter.calls
    assert thread.calls == calls_after_stop  # the thread is gone: this is final


def test_monitor_start_twice_keeps_one_thread(bus: Bus, logs: list[tuple[str, int]]) -> None:
    monitor = Monitor(bus, Counter(), frequency=60)
    monitor.start()
    first = monitor.thread
    monitor.start()
    assert monitor.thread is first
    assert ("Monitor thread 'Monitor' already started.", 20) in logs
    monitor.stop()


def test_monitor_with_frequency_zero_starts_nothing(bus: Bus) -> None:
    monitor = Monitor(bus, Counter(), frequency=0)
    monitor.start()
    assert monitor.thread is None
    assert monitor.statistics() == {"running": False}


def test_graceful_replaces_the_thread_and_calls_resume(bus: Bus) -> None:
    counter = Counter()
    monitor = Monitor(bus, counter, frequency=0.005)
    monitor.subscribe()
    bus.start()
    assert counter.reached(1)
    old = monitor.thread
    bus.graceful()
    new = monitor.thread
    assert old is not None
    assert new is not None
    assert new is not old
    assert not old.is_alive()
    calls = counter.calls
    assert counter.reached(calls + 2), "no calls after graceful"
    assert new in counter.threads
    bus.exit()
    assert not new.is_alive()


def test_stop_from_the_callback_itself_does_not_deadlock(bus: Bus) -> None:
    stopped = threading.Event()
    monitor: Monitor

    def stop_myself() -> None:
        monitor.stop()
        stopped.set()

    monitor = Monitor(bus, stop_myself, frequency=0.005)
    monitor.start()
    thread = monitor.thread
    assert thread is not None
    assert stopped.wait(TIMEOUT)
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert monitor.thread is None


def test_stop_waits_a_bounded_time_for_a_stuck_callback(
    bus: Bus, logs: list[tuple[str, int]]
) -> None:
    inside, release = threading.Event(), threading.Event()

    def stuck() -> None:
        inside.set()
        release.wait(TIMEOUT)

    monitor = Monitor(bus, stuck, frequency=0.005)
    monitor.join_timeout = 0.05
    monitor.start()
    thread = monitor.thread
    assert thread is not None
    assert inside.wait(TIMEOUT)
    monitor.stop()
    assert thread.is_alive()
    assert any("still running" in msg and level == 30 for msg, level in logs)
    release.set()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
