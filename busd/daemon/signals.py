"""busd's signals: each one goes onto the master's command queue in one hop.

::

    kernel --> C handler (any thread) --> wakeup pipe --> main thread, in wait_for_exit
               |                                              (select on the pipe)
               +--> Python handler (main thread, between two bytecodes):
                    count it; master.call_soon(act)  (SimpleQueue.put: reentrant,
                    safe in a signal handler)
                                    |
                                    v
    [busd-commands]: log "Caught signal SIGTERM.", publish the channel of
                     its name (local listeners), run its command as busctl would
    [busd-commands], exit listener --> wakeup pipe: the main thread sees EXITING

The pipe only wakes the main thread so that Python runs its handler at once,
whichever thread the kernel chose for the signal; the signal itself goes from
the handler to the command queue directly.

The handler takes no lock and runs no bus code: it counts the signal (in a
map made whole beforehand, so the count never resizes it) and queues one
call.  Everything else happens on the command thread, in order with every
other command, as with gunicorn's and uvicorn's handlers.  Each command is
the one busctl would send: SIGTERM ``exit``, SIGHUP ``graceful``, SIGUSR1
``reopen-logs`` with ``--log-dir`` (else ``graceful``), SIGTTIN and SIGTTOU
``scale +1`` and ``-1``.  SIGINT exits too; a second SIGINT kills every
worker at once and ends busd (status 70), from the handler itself: the
command thread may be the one that is stuck.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from busd.core.bus import State
from busd.core.stats import Stats
from busd.master.bus import MasterBus
from busd.pool.listen import remove_sockets
from busd.pool.pools import Pools

EX_SOFTWARE = 70
#: Longest sleep of the main thread between two looks at the state: a safety net only
#: (the exit and every signal wake it at once), long so that an idle busd sleeps.
WAKE_BOUND = 60.0
#: Each signal is published on a channel of its name: keep those local.
SIGNAL_CHANNELS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGTTIN", "SIGTTOU")


@dataclass(frozen=True, eq=False)
class SignalStats(Stats):
    """The signals handled, and how often each was caught."""

    handled: list[str]
    caught: dict[str, int]


@dataclass(frozen=True)
class Command:
    """The command a signal sends (``cmd`` and its arguments, as busctl sends them)."""

    cmd: str
    args: tuple[tuple[str, Any], ...] = ()


class MasterSignals:
    """busd's signal handlers, installed by :meth:`install` (main thread: Python's rule)."""

    def __init__(self, master: MasterBus, pool: Pools, reopen_logs: bool = False) -> None:
        self.master = master
        self.pool = pool
        self.commands: dict[str, Command] = {
            "SIGTERM": Command("exit"),
            "SIGINT": Command("exit"),
            "SIGHUP": Command("graceful"),
            "SIGUSR1": Command("reopen-logs" if reopen_logs else "graceful"),
            "SIGTTIN": Command("scale", (("n", "+1"),)),
            "SIGTTOU": Command("scale", (("n", "-1"),)),
        }
        # Whole before any signal comes: the handler only changes values.
        self._caught: dict[str, int] = dict.fromkeys(self.commands, 0)
        self._previous: dict[int, Any] = {}
        self._rfd = self._wfd = -1
        self._previous_wakeup = -1

    def install(self) -> None:
        """Handle each signal (ValueError outside the main thread, as signal.signal)."""
        self._rfd, self._wfd = os.pipe()
        for fd in (self._rfd, self._wfd):
            os.set_blocking(fd, False)
        self._previous_wakeup = signal.set_wakeup_fd(self._wfd, warn_on_full_buffer=False)
        self.master.subscribe("exit", self._wake, priority=100)
        for name in self.commands:
            signum = signal.Signals[name]
            self._previous[signum] = signal.signal(signum, self._handle)
        self.master.call_soon(self._say_handled)  # where every listener of the master runs

    def _say_handled(self) -> None:
        for name in self.commands:
            self.master.log(f"Handling {name}.", level=logging.DEBUG)

    def restore(self) -> None:
        """Put back the handlers and the wakeup fd found by :meth:`install`."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        if self._wfd >= 0:
            signal.set_wakeup_fd(self._previous_wakeup)
            for fd in (self._rfd, self._wfd):
                os.close(fd)
            self._rfd = self._wfd = -1

    def wait_for_exit(self, bound: float = WAKE_BOUND) -> None:
        """Sleep in the main thread until the master is EXITING; signals are handled
        at once meanwhile.  Each sleep is bounded by ``bound`` seconds (a safety
        net: the exit and every signal wake it)."""
        while self.master.state is not State.EXITING:
            ready, _, _ = select.select([self._rfd], [], [], bound)
            if ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._rfd, 4096)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # a full pipe is awake already
            os.write(self._wfd, b"\0")

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Between two bytecodes of the main thread: no lock, no bus code.
        name = signal.Signals(signum).name
        self._caught[name] += 1
        if name == "SIGINT" and self._caught[name] > 1:
            self._force_exit()
        self.master.call_soon(lambda: self._act(name))

    def _act(self, name: str) -> None:
        """On the command thread: log, publish the signal's channel, run its command."""
        self.master.log(f"Caught signal {name}.")
        if name == "SIGINT":
            self.master.log("interrupted: exiting (interrupt again to force)")
        command = self.commands[name]
        try:
            self.master.publish(name)
            self.master.run_command(command.cmd, **dict(command.args))
        except Exception:  # noqa: BLE001 - a failed command must not end the command thread
            self.master.log(f"Error handling signal {name}", level=40, traceback=True)

    def _force_exit(self) -> None:
        """The second interrupt: kill every worker now, remove the sockets, end busd."""
        os.write(2, b"busd: interrupted twice: killing every worker now\n")
        try:
            self.pool.kill_all()
            remove_sockets(Path(self.master.runtime_dir), [])  # os._exit skips the cleanup
        finally:
            os._exit(EX_SOFTWARE)  # a process main may end the process; the library never does

    def statistics(self) -> SignalStats:
        """The handled signals and the count of each caught."""
        return SignalStats(
            handled=sorted(self.commands),
            caught={name: n for name, n in self._caught.items() if n},
        )


def install_signals(master: MasterBus, pool: Pools, reopen_logs: bool = False) -> MasterSignals:
    """Install busd's signal handlers and show them in ``status``."""
    signals = MasterSignals(master, pool, reopen_logs)
    signals.install()
    master.add_status_hook(lambda status: status.update(signals=signals.statistics().as_dict()))
    return signals


__all__ = ["SIGNAL_CHANNELS", "MasterSignals", "install_signals"]
