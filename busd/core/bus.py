"""The in-process bus: a lifecycle state machine with publish/subscribe.

Semantics are those of CherryPy's ``wspbus`` so that code written against
``cherrypy.engine`` runs unchanged; no sockets and no processes here.  The
bus is built in layers, one module each:

    busd.core.pubsub     PubSub      channels, listeners in order, publish, log
    busd.core.lifecycle  Lifecycle   the state machine (busd.core.states), start,
                                     stop, exit (and who finishes it), graceful
    busd.core.bus        Bus         wait, defer, block, the join of child
                                     threads, restart (busd.core.reexec)

This module is what wspbus is to CherryPy: ``Bus``, ``states`` and
``ChannelFailures`` stand where wspbus's do.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from busd.core.callpath import Role, holding, holds
from busd.core.errors import ChannelFailures, WaitTimeout
from busd.core.lifecycle import Lifecycle
from busd.core.reexec import STARTUP_CWD, extend_pythonpath, set_cloexec, true_argv
from busd.core.states import TRANSITIONS, State, states
from busd.core.stats import Stats

__all__ = ["TRANSITIONS", "Bus", "BusStats", "ChannelFailures", "State", "states"]

#: The longest one wait of :meth:`Bus.wait` lasts with nothing to wait for: a
#: bound, not a poll (a state change, deferred work or a subscription wakes it).
IDLE_WAIT = 5.0


@dataclass(frozen=True, eq=False)
class BusStats(Stats):
    """A bus's state and its channels."""

    #: The state's name (``"STARTED"``).
    state: str
    #: The number of listeners of each channel.
    listeners: dict[str, int]


