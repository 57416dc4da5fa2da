"""The in-process bus: a lifecycle state machine with publish/subscribe.

Semantics are those of CherryPy's ``wspbus`` so that code written against
``cherrypy.engine`` runs unchanged; no sockets and no processes here.

States and the transitions the bus allows::

                 start()             (listeners ok)
     STOPPED ------------> STARTING ---------------> STARTED
      ^  |  ^                 |   ^                    |  |
      |  |  |                 |   +---- start() -------+  |
      |  |  |   stop()        v stop()   (failure: exit)  | stop()
      |  |  +------------- STOPPING <---------------------+
      |  |                    ^
      |  +--- stop() ---------+
      |
      +--(exit(): stop(), even from STOPPED, then)--> EXITING   (terminal)

Every change goes through one choke point, :meth:`Bus._transition`, which
checks the table, logs ``Bus <STATE>`` once, wakes every waiter and calls
:meth:`Bus._state_changed` (the hook a relaying bus overrides).
"""

from __future__ import annotations

import atexit
import collections
import enum
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from busd.core.errors import ChannelFailures, IllegalTransition, WaitTimeout

__all__ = ["Bus", "State", "states"]

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger("busd")

DEFAULT_PRIORITY = 50
BUILTIN_CHANNELS = ("start", "stop", "exit", "graceful", "log", "main")


class State(enum.Enum):
    """A lifecycle state of a bus."""

    STOPPED = "STOPPED"
    STARTING = "STARTING"
    STARTED = "STARTED"
    STOPPING = "STOPPING"
    EXITING = "EXITING"

    def __repr__(self) -> str:
        return f"states.{self.name}"

    __str__ = __repr__


#: The wspbus name for the state namespace: ``states.STARTED``.
states = State

TRANSITIONS: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING, State.STOPPING, State.EXITING}),
    State.STARTING: frozenset({State.STARTED, State.STOPPING}),
    State.STARTED: frozenset({State.STARTING, State.STOPPING}),
    State.STOPPING: frozenset({State.STOPPED}),
    State.EXITING: frozenset(),
}

# The startup working directory, for re-exec: taken at import, as wspbus does,
# because the application may chdir later.
_STARTUP_CWD = os.path.abspath(os.getcwd())


def _bridge_log(*args: Any, **kwargs: Any) -> None:
    """Forward the bus's 'log' channel to the stdlib logger 'busd'.

    It takes whatever anyone publishes on 'log' (wspbus lets users publish
    any arguments there, CherryPy's own tests publish none): ``(msg,
    level)`` as :meth:`Bus.log` sends them, by position or by name; a
    publish with no message logs nothing, and a level that is not a number
    is INFO.  It never raises, so it is never a user-visible failure.
    """
    msg = args[0] if args else kwargs.get("msg")
    if msg is None:
        return
    level = args[1] if len(args) > 1 else kwargs.get("level", logging.INFO)
    if not isinstance(level, int) or isinstance(level, bool):
        level = logging.INFO
    logger.log(level, "%s", msg)


_bridge_log.priority = 100  # type: ignore[attr-defined]


