"""Who finishes an exit, and who runs deferred work: the call path, not the thread.

The bus marks the call paths of its own listener calls (busd.core.callpath)
instead of comparing thread identities; these tests hold it to that, and to
waits that end.
"""

from __future__ import annotations

import ast
import contextvars
import threading
from pathlib import Path

import pytest

from busd import Bus, states

pytestmark = pytest.mark.usefixtures("no_atexit")

CORE = Path(__file__).resolve().parents[2] / "busd" / "core"
IDENTITY_CALLS = {"get_ident", "current_thread", "main_thread", "get_native_id"}


def identity_calls(path: Path) -> list[tuple[str, int, str]]:
    """``(function, line, call)`` for each thread-identity call in ``path``."""
    found = []
    for func in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(func, ast.FunctionDef):
            continue
        for node in ast.walk(func):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in IDENTITY_CALLS
            ):
                found.append((func.name, node.lineno, node.func.attr))
    return found


def test_busd_asks_which_thread_runs_only_where_a_python_api_demands_it() -> None:
    """Outside the wspbus-style plugins, two places: signal.signal() works in the
    main thread only, and block() joins every thread but the main one (wspbus)."""
    busd = CORE.parent
    found = {
        path.relative_to(busd).as_posix(): [(f, call) for f, _, call in identity_calls(path)]
        for path in sorted(busd.rglob("*.py"))
        if path.relative_to(busd).parts[0] != "plugins"
    }
    assert "core/lifecycle.py" in found
    assert {name: calls for name, calls in found.items() if calls} == {
        "client/signals.py": [
            ("take_leave_signals", "current_thread"),
            ("take_leave_signals", "main_thread"),
        ],
        "core/bus.py": [("_join_threads", "main_thread")],
    }


def test_exit_asked_for_by_a_stop_listener_through_another_thread_does_not_deadlock(
    bus: Bus,
) -> None:
    """A stop listener that has exit() called in a thread carrying its context
    (as ``asyncio.to_thread`` does) and waits for it: that exit is the stop's own."""
    asked: list[bool] = []

    def stop_listener() -> None:
        context = contextvars.copy_context()
        helper = threading.Thread(target=context.run, args=(bus.exit,), daemon=True)
        helper.start()
        helper.join(5)
        asked.append(not helper.is_alive())

    exits: list[str] = []
    bus.subscribe("stop", stop_listener)
    bus.subscribe("exit", lambda: exits.append(bus.state.name))
    bus.start()
    try:
        bus.stop()
    finally:
        bus.unsubscribe("stop", stop_listener)

    assert asked == [True], "the helper's exit() waited for the stop that was waiting for it"
    assert exits == ["EXITING"]
    assert bus.state is states.EXITING


def test_a_waiting_exit_takes_over_an_exit_whose_owner_was_interrupted(bus: Bus) -> None:
    in_stop = threading.Event()
    release = threading.Event()
    stops: list[str] = []
    exits: list[str] = []

    def interrupted_once() -> None:
        stops.append("stop")
        if len(stops) == 1:
            in_stop.set()
            assert release.wait(10)
            raise KeyboardInterrupt

    bus.subscribe("stop", interrupted_once)
    bus.subscribe("exit", lambda: exits.append("exit"))
    bus.start()
    first_raised: list[BaseException] = []

    def first_exit() -> None:
        try:
            bus.exit()
        except KeyboardInterrupt as exc:
            first_raised.append(exc)

    first = threading.Thread(target=first_exit, daemon=True)
    first.start()
    assert in_stop.wait(10), "the first exit never reached its stop listener"
    second_done = threading.Event()
    second = threading.Thread(target=lambda: (bus.exit(), second_done.set()), daemon=True)
    second.start()
    assert not second_done.wait(0.2), "the second exit returned while the first was stopping"
    release.set()
    first.join(10)

    assert second_done.wait(10), "the second exit still waits for an exit nobody runs"
    assert len(first_raised) == 1
    assert stops == ["stop", "stop"]
    assert exits == ["exit"]
    assert bus.state is states.EXITING


def test_block_returns_when_the_state_is_set_to_exiting_by_hand(bus: Bus) -> None:
    """wspbus lets code set ``bus.state``; then no exit listeners run to wait for."""
    returned = threading.Event()

    def blocker() -> None:
        bus.block(interval=0.01, timeout=1)
        returned.set()

    bus.state = states.EXITING
    thread = threading.Thread(target=blocker, daemon=True)
    thread.start()

    assert returned.wait(5), "block() waits for exit listeners that never run"
    assert bus.exit() is None  # and a later exit() does not wait for them either


def test_deferred_work_runs_in_a_wait_nested_in_block(bus: Bus) -> None:
    """A 'main' listener (run by block()) that waits on the bus still runs deferred work."""
    ran: list[str] = []
    in_nested = threading.Event()

    def main_listener() -> None:
        bus.unsubscribe("main", main_listener)
        in_nested.set()
        bus.wait(states.EXITING, interval=0.01, timeout=5)
        ran.append("nested wait returned")

    def helper() -> None:
        if in_nested.wait(5):
            bus.defer(lambda: (ran.append("deferred"), bus.exit()))

    bus.subscribe("main", main_listener)
    bus.start()
    thread = threading.Thread(target=helper, daemon=True)
    thread.start()

    bus.block(interval=0.01, timeout=5)

    thread.join(5)
    assert ran == ["deferred", "nested wait returned"]
    assert bus.state is states.EXITING
