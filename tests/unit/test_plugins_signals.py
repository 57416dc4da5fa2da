"""SignalHandler in this process: installing, restoring, and real signals to ourselves."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType

import pytest

from busd import Bus
from busd.plugins import SignalHandler

TIMEOUT = 5.0
HANDLED = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)


@pytest.fixture(autouse=True)
def _restore_signal_handlers() -> Iterator[None]:
    """Whatever a test does, leave this process's handlers as they were."""
    saved = {signum: signal.getsignal(signum) for signum in HANDLED}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture
def handler(bus: Bus) -> Iterator[SignalHandler]:
    plugin = SignalHandler(bus)
    yield plugin
    plugin.unsubscribe()


def _previous_handler(signum: int, frame: FrameType | None) -> None:
    raise AssertionError("the previous handler must not run while ours is installed")


def test_unsubscribe_restores_the_previous_handlers_exactly(handler: SignalHandler) -> None:
    signal.signal(signal.SIGUSR1, _previous_handler)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    handler.subscribe()
    for signum in HANDLED:
        assert signal.getsignal(signum) == handler._record
    handler.unsubscribe()
    assert signal.getsignal(signal.SIGUSR1) is _previous_handler
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_subscribing_twice_still_restores_the_original(handler: SignalHandler) -> None:
    signal.signal(signal.SIGUSR1, _previous_handler)
    handler.subscribe()
    handler.subscribe()
    handler.unsubscribe()
    assert signal.getsignal(signal.SIGUSR1) is _previous_handler


def test_the_dispatcher_thread_lives_from_subscribe_to_unsubscribe(handler: SignalHandler) -> None:
    def dispatchers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "busd SignalHandler"]

    assert dispatchers() == []
    handler.subscribe()
    assert len(dispatchers()) == 1
    assert dispatchers()[0].daemon
    handler.unsubscribe()
    assert dispatchers() == []
    assert handler.statistics()["dispatcher_alive"] is False


def test_subscribe_outside_the_main_thread_is_a_clear_error(handler: SignalHandler) -> None:
    before = signal.getsignal(signal.SIGTERM)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            handler.subscribe()
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(TIMEOUT)
    assert len(errors) == 1
    assert "main thread" in str(errors[0])
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_real_signal_runs_its_action_outside_the_signal_handler(
    bus: Bus, logs: list[tuple[str, int]]
) -> None:
    ran_in: list[threading.Thread] = []
    done = threading.Event()

    def action() -> None:
        ran_in.append(threading.current_thread())
        done.set()

    plugin = SignalHandler(bus, handlers={"SIGUSR1": action})
    plugin.subscribe()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert done.wait(TIMEOUT), "the SIGUSR1 action never ran"
    finally:
        plugin.unsubscribe()
    # Python runs signal handlers in the main thread: with nobody in
    # bus.block(), the action ran in the plugin's thread, so not in the handler.
    assert ran_in == [ran_in[0]]
    assert ran_in[0] is not threading.main_thread()
    assert ran_in[0].name == "busd SignalHandler"
    assert ("Caught signal SIGUSR1.", 20) in logs
    assert plugin.statistics()["caught"] == {"SIGUSR1": 1}


def test_sigterm_exits_the_bus_from_the_thread_in_block(bus: Bus) -> None:
    exited_in: list[threading.Thread] = []
    bus.subscribe("exit", lambda: exited_in.append(threading.current_thread()))
    sent = threading.Event()
    deadline = time.monotonic() + TIMEOUT
    gave_up: list[bool] = []

    def signal_once() -> None:
        # A 'main' listener runs inside block(): the deferral has a taker.
        if not sent.is_set():
            sent.set()
            os.kill(os.getpid(), signal.SIGTERM)
        elif time.monotonic() > deadline:
            gave_up.append(True)
            bus.exit()

    bus.subscribe("main", signal_once)
    plugin = SignalHandler(bus)
    plugin.subscribe()
    try:
        bus.start()
        bus.block(interval=0.01, timeout=TIMEOUT)
    finally:
        plugin.unsubscribe()
    assert not gave_up, f"SIGTERM did not exit the bus within {TIMEOUT}s"
    assert bus.state is bus.states.EXITING
    assert exited_in == [threading.main_thread()]


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGUSR1])
def test_sighup_and_sigusr1_reload_when_not_daemonized(
    bus: Bus, logs: list[tuple[str, int]], signum: int
) -> None:
    reloaded = threading.Event()
    bus.subscribe("graceful", reloaded.set)
    plugin = SignalHandler(bus, daemonized=False)
    plugin.subscribe()
    try:
        os.kill(os.getpid(), signum)
        assert reloaded.wait(TIMEOUT), "graceful listener never ran"
    finally:
        plugin.unsubscribe()
    assert (f"Caught signal {signal.Signals(signum).name}.", 20) in logs
    assert bus.state is bus.states.STOPPED