class Bus:
    """A process bus: states, channels and their listeners (wspbus-compatible).

    ``listeners`` maps a channel name to the set of its callbacks; adding a
    key declares a channel, as CherryPy code does.  Listeners of a channel run
    in ascending priority, ties in subscription order.
    """

    states = State
    execv = False
    max_cloexec_files: int | None = 4096

    def __init__(self) -> None:
        self.listeners: dict[str, set[Callable[..., Any]]] = {
            channel: set() for channel in BUILTIN_CHANNELS
        }
        self._priorities: dict[tuple[str, Callable[..., Any]], int] = {}
        self._order: dict[tuple[str, Callable[..., Any]], int] = {}
        self._counter = itertools.count()
        self._sorted: dict[str, tuple[frozenset[Callable[..., Any]], list[Callable[..., Any]]]] = {}
        self._lock = threading.RLock()
        self._cond = threading.Condition(threading.RLock())
        self._state = State.STOPPED
        self._deferred: collections.deque[Callable[[], object]] = collections.deque()
        self._blockers: collections.Counter[int] = collections.Counter()
        self._exit_done = False
        self._exit_pending = False
        #: The thread running exit(), from its first step; None before.
        self._exit_owner: int | None = None
        #: Transitions so far; a thread's own last one is in ``_mine.changes``.
        self._changes = 0
        self._mine = threading.local()
        self._stopper = 0
        self._atexit_registered = False
        self.subscribe("log", _bridge_log)

    # -- state ---------------------------------------------------------

    @property
    def state(self) -> State:
        """The current state."""
        return self._state

    @state.setter
    def state(self, new: State) -> None:
        self._transition(new)

    def _transition(self, new: State, after: int | None = None) -> bool:
        """Move to ``new`` if the table allows it; the only place state changes.

        Returns False, changing nothing, when the bus is already in ``new``
        (another thread or an outer call is doing the same transition), or
        when ``after`` is given and other transitions happened since the
        transition that returned that count (see :attr:`_changes`).
        """
        with self._cond:
            old = self._state
            if after is not None and after != self._changes:
                return False
            if new is old and new is not State.STARTED:
                return False
            if new not in TRANSITIONS[old]:
                raise IllegalTransition(f"bus cannot go from {old.name} to {new.name}")
            self._state = new
            self._changes += 1
            self._mine.changes = self._changes
            if new is State.STOPPING:
                self._stopper = threading.get_ident()
            self._cond.notify_all()
        self.log(f"Bus {new.name}")
        self._state_changed(old, new)
        return True

    def _state_changed(self, old: State, new: State) -> None:
        """Called after every transition, outside the lock; for subclasses."""

    # -- pub/sub -------------------------------------------------------

    def subscribe(
        self, channel: str, callback: Callable[..., Any] | None = None, priority: int | None = None
    ) -> Any:
        """Add ``callback`` to ``channel``; without a callback, return a decorator.

        The priority is the argument, else ``callback.priority``, else 50.
        Subscribing again updates the priority and keeps the original order.
        """
        if callback is None:

            def decorator(func: F) -> F:
                self.subscribe(channel, func, priority)
                return func

            return decorator
        if priority is None:
            priority = getattr(callback, "priority", DEFAULT_PRIORITY)
        key = (channel, callback)
        with self._lock:
            self._sorted.pop(channel, None)
            self.listeners.setdefault(channel, set()).add(callback)
            self._priorities[key] = int(priority)
            if key not in self._order:
                self._order[key] = next(self._counter)
        with self._cond:
            self._cond.notify_all()  # a waiter may now have a channel to publish
        return None

    def unsubscribe(self, channel: str, callback: Callable[..., Any]) -> None:
        """Remove ``callback`` from ``channel``; nothing happens if it is absent."""
        key = (channel, callback)
        with self._lock:
            self._sorted.pop(channel, None)
            self.listeners.get(channel, set()).discard(callback)
            self._priorities.pop(key, None)
            self._order.pop(key, None)

    def _sorted_listeners(self, channel: str) -> list[Callable[..., Any]]:
        with self._lock:
            members = self.listeners.get(channel)
            if not members:
                return []
            cached = self._sorted.get(channel)
            # Valid while the set holds the same callbacks (code may edit
            # bus.listeners directly, as CherryPy code does) and no priority changed.
            if cached is not None and cached[0] == members:
                return cached[1]
            keyed = [
                (
                    self._priorities.get((channel, cb), DEFAULT_PRIORITY),
                    self._order.get((channel, cb), sys.maxsize),
                    cb,
                )
                for cb in members
            ]
            keyed.sort(key=lambda item: (item[0], item[1]))
            ordered = [cb for _, _, cb in keyed]
            self._sorted[channel] = (frozenset(members), ordered)
            return ordered

    def publish(self, channel: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Run every listener of ``channel``; return their results in order.

        All listeners run even when some raise; their failures are then raised
        together as :class:`ChannelFailures`.  KeyboardInterrupt and SystemExit
        propagate at once (a ``SystemExit(0)`` after a failure becomes code 1).
        """
        if channel not in self.listeners:
            return []
        failures: ChannelFailures | None = None
        output = []
        for listener in self._sorted_listeners(channel):
            try:
                output.append(listener(*args, **kwargs))
            except KeyboardInterrupt:
                raise
            except SystemExit as exc:
                if failures and exc.code == 0:
                    exc.code = 1
                raise
            except Exception:  # noqa: BLE001 - a listener is a boundary; all failures collected
                if failures is None:
                    failures = ChannelFailures(channel=channel)
                failures.handle_exception()
                if channel != "log":
                    self.log(
                        f"Error in {channel!r} listener {listener!r}", level=40, traceback=True
                    )
        if failures:
            raise failures
        return output

    def log(self, msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        """Publish ``(msg, level)`` on the 'log' channel, with the traceback if asked."""
        if traceback:
            import traceback as _traceback  # only when a failure is logged

            msg += "\n" + "".join(_traceback.format_exception(*sys.exc_info()))
        try:
            self.publish("log", msg, level)
        except ChannelFailures as exc:
            # Reporting must not fail the code that reports: say so, and go on.
            logger.error("a 'log' listener failed: %s (message was: %s)", exc, msg)

    # -- lifecycle -----------------------------------------------------

    def start(self) -> None:
        """Start: STARTING, run the start listeners, STARTED.

        If a start listener fails, the bus logs it, exits (stop and exit
        listeners run) and raises the failure to the caller.
        """
        self._do_start()

    def stop(self) -> None:
        """Stop: STOPPING, run the stop listeners, STOPPED (even if some fail)."""
        self._do_stop()

    def exit(self) -> None:
        """Stop, then EXITING and run the exit listeners; EXITING is final.

        As in wspbus, the stop listeners run even when the bus is already
        STOPPED (``Bus STOPPING``, ``Bus STOPPED``, ``Bus EXITING``, ``Bus
        EXITED``): exit listeners may rely on what stop listeners release.
        Failures of stop or exit listeners are raised together after both ran.
        """
        self._do_exit()

    def graceful(self) -> None:
        """Advise every listener to reload."""
        self._do_graceful()

    # The _do_* methods are the local transitions.  Subclasses that forward
    # the public methods elsewhere (a client forwards them to its master)
    # still mirror through these, and they call only each other.

    def _do_start(self) -> None:
        if not self._transition(State.STARTING):
            return
        mine = self._mine.changes
        self._register_atexit()
        try:
            self.publish("start")
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:
            self.log("Shutting down due to error in start listener:", level=40, traceback=True)
            self._abort_start()
            raise
        # Only if no stop (or another start) came in while our listeners ran.
        self._transition(State.STARTED, after=mine)

    def _abort_start(self) -> None:
        """After a failed start: exit, logging (not raising) further failures."""
        try:
            self._do_exit()
        except ChannelFailures:
            self.log("Error while exiting after a failed start", level=40, traceback=True)

    def _do_stop(self) -> None:
        if not self._transition(State.STOPPING):
            return
        try:
            self.publish("stop")
        finally:
            self._transition(State.STOPPED)
            with self._cond:
                exit_pending, self._exit_pending = self._exit_pending, False
                if exit_pending:
                    self._exit_owner = threading.get_ident()
            if exit_pending:
                # An exit() came in while these stop listeners ran: they were
                # its stop, so it goes straight on to EXITING.
                self._run_exit_listeners([])

    def _do_exit(self, stop: bool = True) -> None:
        """Stop (``stop=False``: the caller's stop listeners just ran), then exit.

        The first caller owns the exit; a second one waits for it to finish
        (a stop or exit listener of the owner's that calls exit() returns).
        """
        me = threading.get_ident()
        with self._cond:
            if self._exit_owner is not None or self._state is State.EXITING:
                if self._exit_owner != me:
                    self._wait_exit_finished()
                return
            if self._hand_exit_to_stopper(me):
                return
            self._exit_owner = me
        failures: list[BaseException] = []
        try:
            if stop:
                self._do_stop()
        except ChannelFailures as exc:
            failures.extend(exc.get_instances())
        with self._cond:
            # Another thread began a stop between our check and our own stop.
            if self._hand_exit_to_stopper(me):
                return
        self._run_exit_listeners(failures)

    def _hand_exit_to_stopper(self, me: int) -> bool:
        """Under the lock: if a stop is running, its stopper finishes the exit.

        Waits for that, unless this thread is the stopper (a stop listener
        called exit()).  Returns True if the exit was handed over.
        """
        if self._state is not State.STOPPING:
            return False
        self._exit_pending = True
        self._exit_owner = self._stopper
        if self._stopper != me:
            self._wait_exit_finished()
        return True

    def _wait_exit_finished(self) -> None:
        """Under the lock: wait until the exit listeners ran."""
        while not self._exit_done:
            self._cond.wait()

    def _run_exit_listeners(self, failures: list[BaseException]) -> None:
        if not self._transition(State.EXITING):
            return
        try:
            self.publish("exit")
        except ChannelFailures as exc:
            failures.extend(exc.get_instances())
        finally:
            with self._cond:
                self._exit_done = True
                self._cond.notify_all()
        self.log("Bus EXITED")
        if failures:
            raise ChannelFailures(channel="exit", exceptions=failures)

    def _do_graceful(self) -> None:
        self.log("Bus graceful")
        self.publish("graceful")

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
        blocker = threading.get_ident() in self._blockers
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
                    # No limit: a state change, deferred work or a new
                    # subscription (which may start the ticking) notifies us.
                    self._cond.wait(max(0.0, min(limits) - now) if limits else None)
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
            if self._blockers:
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
        me = threading.get_ident()
        with self._cond:
            self._blockers[me] += 1
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
                self._blockers[me] -= 1
                if not self._blockers[me]:
                    del self._blockers[me]
        self._run_deferred()
        self.log("Waiting for child threads to terminate...")
        self._join_threads(timeout)
        if self.execv:
            self._do_execv()

    def _wait_exit_done(self, interval: float) -> None:
        """Wait until the exit listeners ran (exit() may run in another thread)."""
        while True:
            with self._cond:
                if self._exit_done:
                    return
                if not self._deferred:
                    self._cond.wait(interval)
            self._run_deferred()

    @staticmethod
    def _join_threads(timeout: float | None) -> None:
        current = threading.current_thread()
        for thread in threading.enumerate():
            if (
                thread is current
                or thread.daemon
                or thread is threading.main_thread()
                or isinstance(thread, threading._DummyThread)
            ):
                continue
            thread.join(timeout)

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

    # -- exit and re-exec ----------------------------------------------

    def _register_atexit(self) -> None:
        with self._cond:
            if self._atexit_registered:
                return
            self._atexit_registered = True
        atexit.register(self._clean_exit)

    def _clean_exit(self) -> None:
        """At interpreter exit, exit a bus that was left running."""
        if self._state is not State.EXITING:
            self.log("busd.Bus was not exited before the interpreter ended; exiting now", level=30)
            self._do_exit()

    def _do_execv(self) -> None:
        """Replace this process with a fresh run of the same command line."""
        args = true_argv()
        self.log(f"Re-spawning {' '.join(args)}")
        extend_pythonpath(os.environ)
        if self.max_cloexec_files:
            set_cloexec(self.max_cloexec_files)
        os.chdir(_STARTUP_CWD)
        os.execv(sys.executable, args)

    def statistics(self) -> dict[str, Any]:
        """The state and the number of listeners per channel."""
        with self._lock:
            counts = {ch: len(cbs) for ch, cbs in self.listeners.items()}
        return {"state": self._state.name, "listeners": counts}


def true_argv() -> list[str]:
    """The command line that started this interpreter, flags and ``-m`` included."""
    orig = list(getattr(sys, "orig_argv", []) or [])
    if not orig:
        return [sys.executable, *sys.argv]
    return [sys.executable, *orig[1:]]


def extend_pythonpath(env: dict[str, str] | os._Environ[str]) -> None:
    """Keep the startup directory importable after re-exec under ``-m`` or ``-c``.

    The interpreter puts the working directory first on ``sys.path`` for
    ``-m`` and ``-c``; after ``chdir`` and ``execv`` that must still hold.
    """
    orig = getattr(sys, "orig_argv", [])
    if not any(arg in ("-m", "-c") for arg in orig[1:]):
        return
    existing = env.get("PYTHONPATH", "")
    parts = existing.split(os.pathsep) if existing else []
    if _STARTUP_CWD not in parts:
        env["PYTHONPATH"] = os.pathsep.join([_STARTUP_CWD, *parts])


def set_cloexec(max_fd: int) -> None:
    """Mark every descriptor above stderr close-on-exec."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, max_fd))
    for fd in fds:
        if fd < 3 or fd >= max_fd:
            continue
        try:
            os.set_inheritable(fd, False)
        except OSError:
            continue
