"""Tell systemd (``Type=notify``) about the bus's lifecycle: sd_notify(3).

One datagram per notification, ``KEY=value`` lines, to the AF_UNIX socket
named by ``NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket)::

    start     (priority 100, after the others)  READY=1 (with wait_ready: from a
                                                thread, once wait_ready() returned)
    graceful  (priority 0, before the others)   RELOADING=1, MONOTONIC_USEC=<now>
    graceful  (priority 100, after the others)  READY=1 once wait_ready() returned
    exit      (priority 0, before the others)   STOPPING=1
    every WATCHDOG_USEC/2 from start to exit    WATCHDOG=1

Without ``NOTIFY_SOCKET`` every call is a no-op.  A failed send is logged
and never raised: systemd going away must not take the service down.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from busd.core.bus import Bus
from busd.core.stats import Stats
from busd.plugins.base import SimplePlugin
from busd.plugins.monitor import BackgroundTask

__all__ = ["SdNotify", "SdNotifyStats", "watchdog_interval"]


@dataclass(frozen=True, eq=False)
class SdNotifyStats(Stats):
    """What the sd_notify plugin sent to systemd."""

    #: ``NOTIFY_SOCKET``'s path (``@`` for an abstract one), or None outside systemd.
    socket: str | None
    #: Datagrams sent, and sends that failed.
    sent: int
    errors: int
    #: True while the watchdog thread pings.
    watchdog: bool


class SdNotify(SimplePlugin):
    """Send systemd readiness, reload, stop and watchdog notifications.

    ``socket_path`` defaults to ``$NOTIFY_SOCKET`` as it is when the plugin
    is made; the watchdog reads ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID`` when
    the bus starts.  ``environ`` replaces ``os.environ`` for all three (busd
    takes them out of its environment so that no worker inherits them).
    ``wait_ready``, if given, is called before each READY=1 and blocks
    until the service is really ready (busd: every worker STARTED),
    returning False if it gave up; READY=1 is sent either way, with a
    warning, because systemd would otherwise kill a service that works.
    On start that wait runs in a thread of its own, since the workers only
    start once the bus is STARTED.
    """

    def __init__(
        self,
        bus: Bus,
        socket_path: str | None = None,
        wait_ready: Callable[[], bool] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(bus)
        self.environ = environ
        env: Mapping[str, str] = os.environ if environ is None else environ
        self.socket_path = socket_path or env.get("NOTIFY_SOCKET") or None
        self.wait_ready = wait_ready
        #: Datagrams sent, and sends that failed.
        self.sent = 0
        self.errors = 0
        self._watchdog: BackgroundTask | None = None

    @property
    def enabled(self) -> bool:
        """Whether there is a socket to notify."""
        return self.socket_path is not None

    def subscribe(self) -> None:
        """Listen on start, graceful (before and after the others) and exit."""
        for channel, listener, priority in self._wiring():
            self.bus.subscribe(channel, listener, priority)

    def unsubscribe(self) -> None:
        """Stop listening, and stop the watchdog."""
        for channel, listener, _ in self._wiring():
            self.bus.unsubscribe(channel, listener)
        self._stop_watchdog()

    def _wiring(self) -> list[tuple[str, Any, int]]:
        return [
            ("start", self._on_start, 100),
            ("graceful", self.reloading, 0),
            ("graceful", self._on_reloaded, 100),
            # Not on a plain stop: systemd takes STOPPING=1 for the service
            # going away, and kills it after TimeoutStopSec if it stays.
            ("exit", self.stopping, 0),
            ("exit", self._stop_watchdog, 100),
        ]

    # -- messages -------------------------------------------------------

    def notify(self, **fields: object) -> bool:
        """Send ``KEY=value`` lines; True if sent, False if inert or failed.

        ``True``/``False`` become 1/0; newlines in values become spaces.
        """
        lines = []
        for key, value in fields.items():
            if isinstance(value, bool):
                value = int(value)
            lines.append(f"{key}={str(value).replace(chr(10), ' ')}")
        return self._send("\n".join(lines))

    def ready(self) -> bool:
        """READY=1: started, or done reloading."""
        return self.notify(READY=1)

    def reloading(self) -> bool:
        """RELOADING=1 with the CLOCK_MONOTONIC time systemd asks for."""
        return self.notify(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000)

    def stopping(self) -> bool:
        """STOPPING=1."""
        return self.notify(STOPPING=1)

    def watchdog(self) -> bool:
        """WATCHDOG=1: still alive."""
        return self.notify(WATCHDOG=1)

    def status(self, text: str) -> bool:
        """STATUS=text, shown by ``systemctl status``."""
        return self.notify(STATUS=text)

    def _send(self, message: str) -> bool:
        path = self.socket_path
        if path is None:
            return False
        address = "\0" + path[1:] if path.startswith("@") else path
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), address)
        except OSError as exc:
            self.errors += 1
            self.bus.log(f"sd_notify {message!r} to {path!r} failed: {exc}", level=30)
            return False
        self.sent += 1
        return True

    # -- lifecycle ------------------------------------------------------

    def _on_start(self) -> None:
        if self.enabled and self.wait_ready is not None:
            # A pool's workers run their start listeners once the bus is
            # STARTED, i.e. after this listener returns: wait elsewhere.
            threading.Thread(
                target=self._wait_then_ready, name="SdNotify ready", daemon=True
            ).start()
        else:
            self.ready()
        self._start_watchdog()

    def _on_reloaded(self) -> None:
        self._wait_then_ready()

    def _wait_then_ready(self) -> None:
        if self.enabled and self.wait_ready is not None and not self.wait_ready():
            self.bus.log("sd_notify: not every worker is ready; READY=1 all the same", level=30)
        self.ready()

    def _start_watchdog(self) -> None:
        interval = watchdog_interval(self.environ)
        if not self.enabled or interval is None:
            return
        if self._watchdog is not None and self._watchdog.is_alive():
            return
        self._watchdog = BackgroundTask(interval, self.watchdog, bus=self.bus)
        self._watchdog.name = "SdNotify watchdog"
        self._watchdog.start()
        self.bus.log(f"Sending WATCHDOG=1 every {interval:.3f}s.")

    def _stop_watchdog(self) -> None:
        task, self._watchdog = self._watchdog, None
        if task is not None:
            task.cancel()
            if task is not threading.current_thread():
                task.join(5.0)

    def statistics(self) -> SdNotifyStats:
        """The socket, datagrams sent and failed, and whether the watchdog runs."""
        return SdNotifyStats(
            socket=self.socket_path,
            sent=self.sent,
            errors=self.errors,
            watchdog=self._watchdog is not None and self._watchdog.is_alive(),
        )


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds, if the watchdog is meant for this process."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    return usec / 2 / 1_000_000
