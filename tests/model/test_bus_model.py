"""Model-based test of busd.Bus: random call sequences against the transition table.

Hypothesis drives start, stop, exit, restart, graceful and custom publishes, with
listeners that subscribe, unsubscribe and fail at random, and checks after
every call that the bus's state, the transitions it made (each one allowed
by ``TRANSITIONS``, in the order the model predicts), the listeners it ran
(in priority order) and the errors it raised agree with a small model.

Deterministic in CI (``derandomize``: the same examples every run, so a
failure shows with its steps); ``BUSD_MODEL_EXAMPLES`` asks for more, and
``BUSD_MODEL_SEED`` for a random run from that seed.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from busd.core.bus import TRANSITIONS, Bus, State
from busd.core.errors import ChannelFailures, IllegalTransition

EXAMPLES = int(os.environ.get("BUSD_MODEL_EXAMPLES", "500"))
SEED = os.environ.get("BUSD_MODEL_SEED")

S = State
#: The transitions each call makes, from each state (the model).
START = {S.STOPPED: [S.STARTING, S.STARTED], S.STARTED: [S.STARTING, S.STARTED]}
STOP = {S.STOPPED: [S.STOPPING, S.STOPPED], S.STARTED: [S.STOPPING, S.STOPPED]}
CHANNELS = ["start", "stop", "exit", "graceful", "custom"]


class RecordingBus(Bus):
    """A Bus that records each transition it makes."""

    def __init__(self) -> None:
        super().__init__()
        self.transitions: list[tuple[State, State]] = []

    def _state_changed(self, old: State, new: State) -> None:
        self.transitions.append((old, new))


class BusMachine(RuleBasedStateMachine):
    """The model: a state, and the listeners with their priorities and failures."""

    listeners = Bundle("listeners")

    def __init__(self) -> None:
        super().__init__()
        self.bus = RecordingBus()
        self.state = S.STOPPED
        self.calls: list[str] = []
        #: name -> (channel, priority, fails)
        self.model: dict[str, tuple[str, int, bool]] = {}
        self.funcs: dict[str, Any] = {}
        self.made = 0
        self.restarted = False

    # -- listeners ------------------------------------------------------

    @rule(
        target=listeners,
        channel=st.sampled_from(CHANNELS),
        priority=st.integers(0, 100),
        fails=st.booleans(),
    )
    def subscribe(self, channel: str, priority: int, fails: bool) -> str:
        self.made += 1
        name = f"{channel}-{self.made}"

        def listener(*args: Any, **kwargs: Any) -> str:
            self.calls.append(name)
            if fails:
                raise RuntimeError(f"{name} fails")
            return name

        self.bus.subscribe(channel, listener, priority=priority)
        self.model[name] = (channel, priority, fails)
        self.funcs[name] = listener
        return name

    @rule(name=consumes(listeners))
    def unsubscribe(self, name: str) -> None:
        channel = self.model.pop(name)[0]
        self.bus.unsubscribe(channel, self.funcs.pop(name))

    def expected_calls(self, channel: str) -> list[str]:
        mine = [
            (p, int(n.rsplit("-", 1)[1]), n) for n, (c, p, _) in self.model.items() if c == channel
        ]
        return [n for _, _, n in sorted(mine)]

    def fails(self, channel: str) -> bool:
        return any(f for c, _, f in self.model.values() if c == channel)

    # -- calls ------------------------------------------------------------

    def call(self, method: str) -> tuple[BaseException | None, list[tuple[State, State]]]:
        self.calls.clear()
        before = len(self.bus.transitions)
        try:
            getattr(self.bus, method)()
        except (ChannelFailures, IllegalTransition) as exc:
            error: BaseException | None = exc
        else:
            error = None
        return error, self.bus.transitions[before:]

    def path(self, states: list[State]) -> list[tuple[State, State]]:
        steps, old = [], self.state
        for new in states:
            steps.append((old, new))
            old = new
        return steps

    @precondition(lambda self: self.state is not S.EXITING)
    @rule()
    def start(self) -> None:
        error, made = self.call("start")
        calls = self.expected_calls("start")
        if self.fails("start"):
            failing = next(n for n in calls if self.model[n][2])
            # The failing listener's priority group runs to its end in wspbus:
            # every start listener runs, then the bus exits.
            assert isinstance(error, ChannelFailures)
            assert failing in self.calls
            assert made == self.path([S.STARTING, S.STOPPING, S.STOPPED, S.EXITING])
            assert self.calls == calls + self.expected_calls("stop") + self.expected_calls("exit")
            self.state = S.EXITING
            return
        assert error is None
        assert made == self.path(START[self.state])
        assert self.calls == calls
        self.state = S.STARTED

    @precondition(lambda self: self.state is not S.EXITING)
    @rule()
    def stop(self) -> None:
        error, made = self.call("stop")
        assert made == self.path(STOP[self.state])
        assert self.calls == self.expected_calls("stop")
        assert (error is not None) == self.fails("stop")
        self.state = S.STOPPED

    @rule(method=st.sampled_from(["exit", "restart"]))
    def exit(self, method: str) -> None:
        # restart is exit, asking block() to re-exec the process afterwards.
        error, made = self.call(method)
        assert self.bus.execv is (method == "restart" or self.restarted)
        self.restarted = self.bus.execv
        if self.state is S.EXITING:
            assert error is None
            assert made == []
            assert self.calls == []
            return
        assert made == self.path([*STOP[self.state], S.EXITING])
        assert self.calls == self.expected_calls("stop") + self.expected_calls("exit")
        assert (error is not None) == (self.fails("stop") or self.fails("exit"))
        self.state = S.EXITING

    @precondition(lambda self: self.state is S.EXITING)
    @rule(method=st.sampled_from(["start", "stop"]))
    def after_exit(self, method: str) -> None:
        error, made = self.call(method)
        assert isinstance(error, IllegalTransition), f"{method} after exit gave {error!r}"
        assert made == []
        assert self.calls == []

    @rule(channel=st.sampled_from(["graceful", "custom"]))
    def publish(self, channel: str) -> None:
        self.calls.clear()
        try:
            results = (
                self.bus.graceful()
                if channel == "graceful"
                else self.bus.publish(channel, 1, key="v")
            )
        except ChannelFailures:
            assert self.fails(channel)
        else:
            assert not self.fails(channel)
            if channel == "custom":
                assert results == self.expected_calls(channel)
        assert self.calls == self.expected_calls(channel)

    # -- always ---------------------------------------------------------------

    @invariant()
    def agrees(self) -> None:
        assert self.bus.state is self.state
        for old, new in self.bus.transitions:
            assert new in TRANSITIONS[old], f"{old.name} -> {new.name} is not in the table"

    def teardown(self) -> None:
        # Leave no atexit hook behind; the bus is garbage after this.
        if self.bus.state is not S.EXITING:
            with contextlib.suppress(ChannelFailures):
                self.bus.exit()


BusMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=30,
    deadline=None,
    database=None,
    derandomize=SEED is None,
    suppress_health_check=[HealthCheck.too_slow],
)
if SEED is not None:
    from hypothesis import seed

    BusMachine = seed(int(SEED))(BusMachine)  # type: ignore[misc]


def test_bus_lifecycle_agrees_with_the_transition_table_model() -> None:
    """The state machine above, run as one test (examples printed on failure)."""
    print(
        f"bus model: {EXAMPLES} examples of up to 30 steps, "
        f"{'derandomized' if SEED is None else f'seed {SEED}'}"
    )
    BusMachine.TestCase("runTest").runTest()