class Bus(Lifecycle):
    """A process bus: states, channels and their listeners (wspbus-compatible).

    ``listeners`` maps a channel name to the set of its callbacks; adding a
    key declares a channel, as CherryPy code does.  Listeners of a channel run
    in ascending priority, ties in subscription order.
    """

    execv = False
    max_cloexec_files: int | None = 4096

    def __init__(self) -> None:
        super().__init__()
        self._deferred: collections.deque[Callable[[], object]] = collections.deque()
        #: Calls of block() under way; while there is one, defer() hands work to it.
        self._blocked = 0
        #: Held by the call path inside block(): the one that runs deferred work.
        self._block_role = Role("block")

    def _subscribed(self, channel: str) -> None:
        with self._cond:
            self._cond.notify_all()  # a waiter may now have a channel to publish

    def restart(self) -> None:
        """Exit, then re-execute the process from :meth:`block` in the main thread."""
        self.execv = True
        self.exit()

    # -- waiting -------------------------------------------------------

    def wait(
        self,
        state: State | Iterable[State],
        interval: float = 0.1,
        channel: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Wait until the bus is in ``state`` (or one of several states).

        Wakes at once on a state change.  While waiting, publishes ``channel``
        (if given) every ``interval`` seconds, and runs work handed over with
        :meth:`defer`.  Raises :class:`WaitTimeout` past ``timeout``.  While
        ``channel`` has no listener it does not wake to publish it: an idle
        process sleeps until something happens.
        """
        wanted = frozenset([state] if isinstance(state, State) else state)
        deadline = None if timeout is None else time.monotonic() + timeout
        next_tick = time.monotonic() + interval
        blocker = holds(self._block_role)
        while True:
            with self._cond:
                if self._state in wanted:
                    return
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    names = ", ".join(sorted(s.name for s in wanted))
                    raise WaitTimeout(
                        f"bus still {self._state.name} after {timeout}s waiting for {names}"
                    )
                ticking = channel is not None and bool(self.listeners.get(channel))
                limits = [t for t in (next_tick if ticking else None, deadline) if t is not None]
                if not (blocker and self._deferred):
                    # Without a tick or a deadline: a state change, deferred work or a
                    # new subscription (which may start the ticking) notifies us.
                    self._cond.wait(max(0.0, min([*limits, now + IDLE_WAIT]) - now))
            if blocker:
                self._run_deferred()
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + interval
                if channel is not None and self._state not in wanted:
                    self.publish(channel)

    def defer(self, func: Callable[[], object]) -> None:
        """Run ``func`` in the thread blocked in :meth:`block`, or now if none is.

        This is how a signal's action leaves the signal handler: the handler
        records, a plugin thread calls ``defer``, the main thread acts.
        """
        with self._cond:
            if self._blocked:
                self._deferred.append(func)
                self._cond.notify_all()
                return
        func()

    def _run_deferred(self) -> None:
        while True:
            try:
                func = self._deferred.popleft()
            except IndexError:
                return
            try:
                func()
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception:  # noqa: BLE001 - a deferred call is a boundary, logged
                self.log(f"Error in deferred call {func!r}", level=40, traceback=True)

    def block(self, interval: float = 0.1, timeout: float | None = None) -> None:
        """Wait for EXITING and the end of the exit listeners, join the other
        non-daemon threads, re-exec if asked.

        KeyboardInterrupt exits the bus; SystemExit exits it and is re-raised.
        ``timeout`` bounds the join of each child thread.
        """
        with self._cond:
            self._blocked += 1
        try:
            with holding(self._block_role):
                try:
                    self.wait(State.EXITING, interval=interval, channel="main")
                    self._wait_exit_done(interval)
                except (KeyboardInterrupt, OSError):
                    self.log("Keyboard Interrupt: shutting down bus")
                    self.exit()
                except SystemExit:
                    self.log("SystemExit raised: shutting down bus")
                    self.exit()
                    raise
        finally:
            with self._cond:
                self._blocked -= 1
        self._run_deferred()
        self.log("Waiting for child threads to terminate...")
        self._join_threads(timeout)
        if self.execv:
            self._do_execv()

    def _wait_exit_done(self, interval: float) -> None:
        """Wait until the exit listeners ran (exit() may run in another thread).

        An EXITING set by hand (``bus.state = states.EXITING``, as wspbus
        allows) has no exit listeners running: nothing to wait for.
        """
        while True:
            with self._cond:
                if self._exit_done or self._exit_owner is None:
                    return
                if not self._deferred:
                    self._cond.wait(interval)
            self._run_deferred()

    @staticmethod
    def _join_threads(timeout: float | None) -> None:
        # wspbus joins "all non-main, non-daemon threads": the main thread
        # ends only with the interpreter, so a block() in another thread
        # would wait on it for the whole timeout.  The calling thread is
        # left out by Thread.join() itself (RuntimeError), not by asking.
        for thread in threading.enumerate():
            if (
                thread.daemon
                or thread is threading.main_thread()
                or isinstance(thread, threading._DummyThread)
            ):
                continue
            with contextlib.suppress(RuntimeError):  # "cannot join current thread"
                _join(thread, timeout)

    def start_with_callback(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> threading.Thread:
        """Start the bus, and call ``func`` in a new thread once it is STARTED."""
        call_args = tuple(args or ())
        call_kwargs = dict(kwargs or {})

        def _callback() -> None:
            self.wait(State.STARTED)
            func(*call_args, **call_kwargs)

        thread = threading.Thread(target=_callback)
        thread.name = f"Bus Callback {thread.name}"
        thread.start()
        self.start()
        return thread

    def _do_execv(self) -> None:
        """Replace this process with a fresh run of the same command line."""
        args = true_argv()
        self.log(f"Re-spawning {' '.join(args)}")
        extend_pythonpath(os.environ)
        if self.max_cloexec_files:
            set_cloexec(self.max_cloexec_files)
        os.chdir(STARTUP_CWD)
        os.execv(sys.executable, args)

    def statistics(self) -> BusStats:
        """The state and the number of listeners per channel."""
        with self._lock:
            counts = {ch: len(cbs) for ch, cbs in self.listeners.items()}
        return BusStats(state=self._state.name, listeners=counts)


def _join(thread: threading.Thread, timeout: float | None) -> None:
    """Join ``thread`` for at most ``timeout`` seconds (None: until it ends, as
    wspbus does), in waits of at most ``IDLE_WAIT`` each."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while thread.is_alive():
        left = IDLE_WAIT if deadline is None else min(IDLE_WAIT, deadline - time.monotonic())
        if left <= 0:
            return
        thread.join(left)
