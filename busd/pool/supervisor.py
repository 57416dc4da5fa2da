"""The pool's supervisor thread: it watches, and reports to the command thread.

::

    [busd-commands] (owns the Pool)                    [busd-pool] (owns the watch set)
      Pool._spawn      --Watch(pid, pidfd)-------+      select(wake pipe + pidfds,
      Pool._settle     --WakeAt(when)------------+-->          until the earliest WakeAt)
      Pool.close       --Stop--------------------+        a pidfd readable: forget it,
                         (one SimpleQueue + a byte          waitpid (or ask the spawner)
                          on the wake pipe)                 -> WorkerExited(pid, pidfd, code)
      registry state hooks (hub) -- a byte on the pipe --->  a wake-up or a deadline -> Tick
                                                           |
      Pool.handle(message)  <--- the pool's inbox <--------+  + master.call_soon(pool.drain)
      (reaps the slot, decides restarts, spawns, logs)

The supervisor never changes a pool: it only says what it saw, as frozen
dataclasses in the pool's inbox, and queues the pool's ``drain`` for the
command thread (``master.call_soon``).  A wait that runs on the command
thread and needs those messages (an exit waiting for its workers to go)
takes them from the inbox itself, so it never waits for its own thread.

A pidfd stays open until the command thread handled its worker's
:class:`WorkerExited` (it closes it then); the supervisor stops selecting on
it before it says so, so a number it watches is never another file's.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from busd.master.osthread import name_os_thread
from busd.pool.spawn import Spawner

# -- what the supervisor tells the command thread -----------------------------------


@dataclass(frozen=True)
class WorkerExited:
    """The process of ``pidfd`` ended; ``code`` as ``waitstatus_to_exitcode`` (None: unknown)."""

    pid: int
    pidfd: int
    code: int | None


@dataclass(frozen=True)
class Tick:
    """A deadline passed or a client changed: time to look at the workers."""


PoolMessage = WorkerExited | Tick

# -- what the command thread tells the supervisor -------------------------------------


@dataclass(frozen=True)
class Watch:
    """Watch this worker's pidfd until its process ends."""

    pid: int
    pidfd: int


@dataclass(frozen=True)
class WakeAt:
    """Send a Tick at monotonic time ``when`` (None: no deadline)."""

    when: float | None


@dataclass(frozen=True)
class Stop:
    """End the thread."""


Order = Watch | WakeAt | Stop

#: Wake-pipe bytes: an order to take, or a Tick wanted.
_ORDER, _TICK = b"o", b"t"


class Supervisor:
    """The ``busd-pool`` thread: pidfds, the pool's next deadline, wake-ups.

    ``report(message)`` is called on this thread for each thing seen; it
    must only queue it for the command thread.
    """

    def __init__(self, spawner: Spawner, report: Callable[[PoolMessage], None]) -> None:
        self._spawner = spawner
        self._report = report
        self._orders: queue.SimpleQueue[Order] = queue.SimpleQueue()
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._wfd, False)
        #: Set while a Tick is queued and not yet taken: wake-ups coalesce.
        self.tick_queued = threading.Event()
        self._thread = threading.Thread(target=self._run, name="busd-pool", daemon=True)
        # The thread's own state.
        self._watched: dict[int, int] = {}
        self._wake_at: float | None = None

    # -- any thread ----------------------------------------------------------------

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def order(self, order: Order) -> None:
        """Queue an order for the thread and wake it (no Tick for that alone)."""
        self._orders.put(order)
        self._poke(_ORDER)

    def wake(self) -> None:
        """Wake the thread for a Tick (a client's state changed)."""
        self._poke(_TICK)

    def _poke(self, byte: bytes) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # a full pipe is awake already
            os.write(self._wfd, byte)

    def close(self, timeout: float = 5.0) -> None:
        """End the thread (bounded) and release the wake pipe."""
        self.order(Stop())
        if self._thread.is_alive():
            self._thread.join(timeout)
        for fd in (self._rfd, self._wfd):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- the thread -------------------------------------------------------------------

    def _run(self) -> None:
        name_os_thread("busd-pool")
        while self._take_orders():
            timeout = None
            if self._wake_at is not None:
                timeout = max(0.0, self._wake_at - time.monotonic()) + 0.001
            ready, _, _ = select.select([self._rfd, *self._watched], [], [], timeout)
            woken = self._rfd in ready and _TICK in os.read(self._rfd, 4096)
            for fd in ready:
                if fd in self._watched:
                    self._exited(fd, self._watched.pop(fd))
            due = self._wake_at is not None and self._wake_at <= time.monotonic()
            if due:
                self._wake_at = None
            if (due or woken) and not self.tick_queued.is_set():
                self.tick_queued.set()
                self._report(Tick())

    def _take_orders(self) -> bool:
        while True:
            try:
                order = self._orders.get_nowait()
            except queue.Empty:
                return True
            if isinstance(order, Stop):
                return False
            if isinstance(order, Watch):
                self._watched[order.pidfd] = order.pid
            else:
                self._wake_at = order.when

    def _exited(self, pidfd: int, pid: int) -> None:
        code: int | None
        try:
            _, status = os.waitpid(pid, os.WNOHANG)
            code = os.waitstatus_to_exitcode(status) if status else 0
        except ChildProcessError:  # a fork server's child: the server reaps it
            code = self._spawner.exit_code(pid)
        self._report(WorkerExited(pid, pidfd, code))


__all__ = ["PoolMessage", "Supervisor", "Tick", "WakeAt", "Watch", "WorkerExited"]
