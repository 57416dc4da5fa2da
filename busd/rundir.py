"""Owning the runtime dir: one master per ipc endpoint, and endpoints that come back.

::

    Hub.__init__ --claim(endpoint)--> abstract unix socket "@busd-ipc-<uid>-<hash of path>"
                                       (bound and listening while the master lives)
    Hub._beat    --check()----------> socket file gone?  recreate the dir (0700),
                                       unbind + bind again, log a warning

The lock is an abstract-namespace unix socket named after the absolute path
of the ipc socket file.  It lives in the kernel, not in the file system: a
second master is refused even when someone removed the runtime dir and its
socket files (a lock file inside the dir would have gone with it).  It is
released when the socket is closed or the process dies, however it dies;
it is close-on-exec, so workers never hold it.  A master that finds it taken
asks the holder who it is (``SO_PEERCRED``) to name its pid.

The :class:`EndpointGuard` is owned by the hub thread: ``claim`` runs in the
hub's constructor, ``check`` on every heartbeat, ``close`` with the sockets.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from busd.endpoints import ensure_runtime_dir, secure_ipc
from busd.errors import AlreadyRunning

log = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")
#: How long a refused master waits for the holder to tell its pid.
PEER_TIMEOUT = 0.5


def lock_name(path: str | Path) -> str:
    """The abstract socket name (without its leading NUL) for ipc file ``path``."""
    digest = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:32]
    return f"busd-ipc-{os.getuid()}-{digest}"


def ipc_path(endpoint: str) -> str | None:
    """The socket file of an ``ipc://`` endpoint, else None."""
    return endpoint[len("ipc://"):] if endpoint.startswith("ipc://") else None


def holder_pid(name: str) -> int | None:
    """The pid of the process holding abstract socket ``name``, when it says."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(PEER_TIMEOUT)
        probe.connect("\0" + name)
        pid, _, _ = _UCRED.unpack(probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                   _UCRED.size))
        return int(pid)
    except OSError:
        return None
    finally:
        probe.close()


class DirLock:
    """Held by the master serving ipc file ``path``: a second one is refused."""

    def __init__(self, path: str | Path) -> None:
        self.path = os.path.abspath(path)
        self.name = lock_name(self.path)
        self._sock: socket.socket | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`AlreadyRunning` naming the holder."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind("\0" + self.name)
            sock.listen(16)
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            pid = holder_pid(self.name)
            who = f"a busd master (pid {pid})" if pid else "another busd master"
            raise AlreadyRunning(f"{who} already serves {self.path} "
                                 f"(it holds the lock @{self.name}, even if the file "
                                 "or its dir was removed)") from None
        self._sock = sock

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._sock is not None

    def release(self) -> None:
        """Let another master take the path."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


@dataclass
class _Bound:
    sock: zmq.Socket[Any]
    endpoint: str
    path: str


class EndpointGuard:
    """The locks of a master's ipc endpoints, and their repair when their files go."""

    def __init__(self) -> None:
        self._locks: list[DirLock] = []
        self._bound: list[_Bound] = []
        self.repairs = 0
        self.failures = 0

    def claim(self, endpoint: str) -> None:
        """Lock ``endpoint`` before binding it (raises AlreadyRunning); no-op for tcp."""
        path = ipc_path(endpoint)
        if path is None or any(lock.path == os.path.abspath(path) for lock in self._locks):
            return
        lock = DirLock(path)
        lock.acquire()
        self._locks.append(lock)

    def watch(self, sock: zmq.Socket[Any], endpoint: str) -> None:
        """Rebind ``sock`` at ``endpoint`` whenever its socket file disappears."""
        path = ipc_path(endpoint)
        if path is not None:
            self._bound.append(_Bound(sock, endpoint, path))

    def check(self) -> list[str]:
        """Rebind every endpoint whose file is gone; return those rebound (hub thread)."""
        repaired = []
        for bound in self._bound:
            if os.path.exists(bound.path) or bound.sock.closed:
                continue
            if self._repair(bound):
                repaired.append(bound.endpoint)
        return repaired

    def _repair(self, bound: _Bound) -> bool:
        directory = Path(bound.path).parent
        try:
            if not directory.is_dir():
                ensure_runtime_dir(directory)
            # A second listener on the same path; the old one is kept, because
            # unbinding it would cut every connection it accepted.
            bound.sock.bind(bound.endpoint)
            secure_ipc(bound.endpoint)
        except (OSError, zmq.ZMQError) as exc:
            self.failures += 1
            if self.failures <= 5:
                log.error("cannot rebind %s after its file was removed: %s", bound.endpoint, exc)
            return False
        self.repairs += 1
        log.warning("%s was removed under this master: recreated and bound again",
                    bound.endpoint)
        return True

    def statistics(self) -> dict[str, int]:
        """How many endpoints were rebound, and how many rebinds failed."""
        return {"rebound": self.repairs, "rebind_failed": self.failures}

    def close(self) -> None:
        """Release every lock (the sockets are the hub's to close)."""
        for lock in self._locks:
            lock.release()
        self._locks.clear()
        self._bound.clear()


__all__ = ["DirLock", "EndpointGuard", "holder_pid", "lock_name"]
