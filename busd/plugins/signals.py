"""Operating-system signals turned into bus actions, outside the signal handler.

The Python-level handler only records the signal and wakes a thread; bus
code never runs inside it (a handler interrupts the main thread anywhere,
possibly while it holds a lock the bus needs)::

    kernel --> C handler (any thread): write signum (set_wakeup_fd) --> pipe
                                                                          |
    dispatcher thread (daemon, owned by the plugin): read pipe <---------+
        |  bus.defer(handle_signal(signum))
        v
    the thread blocked in bus.block() (normally main), or the dispatcher
    itself when nobody blocks: log "Caught signal SIGTERM.", publish "SIGTERM"

The signal number reaches the dispatcher through ``signal.set_wakeup_fd``,
written by CPython's C-level handler in whichever thread the kernel chose.
The Python-level handler (``_record``) runs only in the main thread, and only
once that thread runs bytecode again: a main thread asleep in a lock while
another thread took the signal would hold it indefinitely (signals "lost"
until the next one).  Without the wakeup fd (outside the main thread at
fork time), ``_record`` queues the signal and writes a byte, as before.

As in CherryPy, each handled signal is a bus channel named after it
(``SIGTERM``, ``SIGHUP``, ...) and its actions are listeners of that channel.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import signal as _signal
import sys
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeAlias

from busd.core.bus import Bus
from busd.core.stats import Stats

__all__ = ["SignalHandler"]

_Handler: TypeAlias = "Callable[[int, FrameType | None], Any] | int | _signal.Handlers | None"
_Action: TypeAlias = "Callable[[], object]"


@dataclass(frozen=True, eq=False)
class SignalHandlerStats(Stats):
    """The handled signals, how often each was caught, and whether the thread runs."""

    handled: list[str]
    caught: dict[str, int]
    dispatcher_alive: bool


class _Dispatcher(threading.Thread):
    """The plugin's thread; marked fork-safe because a fork restarts it."""

    fork_safe = True


