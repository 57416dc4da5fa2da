"""The wspbus behaviours CherryPy's own tests rely on, tested on busd.Bus directly."""

from __future__ import annotations

import logging
import threading

import pytest

from busd import Bus, states


def _bus_lines(bus: Bus) -> list[str]:
    lines: list[str] = []
    bus.subscribe("log", lambda msg="", level=20: lines.append(msg))
    return lines


def test_exit_from_stopped_runs_the_stop_listeners_first(bus: Bus) -> None:
    ran: list[str] = []
    bus.subscribe("stop", lambda: ran.append(f"stop in {bus.state.name}"))
    bus.subscribe("exit", lambda: ran.append(f"exit in {bus.state.name}"))
    lines = _bus_lines(bus)

    bus.exit()

    assert ran == ["stop in STOPPING", "exit in EXITING"]
    assert lines == ["Bus STOPPING", "Bus STOPPED", "Bus EXITING", "Bus EXITED"]
    assert bus.state is states.EXITING


def test_exit_after_stop_runs_the_stop_listeners_again(bus: Bus) -> None:
    stops: list[str] = []
    bus.subscribe("stop", lambda: stops.append(bus.state.name))
    bus.start()
    bus.stop()
    bus.exit()
    assert stops == ["STOPPING", "STOPPING"]


def test_exit_from_a_stop_listener_of_a_plain_stop_exits_once(bus: Bus) -> None:
    ran: list[str] = []

    def stop_then_exit() -> None:
        ran.append("stop")
        bus.exit()

    bus.subscribe("stop", stop_then_exit)
    bus.subscribe("exit", lambda: ran.append("exit"))
    bus.start()
    bus.stop()
    assert ran == ["stop", "exit"]
    assert bus.state is states.EXITING


def test_a_second_exit_waits_for_the_first_and_stops_nothing_again(bus: Bus) -> None:
    in_exit = threading.Event()
    release = threading.Event()
    stops: list[str] = []
    exits: list[str] = []
    bus.subscribe("stop", lambda: stops.append("stop"))

    def slow_exit() -> None:
        exits.append("exit")
        in_exit.set()
        assert release.wait(10), "the test never released the exit listener"

    bus.subscribe("exit", slow_exit)
    first = threading.Thread(target=bus.exit)
    first.start()
    assert in_exit.wait(10), "the first exit never reached its exit listener"
    second_done = threading.Event()
    second = threading.Thread(target=lambda: (bus.exit(), second_done.set()))
    second.start()
    try:
        # Bounded: the second exit must still be waiting while the first runs.
        assert not second_done.wait(0.2), "a second exit returned before the first finished"
    finally:
        release.set()
    first.join(10)
    second.join(10)
    assert second_done.is_set()
    assert stops == ["stop"]
    assert exits == ["exit"]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {}),
        ((), {"arg": 79347}),
        ((None,), {}),
        (("text", "not a level"), {}),
        ((), {"msg": "by name", "level": logging.WARNING}),
        (("a", 20, "extra"), {"x": 1}),
    ],
)
def test_the_logging_bridge_takes_whatever_is_published_on_log(
    bus: Bus, args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    assert bus.publish("log", *args, **kwargs) == [None]


def test_the_logging_bridge_forwards_message_and_level(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="busd")
    bus.publish("log", msg="by name", level=logging.WARNING)
    bus.publish("log", "by position", logging.ERROR)
    bus.publish("log", arg=79347)
    got = [(r.getMessage(), r.levelno) for r in caplog.records if r.name == "busd"]
    assert got == [("by name", logging.WARNING), ("by position", logging.ERROR)]
