"""The pidfds through which the hub sees a local client's process end.

A client that shares the master's pid namespace says its pid in HELLO; the
hub opens a pidfd for it and polls it beside its sockets, so a client whose
process ended is dropped at once rather than after missed heartbeats::

    HELLO {pid, pidns} --watch()--> pidfd --poller (hub thread)--> ended(ready)
                                                                  -> [identity...]

Only the hub thread uses a PidWatch.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import zmq


class PidWatch:
    """Pidfds of clients' processes, registered on the hub's poller."""

    def __init__(self, poller: zmq.Poller, own_pid: int, pidns: str) -> None:
        self._poller = poller
        self._own_pid = own_pid
        self._pidns = pidns
        self._fds: dict[int, bytes] = {}

    def watch(self, identity: bytes, body: dict[str, Any]) -> bool:
        """Watch a client's process when it shares our pid namespace; True: it is gone already."""
        pid = body.get("pid")
        if (
            type(pid) is not int
            or pid <= 0
            or not self._pidns
            or body.get("pidns") != self._pidns
            or identity in self._fds.values()
            or pid == self._own_pid
        ):
            return False
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return True
        except OSError:  # no pidfds here (EMFILE, ENOSYS): heartbeats alone tell
            return False
        self._fds[fd] = identity
        self._poller.register(fd, zmq.POLLIN)
        return False

    def ended(self, ready: dict[Any, int]) -> list[bytes]:
        """The clients whose processes ended (their pidfds are in ``ready``), forgotten."""
        gone = []
        for fd in [fd for fd in self._fds if fd in ready]:
            gone.append(self._fds[fd])
            self._forget(fd)
        return gone

    def forget_client(self, identity: bytes) -> None:
        """Stop watching the process of the client at ``identity``."""
        for fd, who in list(self._fds.items()):
            if who == identity:
                self._forget(fd)

    def close(self) -> None:
        """Close every pidfd."""
        for fd in list(self._fds):
            self._forget(fd)

    def _forget(self, fd: int) -> None:
        self._fds.pop(fd, None)
        with contextlib.suppress(KeyError, ValueError):
            self._poller.unregister(fd)
        os.close(fd)