class SignalHandler:
    """Map signals to bus actions (CherryPy's ``SignalHandler``, deferred).

    Defaults: SIGTERM exits the bus; SIGHUP reloads it (``graceful``), or
    restarts it when the process is daemonized; SIGUSR1 reloads it.
    ``handlers`` maps signal names or numbers to callables taking no
    argument, replacing or adding to the defaults; a value of ``None`` leaves
    that signal alone.  ``daemonized`` overrides the detection CherryPy uses
    (parent is init and stdin is not a terminal).
    """

    #: How long ``unsubscribe`` waits for the dispatcher thread to end.
    join_timeout = 5.0

    def __init__(
        self,
        bus: Bus,
        handlers: Mapping[str | int, _Action | None] | None = None,
        daemonized: bool | None = None,
    ) -> None:
        self.bus = bus
        self.daemonized = daemonized
        #: Signal numbers to their names, for every signal of this platform.
        self.signals: dict[int, str] = {int(sig): sig.name for sig in _signal.Signals}
        #: Signal names to the action each one triggers (``None``: not handled).
        self.handlers: dict[str, _Action | None] = {
            "SIGTERM": bus.exit,
            "SIGHUP": self.handle_SIGHUP,
            "SIGUSR1": bus.graceful,
        }
        for sig, action in (handlers or {}).items():
            self.handlers[self._resolve(sig)[1]] = action
        self._previous: dict[int, _Handler] = {}
        self._listeners: list[tuple[str, _Action]] = []
        self._pending: collections.deque[int] = collections.deque()
        self._caught: collections.Counter[str] = collections.Counter()
        self._wfd = -1
        self._rfd = -1
        #: The wakeup fd found before ours (restored on stop); None: ours is not set.
        self._prev_wakeup: int | None = None
        self._thread: _Dispatcher | None = None
        self._fork_hook_registered = False

    # -- installing and restoring --------------------------------------

    def subscribe(self) -> None:
        """Install the handlers and start the dispatcher thread (main thread only).

        A signal this platform cannot handle is logged and skipped.
        """
        self._require_main_thread("subscribe")
        for sig, action in list(self.handlers.items()):
            if action is None:
                continue
            try:
                self.set_handler(sig, action)
            except ValueError as exc:
                self.bus.log(f"Not handling {sig}: {exc}", level=30)

    def unsubscribe(self) -> None:
        """Restore exactly the handlers found by ``subscribe`` and stop the thread."""
        self._require_main_thread("unsubscribe")
        for signum, previous in list(self._previous.items()):
            self._restore(signum, previous)
        self._previous.clear()
        for channel, listener in self._listeners:
            self.bus.unsubscribe(channel, listener)
        self._listeners.clear()
        self._stop_dispatcher()

    def set_handler(self, signal: str | int, listener: _Action | None = None) -> None:
        """Handle ``signal`` (a name or a number); subscribe ``listener`` to its channel.

        Raises ValueError if this platform has no such signal or it cannot be
        caught, RuntimeError outside the main thread.
        """
        signum, signame = self._resolve(signal)
        self._require_main_thread("set_handler")
        self._start_dispatcher()
        try:
            previous = _signal.signal(signum, self._record)
        except OSError as exc:
            raise ValueError(f"cannot catch {signame}: {exc}") from exc
        # Keep the first one: after a second subscribe, the current handler is ours.
        self._previous.setdefault(signum, previous)
        if listener is not None:
            self.bus.log(f"Handling {signame}.", level=logging.DEBUG)
            self.bus.subscribe(signame, listener)
            if (signame, listener) not in self._listeners:
                self._listeners.append((signame, listener))

    def _restore(self, signum: int, previous: _Handler) -> None:
        signame = self.signals.get(signum, str(signum))
        if previous is None:
            # Installed outside Python: SIG_DFL is the closest we can restore.
            self.bus.log(f"Restoring {signame} handler to SIG_DFL.", level=logging.DEBUG)
            previous = _signal.SIG_DFL
        else:
            self.bus.log(f"Restoring {signame} handler {previous!r}.", level=logging.DEBUG)
        try:
            ours = _signal.signal(signum, previous)
        except (OSError, ValueError):
            self.bus.log(
                f"Unable to restore {signame} handler {previous!r}.", level=40, traceback=True
            )
            return
        if ours != self._record:
            self.bus.log(
                f"Restored old {signame} handler {previous!r}, but our handler was not registered.",
                level=30,
            )

    def _resolve(self, signal: str | int) -> tuple[int, str]:
        if isinstance(signal, str):
            signum = getattr(_signal, signal, None)
            if (
                not signal.startswith("SIG")
                or signal.startswith("SIG_")
                or not isinstance(signum, int)
            ):
                raise ValueError(f"No such signal: {signal!r}")
            # The canonical name (SIGCHLD for SIGCLD): the one handle_signal publishes.
            return int(signum), self.signals.get(int(signum), signal)
        try:
            return int(signal), self.signals[int(signal)]
        except KeyError:
            raise ValueError(f"No such signal: {signal!r}") from None

    @staticmethod
    def _require_main_thread(what: str) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                f"SignalHandler.{what}() must be called from the main thread: "
                "Python only installs signal handlers there"
            )

    # -- the signal handler and the dispatcher thread ------------------

    def _record(self, signum: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of the main thread: no locks, no bus.
        if self._prev_wakeup is not None:
            return  # the C handler has written signum to the wakeup fd already
        self._pending.append(signum)
        wfd = self._wfd
        if wfd < 0:
            return
        try:
            os.write(wfd, b"\0")
        except OSError:
            # A full pipe already holds a wake-up; the deque holds the signal.
            return

    def _start_dispatcher(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        if not self._fork_hook_registered:
            os.register_at_fork(after_in_child=_after_fork_hook(weakref.ref(self)))
            self._fork_hook_registered = True
        self._rfd, wfd = os.pipe()
        # Non-blocking: the handler must never block the main thread.
        os.set_blocking(wfd, False)
        self._wfd = wfd
        if threading.current_thread() is threading.main_thread():
            self._prev_wakeup = _signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        self._thread = _Dispatcher(
            target=self._dispatch, args=(self._rfd,), name="busd SignalHandler", daemon=True
        )
        self._thread.start()

    def _stop_dispatcher(self) -> None:
        if self._prev_wakeup is not None:
            _signal.set_wakeup_fd(self._prev_wakeup)
            self._prev_wakeup = None
        wfd, self._wfd = self._wfd, -1
        if wfd >= 0:
            os.close(wfd)  # the reader sees end-of-file and returns
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.join_timeout)
            if thread.is_alive():
                # Closing a descriptor it still reads could hand it a reused one.
                self.bus.log(f"{thread.name} did not end within {self.join_timeout}s", level=30)
                return
        rfd, self._rfd = self._rfd, -1
        if rfd >= 0:
            os.close(rfd)

    def _dispatch(self, rfd: int) -> None:
        while True:
            try:
                data = os.read(rfd, 512)
            except OSError:
                return
            if not data:
                return
            if self._prev_wakeup is not None:
                # Every handled signal writes here; keep those that are ours.
                ours = [
                    n for n in data if n in self._previous and _signal.getsignal(n) == self._record
                ]
                self._pending.extend(ours)
            while self._pending:
                signum = self._pending.popleft()
                self._caught[self.signals.get(signum, str(signum))] += 1
                self.bus.defer(functools.partial(self._act, signum))

    def _act(self, signum: int) -> None:
        try:
            self.handle_signal(signum)
        except Exception:  # noqa: BLE001 - a failed action must not end the dispatcher
            self.bus.log(f"Error handling signal {signum}", level=40, traceback=True)

    def _after_fork(self) -> None:
        """In a forked child: the thread is gone and the pipe is the parent's."""
        if self._thread is None:
            return
        for fd in (self._rfd, self._wfd):
            if fd >= 0:
                os.close(fd)
        self._rfd = self._wfd = -1
        if self._prev_wakeup is not None:
            _signal.set_wakeup_fd(-1)  # the parent's pipe, closed just now
            self._prev_wakeup = None
        self._thread = None
        self._pending.clear()
        self._start_dispatcher()

    # -- actions --------------------------------------------------------

    def handle_signal(self, signum: int) -> None:
        """Act on ``signum`` now, in this thread: log it, publish its channel."""
        signame = self.signals.get(signum, str(signum))
        self.bus.log(f"Caught signal {signame}.")
        self.bus.publish(signame)

    def handle_SIGHUP(self) -> None:
        """Restart the bus if daemonized, else reload it (``graceful``)."""
        if self._is_daemonized():
            self.bus.log("SIGHUP caught while daemonized. Restarting.")
            self.bus.restart()
        else:
            self.bus.log("SIGHUP caught but not daemonized. Reloading.")
            self.bus.graceful()

    def _is_daemonized(self) -> bool:
        if self.daemonized is not None:
            return self.daemonized
        return os.getppid() == 1 and not _stdin_is_tty()

    def statistics(self) -> SignalHandlerStats:
        """The handled signals, how often each was caught, and the thread's state."""
        return SignalHandlerStats(
            handled=sorted(self.signals[signum] for signum in self._previous),
            caught=dict(self._caught),
            dispatcher_alive=self._thread is not None and self._thread.is_alive(),
        )

    def __repr__(self) -> str:
        return f"<SignalHandler on {self.bus!r}>"


def _stdin_is_tty() -> bool:
    try:
        return os.isatty(sys.stdin.fileno())
    except (AttributeError, OSError, ValueError):
        # No stdin, or a closed or fake one: not a terminal.
        return False


def _after_fork_hook(ref: weakref.ref[SignalHandler]) -> Callable[[], None]:
    # A weak reference: a fork hook cannot be unregistered and must not keep
    # the plugin alive.
    def hook() -> None:
        handler = ref()
        if handler is not None:
            handler._after_fork()

    return hook