def test_sighup_restarts_when_daemonized(bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    restarted = threading.Event()
    monkeypatch.setattr(bus, "restart", restarted.set)
    bus.subscribe("graceful", lambda: pytest.fail("graceful instead of restart"))
    plugin = SignalHandler(bus, daemonized=True)
    plugin.subscribe()
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        assert restarted.wait(TIMEOUT), "SIGHUP did not restart a daemonized bus"
    finally:
        plugin.unsubscribe()


def test_daemonized_is_detected_as_cherrypy_does(
    handler: SignalHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", None)
    monkeypatch.setattr(os, "getppid", lambda: 1)
    assert handler._is_daemonized()
    monkeypatch.setattr(os, "getppid", lambda: 4242)
    assert not handler._is_daemonized()
    handler.daemonized = True
    assert handler._is_daemonized()


def test_handlers_replace_and_disable_defaults_by_name_or_number(bus: Bus) -> None:
    def custom() -> None:
        """A replacement action."""

    before_hup = signal.getsignal(signal.SIGHUP)
    plugin = SignalHandler(bus, handlers={int(signal.SIGTERM): custom, "SIGHUP": None})
    assert plugin.handlers["SIGTERM"] is custom
    plugin.subscribe()
    try:
        assert signal.getsignal(signal.SIGHUP) is before_hup
        assert custom in bus.listeners["SIGTERM"]
        assert bus.exit not in bus.listeners["SIGTERM"]
    finally:
        plugin.unsubscribe()
    assert custom not in bus.listeners["SIGTERM"]


def test_set_handler_and_the_signals_table(handler: SignalHandler, bus: Bus) -> None:
    assert handler.signals[int(signal.SIGTERM)] == "SIGTERM"
    assert handler.signals[int(signal.SIGUSR2)] == "SIGUSR2"
    with pytest.raises(ValueError, match="No such signal"):
        handler.set_handler("SIGNOPE")
    with pytest.raises(ValueError, match="No such signal"):
        handler.set_handler(100000)
    with pytest.raises(ValueError, match="cannot catch SIGKILL"):
        handler.set_handler(signal.SIGKILL)
    handler.set_handler("SIGPOLL", bus.graceful)  # an alias: its channel is the real name
    assert bus.graceful in bus.listeners["SIGIO"]
    handler.set_handler(int(signal.SIGUSR1), bus.graceful)
    assert signal.getsignal(signal.SIGUSR1) == handler._record
    assert bus.graceful in bus.listeners["SIGUSR1"]


def test_handle_signal_acts_now_in_the_calling_thread(
    handler: SignalHandler, bus: Bus, logs: list[tuple[str, int]]
) -> None:
    calls: list[threading.Thread] = []
    bus.subscribe("SIGUSR2", lambda: calls.append(threading.current_thread()))
    handler.handle_signal(signal.SIGUSR2)
    assert calls == [threading.current_thread()]
    assert ("Caught signal SIGUSR2.", 20) in logs


def test_a_failing_action_is_logged_and_later_signals_still_work(
    bus: Bus, logs: list[tuple[str, int]]
) -> None:
    first, second = threading.Event(), threading.Event()

    def flaky() -> None:
        if not first.is_set():
            first.set()
            raise ZeroDivisionError("first one fails")
        second.set()

    plugin = SignalHandler(bus, handlers={"SIGUSR1": flaky})
    plugin.subscribe()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        # Two quick signals of one kind may merge into one: send the next later.
        assert first.wait(TIMEOUT), "the first SIGUSR1 action never ran"
        os.kill(os.getpid(), signal.SIGUSR1)
        assert second.wait(TIMEOUT), "the dispatcher died with the first failure"
    finally:
        plugin.unsubscribe()
    assert any("ZeroDivisionError" in msg and level == 40 for msg, level in logs)
