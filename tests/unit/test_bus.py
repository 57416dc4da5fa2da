"""busd.Bus: states, channels, publish, logging, the lifecycle and its table.

Waiting and blocking are in ``test_bus_wait.py``, threads in
``test_bus_threads.py``.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

import busd
from busd import Bus, BusError, ChannelFailures, IllegalTransition, WaitTimeout, states

BUILTIN_CHANNELS = {"start", "stop", "exit", "graceful", "log", "main"}


class LogRecorder:
    """What a bus published on its 'log' channel, as ``(msg, level)`` pairs."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def __call__(self, msg: str, level: int = logging.INFO) -> None:
        with self._lock:
            self.entries.append((msg, level))

    @property
    def messages(self) -> list[str]:
        with self._lock:
            return [msg for msg, _level in self.entries]

    def bus_lines(self) -> list[str]:
        """The lifecycle lines ("Bus ..."), in order."""
        return [m for m in self.messages if m.startswith("Bus ")]


@pytest.fixture(autouse=True)
def atexit_calls(monkeypatch: pytest.MonkeyPatch) -> list[Callable[..., Any]]:
    """Record instead of registering: no test bus outlives its test via atexit."""
    calls: list[Callable[..., Any]] = []

    def register(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[..., Any]:
        calls.append(func)
        return func

    monkeypatch.setattr(atexit, "register", register)
    return calls


@pytest.fixture
def logs(bus: Bus) -> LogRecorder:
    recorder = LogRecorder()
    bus.subscribe("log", recorder)
    return recorder


def returning(value: Any) -> Callable[..., Any]:
    def listener(*args: Any, **kwargs: Any) -> Any:
        return value

    listener.__name__ = f"returning_{value}"
    return listener


# -- states and channels -----------------------------------------------------


def test_states_are_the_five_wspbus_states_with_readable_reprs() -> None:
    names = ["STOPPED", "STARTING", "STARTED", "STOPPING", "EXITING"]
    assert [s.name for s in busd.states] == names
    for name in names:
        assert repr(getattr(states, name)) == f"states.{name}"
    assert len(set(busd.states)) == 5


def test_a_new_bus_is_stopped_and_declares_the_builtin_channels(bus: Bus) -> None:
    assert bus.state is states.STOPPED
    assert bus.states is states
    assert bus.states.STARTED is states.STARTED
    assert set(bus.listeners) >= BUILTIN_CHANNELS
    for channel, callbacks in bus.listeners.items():
        assert isinstance(callbacks, set), channel


# -- subscribe / unsubscribe -------------------------------------------------


def test_priority_comes_from_argument_then_attribute_then_50(bus: Bus) -> None:
    by_attribute = returning("attr10")
    by_attribute.priority = 10  # type: ignore[attr-defined]
    argument_wins = returning("arg5")
    argument_wins.priority = 90  # type: ignore[attr-defined]
    bus.subscribe("ch", returning("default50"))
    bus.subscribe("ch", returning("arg51"), priority=51)
    bus.subscribe("ch", argument_wins, priority=5)
    bus.subscribe("ch", returning("arg49"), priority=49)
    bus.subscribe("ch", by_attribute)

    assert bus.publish("ch") == ["arg5", "attr10", "arg49", "default50", "arg51"]


def test_subscribe_without_callback_is_a_decorator_returning_the_function(bus: Bus) -> None:
    @bus.subscribe("ch", priority=70)
    def late() -> str:
        return "late"

    @bus.subscribe("ch")
    def default() -> str:
        return "default"

    assert late() == "late"  # the name still refers to the plain function
    assert bus.listeners["ch"] == {late, default}
    assert bus.publish("ch") == ["default", "late"]


def test_subscribing_again_updates_the_priority_not_the_membership(bus: Bus) -> None:
    first, second = returning("first"), returning("second")
    bus.subscribe("ch", first, priority=10)
    bus.subscribe("ch", second, priority=20)
    assert bus.publish("ch") == ["first", "second"]

    bus.subscribe("ch", first, priority=30)

    assert bus.publish("ch") == ["second", "first"]
    assert bus.listeners["ch"] == {first, second}


def test_equal_priorities_run_in_subscription_order_every_time(bus: Bus) -> None:
    # Many listeners so that set or hash order cannot pass by luck.
    order = [17, 3, 29, 0, 11, 25, 8, 21, 14, 1, 27, 6, 19, 9, 23, 4, 12, 28, 2, 16]
    for value in order:
        bus.subscribe("ch", returning(value), priority=40)
    bus.subscribe("ch", returning("first"), priority=39)

    for _ in range(3):
        assert bus.publish("ch") == ["first", *order]


def test_unsubscribe_removes_and_is_a_noop_when_absent(bus: Bus) -> None:
    kept, removed = returning("kept"), returning("removed")
    bus.subscribe("ch", kept)
    bus.subscribe("ch", removed)

    bus.unsubscribe("ch", removed)
    bus.unsubscribe("ch", removed)
    bus.unsubscribe("no-such-channel", kept)
    bus.unsubscribe("start", kept)

    assert bus.listeners["ch"] == {kept}
    assert bus.publish("ch") == ["kept"]


# -- publish -----------------------------------------------------------------


def test_publish_to_an_unknown_channel_returns_an_empty_list(bus: Bus) -> None:
    assert bus.publish("no-such-channel", 1, key="v") == []


def test_publish_passes_arguments_and_returns_results_in_order(bus: Bus) -> None:
    bus.subscribe("ch", lambda a, b=0: a + b, priority=2)
    bus.subscribe("ch", lambda a, b=0: (a, b), priority=1)

    assert bus.publish("ch", 2, b=3) == [(2, 3), 5]


def test_every_listener_runs_then_failures_are_raised_together(
    bus: Bus, logs: LogRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="busd")
    ran: list[str] = []

    def bad_value() -> None:
        ran.append("bad_value")
        raise ValueError("first failure")

    def good() -> str:
        ran.append("good")
        return "ok"

    def bad_key() -> None:
        ran.append("bad_key")
        raise KeyError("second failure")

    bus.subscribe("ch", bad_value, priority=10)
    bus.subscribe("ch", good, priority=20)
    bus.subscribe("ch", bad_key, priority=30)

    with pytest.raises(ChannelFailures) as info:
        bus.publish("ch")

    assert ran == ["bad_value", "good", "bad_key"]
    failures = info.value
    assert isinstance(failures, BusError)
    assert [type(e) for e in failures.get_instances()] == [ValueError, KeyError]
    assert "first failure" in str(failures)
    assert "second failure" in str(failures)

    errors = [(m, lvl) for m, lvl in logs.entries if m.startswith("Error in")]
    assert len(errors) == 2
    for (msg, level), listener, exc_name in [
        (errors[0], bad_value, "ValueError"),
        (errors[1], bad_key, "KeyError"),
    ]:
        assert level == 40
        assert msg.startswith(f"Error in 'ch' listener {listener!r}")
        assert "Traceback (most recent call last)" in msg
        assert exc_name in msg
    logged = [r for r in caplog.records if r.getMessage().startswith("Error in 'ch'")]
    assert [(r.name, r.levelno) for r in logged] == [("busd", 40), ("busd", 40)]


def test_failures_on_the_log_channel_are_raised_but_not_logged(
    bus: Bus, logs: LogRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="busd")

    def broken_sink(msg: str, level: int = logging.INFO) -> None:
        raise OSError("disk full")

    bus.subscribe("log", broken_sink)

    with pytest.raises(ChannelFailures) as info:
        bus.publish("log", "hello", logging.INFO)

    assert [type(e) for e in info.value.get_instances()] == [OSError]
    assert logs.entries == [("hello", logging.INFO)]
    assert not [r for r in caplog.records if "Error in" in r.getMessage()]


@pytest.mark.parametrize(
    "exc", [KeyboardInterrupt(), SystemExit(3)], ids=["KeyboardInterrupt", "SystemExit"]
)
def test_interrupts_propagate_at_once(bus: Bus, exc: BaseException) -> None:
    ran: list[str] = []

    def interrupt() -> None:
        ran.append("interrupt")
        raise exc

    bus.subscribe("ch", lambda: ran.append("before"), priority=10)
    bus.subscribe("ch", interrupt, priority=20)
    bus.subscribe("ch", lambda: ran.append("after"), priority=30)

    with pytest.raises(type(exc)) as info:
        bus.publish("ch")

    assert info.value is exc
    assert ran == ["before", "interrupt"]
    if isinstance(exc, SystemExit):
        assert info.value.code == 3


def _exit_zero() -> None:
    raise SystemExit(0)


def _fail() -> None:
    raise ValueError("earlier failure")


def test_system_exit_zero_after_a_failure_becomes_exit_code_1(bus: Bus) -> None:
    bus.subscribe("ch", _fail, priority=10)
    bus.subscribe("ch", _exit_zero, priority=20)

    with pytest.raises(SystemExit) as info:
        bus.publish("ch")

    assert info.value.code == 1


def test_system_exit_zero_without_a_failure_stays_0(bus: Bus) -> None:
    bus.subscribe("ch", _exit_zero)

    with pytest.raises(SystemExit) as info:
        bus.publish("ch")

    assert info.value.code == 0


# -- errors ------------------------------------------------------------------


def test_channel_failures_is_falsy_empty_truthy_full_and_readable() -> None:
    empty = ChannelFailures()
    assert not empty
    assert empty.get_instances() == []

    first, second = ValueError("one"), RuntimeError("two")
    full = ChannelFailures(exceptions=[first, second])
    assert full
    assert full.get_instances() == [first, second]
    full.get_instances().clear()  # a copy: the failures stay
    assert full.get_instances() == [first, second]
    assert str(full).splitlines() == [repr(first), repr(second)]


def test_errors_share_one_root() -> None:
    for cls in (ChannelFailures, IllegalTransition, WaitTimeout):
        assert issubclass(cls, BusError), cls
    assert issubclass(BusError, Exception)
    assert issubclass(WaitTimeout, TimeoutError)


# -- log ---------------------------------------------------------------------


def test_log_publishes_message_and_level_and_reaches_stdlib_logging(
    bus: Bus, logs: LogRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="busd")

    bus.log()
    bus.log("hello")
    bus.log("careful", level=30)

    assert logs.entries == [("", 20), ("hello", 20), ("careful", 30)]
    records = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert records == [("busd", 20, ""), ("busd", 20, "hello"), ("busd", 30, "careful")]


def test_log_appends_the_traceback_when_asked_inside_an_except_block(
    bus: Bus, logs: LogRecorder
) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        bus.log("while doing X", level=40, traceback=True)

    [(msg, level)] = logs.entries
    assert level == 40
    assert msg.startswith("while doing X")
    assert "Traceback (most recent call last)" in msg
    assert "ValueError: boom" in msg


# -- lifecycle ---------------------------------------------------------------


def test_start_stop_exit_run_listeners_in_the_right_states_and_log_each_step(
    bus: Bus, logs: LogRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="busd")
    events: list[str] = []
    for channel in ("start", "stop", "exit"):
        bus.subscribe(channel, lambda ch=channel: events.append(f"{ch} in {bus.state!r}"))

    def lifecycle_lines(msg: str, level: int = logging.INFO) -> None:
        if msg.startswith("Bus "):
            events.append(msg)

    bus.subscribe("log", lifecycle_lines)

    bus.start()
    assert bus.state is states.STARTED
    bus.exit()
    assert bus.state is states.EXITING

    expected = [
        "Bus STARTING",
        "start in states.STARTING",
        "Bus STARTED",
        "Bus STOPPING",
        "stop in states.STOPPING",
        "Bus STOPPED",
        "Bus EXITING",
        "exit in states.EXITING",
        "Bus EXITED",
    ]
    assert events == expected
    lines = [e for e in expected if e.startswith("Bus")]
    assert logs.bus_lines() == lines
    stdlib = [r.getMessage() for r in caplog.records if r.name == "busd"]
    assert [m for m in stdlib if m.startswith("Bus")] == lines


def test_stop_then_start_again(bus: Bus, logs: LogRecorder) -> None:
    started: list[str] = []
    bus.subscribe("start", lambda: started.append(bus.state.name))

    bus.start()
    bus.stop()
    assert bus.state is states.STOPPED
    bus.start()

    assert bus.state is states.STARTED
    assert started == ["STARTING", "STARTING"]
    assert logs.bus_lines() == [
        "Bus STARTING",
        "Bus STARTED",
        "Bus STOPPING",
        "Bus STOPPED",
        "Bus STARTING",
        "Bus STARTED",
    ]


def test_graceful_logs_and_publishes(
    bus: Bus, logs: LogRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="busd")
    reloaded: list[str] = []
    bus.subscribe("graceful", lambda: reloaded.append("reloaded"))
    bus.start()

    bus.graceful()

    assert reloaded == ["reloaded"]
    assert "Bus graceful" in logs.messages
    assert "Bus graceful" in [r.getMessage() for r in caplog.records if r.name == "busd"]
    assert bus.state is states.STARTED


def test_exit_twice_is_a_noop_the_second_time(bus: Bus, logs: LogRecorder) -> None:
    exits: list[str] = []
    bus.subscribe("exit", lambda: exits.append("exit"))
    bus.start()

    bus.exit()
    lines_after_first = logs.bus_lines()
    bus.exit()

    assert exits == ["exit"]
    assert logs.bus_lines() == lines_after_first
    assert bus.state is states.EXITING


def test_start_after_exit_is_an_illegal_transition_that_changes_nothing(
    bus: Bus, logs: LogRecorder
) -> None:
    started: list[str] = []
    bus.subscribe("start", lambda: started.append("start"))
    bus.exit()
    entries_before = list(logs.entries)

    with pytest.raises(IllegalTransition) as info:
        bus.start()

    assert isinstance(info.value, BusError)
    assert "EXITING" in str(info.value)
    assert "STARTING" in str(info.value)
    assert bus.state is states.EXITING
    assert started == []
    assert logs.entries == entries_before


def test_an_illegal_start_does_not_register_an_atexit_handler(
    bus: Bus, atexit_calls: list[Callable[..., Any]]
) -> None:
    bus.exit()

    with pytest.raises(IllegalTransition):
        bus.start()

    assert atexit_calls == [], "an illegal start() must change nothing"


def test_a_failing_start_listener_exits_the_bus_and_raises(
    bus: Bus, logs: LogRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    os_exits: list[int] = []
    monkeypatch.setattr(os, "_exit", os_exits.append)
    ran: list[str] = []

    def broken() -> None:
        ran.append("broken start")
        raise ValueError("cannot bind")

    bus.subscribe("start", broken, priority=10)
    bus.subscribe("start", lambda: ran.append("later start"), priority=20)
    bus.subscribe("stop", lambda: ran.append("stop"))
    bus.subscribe("exit", lambda: ran.append("exit"))

    with pytest.raises(ChannelFailures) as info:
        bus.start()

    assert [type(e) for e in info.value.get_instances()] == [ValueError]
    assert ran == ["broken start", "later start", "stop", "exit"]
    assert bus.state is states.EXITING
    assert any(
        msg.startswith(f"Error in 'start' listener {broken!r}") and level == 40
        for msg, level in logs.entries
    )
    assert logs.bus_lines()[-2:] == ["Bus EXITING", "Bus EXITED"]
    assert "Bus STARTED" not in logs.bus_lines()
    assert os_exits == []


# -- atexit and start_with_callback ------------------------------------------


def test_one_atexit_handler_per_bus_not_per_start(
    bus: Bus, atexit_calls: list[Callable[..., Any]]
) -> None:
    exits: list[str] = []
    bus.subscribe("exit", lambda: exits.append("exit"))

    bus.start()
    bus.stop()
    bus.start()
    other = Bus()
    other.start()
    other.start()

    assert len(atexit_calls) == 2
    mine = atexit_calls[0]
    assert exits == []
    mine()  # what the interpreter does at exit with a bus left running
    assert bus.state is states.EXITING
    assert exits == ["exit"]
    mine()
    assert exits == ["exit"]
    assert other.state is states.STARTED
    other.exit()


def test_start_with_callback_runs_func_once_started(bus: Bus) -> None:
    calls: list[tuple[Any, ...]] = []
    done = threading.Event()

    def func(*args: Any, **kwargs: Any) -> None:
        calls.append((bus.state, threading.current_thread(), args, kwargs))
        done.set()

    thread = bus.start_with_callback(func, args=(1, "two"), kwargs={"three": 3})

    assert isinstance(thread, threading.Thread)
    assert done.wait(5), "the callback never ran"
    thread.join(5)
    assert not thread.is_alive()
    assert calls == [(states.STARTED, thread, (1, "two"), {"three": 3})]


def test_start_with_callback_without_arguments(bus: Bus) -> None:
    done = threading.Event()

    thread = bus.start_with_callback(done.set)

    assert done.wait(5), "the callback never ran"
    thread.join(5)
    assert not thread.is_alive()
