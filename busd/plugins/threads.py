"""Per-thread setup and teardown for threads the application manages.

A thread publishes ``acquire_thread`` when it starts serving (its first
time only, ``start_thread`` listeners then run with its index) and
``release_thread`` when it is done (``stop_thread`` listeners run).  If the
threads belong to code you do not control, publish only ``acquire_thread``:
stopping the bus releases every thread still known.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

from busd.core.bus import Bus
from busd.core.errors import ChannelFailures
from busd.core.stats import Stats
from busd.plugins.base import SimplePlugin

__all__ = ["ThreadManager", "ThreadStats"]


@dataclass(frozen=True, eq=False)
class ThreadStats(Stats):
    """The threads a :class:`ThreadManager` holds."""

    #: The indices of the threads currently acquired, in order.
    threads: list[int]


CHANNELS = ("acquire_thread", "start_thread", "release_thread", "stop_thread")


class ThreadManager(SimplePlugin):
    """Give each thread that publishes ``acquire_thread`` an index (1, 2, ...).

    Indices are never reused, so a ``stop_thread`` listener cannot confuse a
    released thread with a newer one.  Threads are told apart by their
    ``Thread`` object, not their ident, which a new thread may inherit from
    one that ended without releasing.  Safe to use from any thread.
    """

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        #: Each acquired thread to the index it was given.
        self.threads: dict[threading.Thread, int] = {}
        self._indices = itertools.count(1)
        self._lock = threading.Lock()
        for channel in CHANNELS:
            bus.listeners.setdefault(channel, set())

    def acquire_thread(self) -> None:
        """Register the calling thread; its first time, publish ``start_thread``."""
        thread = threading.current_thread()
        with self._lock:
            if thread in self.threads:
                return
            index = self.threads[thread] = next(self._indices)
        # Outside the lock: a listener may acquire or release other threads.
        self.bus.publish("start_thread", index)

    def release_thread(self) -> None:
        """Forget the calling thread and publish ``stop_thread`` with its index."""
        with self._lock:
            index = self.threads.pop(threading.current_thread(), None)
        if index is not None:
            self.bus.publish("stop_thread", index)

    def stop(self) -> None:
        """Release every known thread, publishing ``stop_thread`` for each."""
        with self._lock:
            indices = sorted(self.threads.values())
            self.threads.clear()
        failures: list[BaseException] = []
        for index in indices:
            try:
                self.bus.publish("stop_thread", index)
            except ChannelFailures as exc:
                # Every thread is still released; the failures are raised together.
                failures.extend(exc.get_instances())
        if failures:
            raise ChannelFailures(channel="stop_thread", exceptions=failures)

    graceful = stop

    def statistics(self) -> ThreadStats:
        """The indices of the threads currently acquired."""
        with self._lock:
            return ThreadStats(threads=sorted(self.threads.values()))
