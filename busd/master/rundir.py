"""Owning the runtime dir: one master per ipc endpoint, and endpoints that come back.

::

    Hub.__init__ --claim(endpoint)--> <ipc socket file>.lock, flock(LOCK_EX | LOCK_NB),
                                       then "@busd-ipc-<uid>-<hash of path>" (listening)
                                       (held, with our pid written in it, while the master lives)
    Hub._beat    --check()----------> socket file gone?  recreate the dir (0700), take
                                       the lock again, bind again, log a warning

The lock is a file beside the ipc socket file (``ctl.sock.lock``), in the
runtime dir that only this user may write (mode 0700, checked), so no other
user can take it first; an abstract unix socket, which any local user can
bind under any name, would let them keep busd from starting.  ``flock``
releases it when the descriptor is closed or the process dies, however it
dies; the descriptor is close-on-exec, so an exec'd worker never holds it.
The holder writes its pid in the file, so a refused master can name it.

A lock file goes with its dir (someone ran ``rm -rf`` on the runtime dir),
so the master also holds a second lock in the kernel: an abstract unix
socket named after the socket file's path, listening while it lives.  A
second master that finds that name taken asks the holder who it is
(``SO_PEERCRED``, which the kernel fills in and no process can forge): a
holder of our own uid is a master of ours, and we refuse to start even with
the dir gone; one of another uid is a squatter, and is ignored (logged):
the lock file, which nobody else can take, still holds.  A lock file
removed with its dir is taken again when the endpoint is repaired.

The :class:`EndpointGuard` is owned by the hub thread: ``claim`` runs in the
hub's constructor, ``check`` on every heartbeat, ``close`` with the sockets.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import socket
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from busd.core.endpoints import EndpointError, ensure_runtime_dir, secure_ipc
from busd.core.errors import AlreadyRunning
from busd.core.stats import Stats

log = logging.getLogger(__name__)

#: How often a lock file removed between its open and its flock is tried again.
LOCK_TRIES = 5
#: Bytes of a lock file read to learn its holder's pid.
PID_BYTES = 32
#: How long a refused master waits for the kernel lock's holder to say who it is.
PEER_TIMEOUT = 0.5
_UCRED = struct.Struct("3i")


def kernel_lock_name(path: str | Path) -> str:
    """The abstract socket name (without its leading NUL) for ipc file ``path``."""
    digest = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:32]
    return f"busd-ipc-{os.getuid()}-{digest}"


def kernel_lock_holder(name: str) -> tuple[int, int] | None:
    """The (pid, uid) of the process listening on abstract socket ``name``, if it answers."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(PEER_TIMEOUT)
        probe.connect("\0" + name)
        pid, uid, _ = _UCRED.unpack(
            probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
        return int(pid), int(uid)
    except OSError:
        return None
    finally:
        probe.close()


def lock_path(path: str | Path) -> str:
    """The lock file of ipc socket file ``path``."""
    return os.path.abspath(path) + ".lock"


def ipc_path(endpoint: str) -> str | None:
    """The socket file of an ``ipc://`` endpoint, else None."""
    return endpoint[len("ipc://") :] if endpoint.startswith("ipc://") else None


def holder_pid(lock_file: str | Path) -> int | None:
    """The pid the holder of ``lock_file`` wrote in it, when it did."""
    try:
        fd = os.open(lock_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        text = os.read(fd, PID_BYTES).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    return int(text) if text.isdigit() and text.isascii() else None


def _open_lock(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise EndpointError(
            f"cannot open lock file {path}: {exc.strerror} (a symlink? remove it)"
        ) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        os.close(fd)
        raise EndpointError(
            f"lock file {path} is not a regular file of ours (uid {info.st_uid}): remove it"
        )
    return fd


def _same_file(fd: int, path: str) -> bool:
    """Whether ``path`` still names the file open at ``fd`` (not removed or replaced)."""
    try:
        named = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)


class DirLock:
    """Held by the master serving ipc file ``path``: a second one is refused.

    With ``kernel`` it also holds the kernel lock (see the module docstring).
    """

    def __init__(self, path: str | Path, kernel: bool = True) -> None:
        self.path = os.path.abspath(path)
        self.file = lock_path(self.path)
        self.kernel = kernel
        self.kernel_name = kernel_lock_name(self.path)
        self._fd: int | None = None
        self._kernel: socket.socket | None = None

    def acquire(self) -> None:
        """Take the lock file, then the kernel lock, or raise :class:`AlreadyRunning`."""
        self._acquire_file()
        if self.kernel and self._kernel is None:
            try:
                self._kernel = self._take_kernel_lock()
            except AlreadyRunning:
                self.release()
                raise

    def _take_kernel_lock(self) -> socket.socket | None:
        """The listening abstract socket; None when another user squats its name."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind("\0" + self.kernel_name)
            sock.listen(16)
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            holder = kernel_lock_holder(self.kernel_name)
            if holder is not None and holder[1] == os.getuid():
                raise AlreadyRunning(
                    f"a busd master (pid {holder[0]}) already serves {self.path} (it holds "
                    f"@{self.kernel_name}, even if the file or its dir was removed)"
                ) from None
            who = f"uid {holder[1]} (pid {holder[0]})" if holder else "a process that does not say"
            log.warning(
                "@%s is held by %s, not a master of ours: ignored (the lock file %s holds)",
                self.kernel_name,
                who,
                self.file,
            )
            return None
        return sock

    def _acquire_file(self) -> None:
        for _ in range(LOCK_TRIES):
            fd = _open_lock(self.file)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                pid = holder_pid(self.file)
                who = f"a busd master (pid {pid})" if pid else "another busd master"
                raise AlreadyRunning(
                    f"{who} already serves {self.path} (it holds the lock {self.file})"
                ) from None
            if not _same_file(fd, self.file):
                # Its holder removed it between our open and our flock: a fresh one.
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return
        raise AlreadyRunning(f"cannot take the lock {self.file}: it keeps being replaced")

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def intact(self) -> bool:
        """Whether the lock file on disk is still the one held (not removed)."""
        return self._fd is not None and _same_file(self._fd, self.file)

    def renew(self) -> None:
        """Take the lock again after its file was removed (raises AlreadyRunning)."""
        if self.intact():
            return
        old, self._fd = self._fd, None
        try:
            self._acquire_file()
        finally:
            if old is not None:
                os.close(old)

    def release(self) -> None:
        """Let another master take the path (the lock file is removed while still held)."""
        if self._kernel is not None:
            self._kernel.close()
            self._kernel = None
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if _same_file(fd, self.file):
            with contextlib.suppress(OSError):
                os.unlink(self.file)
        os.close(fd)


@dataclass
class _Bound:
    sock: zmq.Socket[Any]
    endpoint: str
    path: str


@dataclass(frozen=True, eq=False)
class GuardStats(Stats):
    """What the endpoint guard repaired."""

    #: Endpoints bound again after their file was removed, and rebinds that failed.
    rebound: int
    rebind_failed: int


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
        # One kernel lock, on the first endpoint (the control socket), is enough
        # to find a master of ours with its dir gone; each costs a descriptor.
        lock = DirLock(path, kernel=not self._locks)
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
            for lock in self._locks:
                if lock.path == os.path.abspath(bound.path):
                    lock.renew()
            # A second listener on the same path; the old one is kept, because
            # unbinding it would cut every connection it accepted.
            bound.sock.bind(bound.endpoint)
            secure_ipc(bound.endpoint)
        except (OSError, zmq.ZMQError, EndpointError, AlreadyRunning) as exc:
            self.failures += 1
            if self.failures <= 5:
                log.error("cannot rebind %s after its file was removed: %s", bound.endpoint, exc)
            return False
        self.repairs += 1
        log.warning("%s was removed under this master: recreated and bound again", bound.endpoint)
        return True

    def statistics(self) -> GuardStats:
        """How many endpoints were rebound, and how many rebinds failed."""
        return GuardStats(rebound=self.repairs, rebind_failed=self.failures)

    def close(self) -> None:
        """Release every lock (the sockets are the hub's to close)."""
        for lock in self._locks:
            lock.release()
        self._locks.clear()
        self._bound.clear()


__all__ = ["DirLock", "EndpointGuard", "GuardStats", "holder_pid", "lock_path"]
