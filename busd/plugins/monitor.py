"""Periodic work in a thread: ``BackgroundTask`` and the ``Monitor`` plugin.

Unlike CherryPy's ``BackgroundTask``, which stops for good on the first
exception, ours logs the exception (through the bus, with its traceback)
and keeps running: a monitor that silently dies is worse than one that
reports the same error every interval.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from busd.core.bus import Bus
from busd.core.stats import Stats
from busd.plugins.base import SimplePlugin

__all__ = ["BackgroundTask", "Monitor", "MonitorIdle", "TaskStats"]


@dataclass(frozen=True, eq=False)
class TaskStats(Stats):
    """A background task's calls so far."""

    #: The thread's name.
    name: str
    #: Seconds between calls.
    interval: float
    #: Calls made so far, and how many of them raised.
    calls: int
    errors: int
    #: True from ``start()`` until the thread ends or is cancelled.
    running: bool


@dataclass(frozen=True, eq=False)
class MonitorIdle(Stats):
    """A monitor with no thread (not started, stopped, or ``frequency <= 0``)."""

    running: bool = False


class BackgroundTask(threading.Thread):
    """A daemon thread calling ``function(*args, **kwargs)`` every ``interval`` seconds.

    The first call happens one interval after ``start()``.  ``cancel()``
    wakes the thread at once and ends it after the current call.
    Exceptions are logged on ``bus`` (on stderr without one) and the task
    goes on.
    """

    def __init__(
        self,
        interval: float,
        function: Callable[..., object],
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        bus: Bus | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.function = function
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.bus = bus
        #: Calls made so far, and how many of them raised.
        self.calls = 0
        self.errors = 0
        self._cancelled = threading.Event()

    @property
    def running(self) -> bool:
        """True from ``start()`` until the thread ends or is cancelled."""
        return self.is_alive() and not self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop after the current call, if any; never waits."""
        self._cancelled.set()

    def run(self) -> None:
        """Call the function every interval until cancelled."""
        while not self._cancelled.wait(self.interval):
            self._call()

    def _call(self) -> None:
        self.calls += 1
        try:
            self.function(*self.args, **self.kwargs)
        except Exception:  # noqa: BLE001 - the task's boundary: log and keep running
            self.errors += 1
            self._report()

    def _report(self) -> None:
        msg = f"Error in background task {self.name!r} (it keeps running)"
        if self.bus is not None:
            self.bus.log(msg, level=40, traceback=True)
        else:
            sys.stderr.write(f"{msg}\n{traceback.format_exc()}")

    def statistics(self) -> TaskStats:
        """Calls, errors, the interval and whether the task still runs."""
        return TaskStats(
            name=self.name,
            interval=self.interval,
            calls=self.calls,
            errors=self.errors,
            running=self.running,
        )


class Monitor(SimplePlugin):
    """Run ``callback`` every ``frequency`` seconds while the bus is started.

    ``start`` starts the thread (not when ``frequency <= 0``), ``stop``
    cancels and joins it (bounded by ``join_timeout``), ``graceful`` does both.
    """

    #: How long ``stop`` waits for a callback in progress to return.
    join_timeout = 5.0

    def __init__(
        self,
        bus: Bus,
        callback: Callable[[], object],
        frequency: float = 60,
        name: str | None = None,
    ) -> None:
        super().__init__(bus)
        self.callback = callback
        self.frequency = frequency
        self.name = name
        self.thread: BackgroundTask | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the callback's thread, unless it already runs."""
        if self.frequency <= 0:
            return
        threadname = self.name or type(self).__name__
        with self._lock:
            if self.thread is not None and self.thread.is_alive():
                already = True
            else:
                already = False
                self.thread = BackgroundTask(self.frequency, self.callback, bus=self.bus)
                self.thread.name = threadname
                self.thread.start()
        if already:
            self.bus.log(f"Monitor thread {threadname!r} already started.")
        else:
            self.bus.log(f"Started monitor thread {threadname!r}.")

    start.priority = 70  # type: ignore[attr-defined]

    def stop(self) -> None:
        """Cancel the callback's thread and wait (bounded) for it to end."""
        with self._lock:
            thread, self.thread = self.thread, None
        if thread is None:
            self.bus.log(f"No thread running for {self.name or type(self).__name__}.")
            return
        thread.cancel()
        if thread is threading.current_thread():
            # Stopped from its own callback: it ends when the callback returns.
            return
        thread.join(self.join_timeout)
        if thread.is_alive():
            self.bus.log(
                f"Thread {thread.name!r} still running {self.join_timeout}s "
                "after cancel; its callback is stuck",
                level=30,
            )
        else:
            self.bus.log(f"Stopped thread {thread.name!r}.")

    def graceful(self) -> None:
        """Stop the callback's thread and start a new one."""
        self.stop()
        self.start()

    def statistics(self) -> TaskStats | MonitorIdle:
        """The current thread's statistics, or ``MonitorIdle()`` (``{"running": False}``)."""
        thread = self.thread
        if thread is None:
            return MonitorIdle()
        return thread.statistics()
