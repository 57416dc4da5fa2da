"""How a client's link tells a live master from a lost one: its timeouts and a pidfd.

Any frame read is a sign of life; a master is lost after ``master_timeout``
seconds without one (``BUSD_MASTER_TIMEOUT``, else 30 s, or the master's own
heartbeat x liveness with :data:`FOLLOW_HEARTBEAT`), or at once when its
process ends: a master in this pid namespace is watched through a pidfd,
which the link thread polls beside its sockets (:class:`MasterWatch`).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import zmq

#: A PONG goes out unasked when none went for this many pong intervals.
PONG_SLACK = 1.5
#: Seconds a client waits for a silent master by default (BUSD_MASTER_TIMEOUT).
DEFAULT_MASTER_TIMEOUT = 30.0
#: A master_timeout of this means: the master's heartbeat x liveness, from its
#: welcome (a pool joined over the network follows its master that closely).
#: Such a client also answers every heartbeat, for the master counts a joined
#: host lost after the same heartbeat x liveness of silence: one number, both sides.
FOLLOW_HEARTBEAT = 0.0


def master_timeout_from_env(default: float = DEFAULT_MASTER_TIMEOUT) -> float:
    """``BUSD_MASTER_TIMEOUT`` (seconds, > 0), else ``default``; ValueError if malformed."""
    text = os.environ.get("BUSD_MASTER_TIMEOUT", "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"BUSD_MASTER_TIMEOUT must be a number of seconds > 0, not {text!r}")
    return value


class MasterWatch:
    """A pidfd on the master's process, registered with the link thread's poller."""

    def __init__(self, poller: zmq.Poller, pidns: str) -> None:
        self._poller = poller
        self._pidns = pidns
        #: The pidfd polled (None: the master is not watched).
        self.fd: int | None = None

    def watch(self, snap: dict[str, Any]) -> bool:
        """Watch the master a welcome ``snap`` names, if it shares this pid namespace.

        False if its process is already gone.
        """
        pid = snap.get("pid")
        self.unwatch()
        if type(pid) is not int or pid <= 0 or not self._pidns or snap.get("pidns") != self._pidns:
            return True
        try:
            self.fd = os.pidfd_open(pid)
        except OSError:
            return False
        self._poller.register(self.fd, zmq.POLLIN)
        return True

    def unwatch(self) -> None:
        """Stop watching (and close the pidfd)."""
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._poller.unregister(fd)
            os.close(fd)


__all__ = [
    "DEFAULT_MASTER_TIMEOUT",
    "FOLLOW_HEARTBEAT",
    "PONG_SLACK",
    "MasterWatch",
    "master_timeout_from_env",
]
