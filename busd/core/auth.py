"""CURVE keys and ZAP: who may talk to a master over tcp, and in which role.

::

    client DEALER/SUB (CURVE client:          master ROUTER/XPUB, tcp endpoints only
      server key, own key pair)   --tcp-->    (CURVE server, ZAP domain "busd")
                                                  | ZAP request, inproc://zeromq.zap.01
                                                  v
                                  [ zmq.auth thread: Authenticator + KeyRing ]
                                                  | User-Id "rw:<z85 key>" | "ro:<z85 key>"
                                                  v
                            [ busd-hub ] reads each request's User-Id: peer_role()

Encryption and authentication are ZeroMQ's own (CURVE, ZAP through pyzmq's
:mod:`zmq.auth`); busd only loads and checks key files and maps a client's
public key to a role.  This module is what both sides share (key files,
roles, the client's socket options and handshake watch); the master's part,
which loads :mod:`zmq.auth` and its asyncio, is :mod:`busd.security.zap`.  Its
``KeyRing`` belongs to the authenticator's thread (handed over before that
thread starts); the hub learns a peer's role from the User-Id libzmq
attaches to every frame, so no state is shared between the two threads.

Read-only keys may run the read-only requests (``ping``, ``status``,
``workers``, ``clients``, ``snapshot``, ``replay`` and the master's other
quick commands but ``host_report``), subscribe and join as a watcher;
anything else answers ``forbidden`` (the hub checks, ``busd.master.hub``).
ipc peers have no User-Id:
the runtime dir's permissions (0700, sockets 0600) already say who they are.
"""

from __future__ import annotations

import enum
import os
import stat
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import zmq

from busd.core.errors import BusError, KeyRefused

ZAP_DOMAIN = b"busd"
#: A key pair's public half or secret half, z85: 40 characters.
Z85_KEY_LENGTH = 40
#: Requests the hub answers at once that still need a full key (they are not reads).
NEEDS_FULL_KEY = frozenset({"host_report"})
#: The same peer's refusals are logged at most once in this many seconds.
REFUSAL_LOG_INTERVAL = 60.0
#: Peers whose refusals are remembered, at most (the oldest are forgotten first).
REFUSAL_PEERS = 1024
#: Refusal lines logged per interval in all, whatever the peers (a fresh key each try).
REFUSAL_LINES = 10
#: Bytes read of a public key file (a certificate is a few hundred).
KEY_FILE_LIMIT = 64 * 1024


class KeyFileError(BusError):
    """A key file or key dir is missing, unreadable, unsafe or unparseable."""


class Role(str, enum.Enum):
    """What a client's key allows."""

    FULL = "rw"
    READ_ONLY = "ro"


class KeyPair(NamedTuple):
    """A z85 public key and, for one's own certificate, its secret."""

    public: bytes
    secret: bytes


# -- key files -----------------------------------------------------------------


def check_private(path: Path) -> None:
    """Refuse a secret key file that is missing or that others may read or write."""
    try:
        info = path.stat()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"key file {path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"secret key file {path} is mode {mode:04o}, readable or writable "
            f"by others: chmod 600 {path}"
        )
    if info.st_uid != os.getuid() and os.getuid() != 0:
        raise KeyFileError(f"secret key file {path} belongs to uid {info.st_uid}, not to us")


def _load(path: Path) -> tuple[bytes, bytes | None]:
    import zmq.auth  # here: it loads asyncio, which busctl without keys never needs

    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot load key file {path}: {exc}") from exc
    if len(public) != Z85_KEY_LENGTH or (secret is not None and len(secret) != Z85_KEY_LENGTH):
        raise KeyFileError(f"key file {path} holds no valid z85 key (40 characters)")
    return public, secret


def load_secret(path: str | Path) -> KeyPair:
    """One's own certificate (``*.key_secret``, as ``busctl keygen`` writes): checked."""
    path = Path(path)
    check_private(path)
    public, secret = _load(path)
    if secret is None:
        raise KeyFileError(f"key file {path} holds no secret key (give the .key_secret file)")
    return KeyPair(public, secret)


def load_public(path: str | Path) -> bytes:
    """A public key from a certificate (``*.key``; a ``.key_secret`` file works too)."""
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(f"cannot read key file {path}: no such file")
    return _load(path)[0]


#: What a key dir looked like when read: each ``*.key`` file's name and content.
KeyDirStamp = tuple[tuple[str, bytes], ...]


def _check_safe(path: Path, info: os.stat_result, what: str) -> None:
    """Refuse ``path`` when another user owns it or group or others may write it."""
    if info.st_uid not in (os.getuid(), 0):
        raise KeyFileError(
            f"{what} {path} belongs to uid {info.st_uid}, not to us "
            f"(uid {os.getuid()}) or root: anyone who owns it could add a key"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise KeyFileError(
            f"{what} {path} is writable by others (mode {mode:04o}): anyone "
            f"could add a key; chmod go-w {path}"
        )


def _read_key_file(path: Path) -> bytes:
    try:
        # O_NONBLOCK: a FIFO planted under a .key name must not hang the reader.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"key file {path} is not a regular file")
        _check_safe(path, info, "key file")
        return os.read(fd, KEY_FILE_LIMIT)
    finally:
        os.close(fd)


def key_dir_stamp(path: str | Path) -> KeyDirStamp:
    """Each ``*.key`` file of ``path`` with its content; refuses an unsafe dir or file.

    Compared on every reload, so a file replaced in place (``cp new.key
    alice.key``: same inode, maybe the same mtime) counts as a change.
    """
    path = Path(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise KeyFileError(f"cannot read key dir {path}: {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise KeyFileError(f"key dir {path} is not a directory")
    _check_safe(path, info, "key dir")
    return tuple((item.name, _read_key_file(item)) for item in sorted(path.glob("*.key")))


def load_key_dir(path: str | Path, stamp: KeyDirStamp | None = None) -> frozenset[bytes]:
    """The public keys of every ``*.key`` certificate in ``path``; refuses an unsafe dir."""
    path = Path(path)
    files = key_dir_stamp(path) if stamp is None else stamp
    return frozenset(_load(path / name)[0] for name, _ in files)


# -- the master side -----------------------------------------------------------


class RefusalLog:
    """Logs a refused peer once per interval, and at most ``lines`` lines per interval in all.

    A refusal not logged is counted: the peer's own count goes on its next
    line, and the refusals held back by the overall limit on the next line
    logged at all (a fresh key per try is still one line per few seconds).
    """

    def __init__(
        self, what: str, interval: float = REFUSAL_LOG_INTERVAL, lines: int = REFUSAL_LINES
    ) -> None:
        self.what = what
        self.interval = interval
        self.lines = lines
        self._seen: dict[str, tuple[float, int]] = {}
        self._window = (-interval, 0)
        self.total = 0
        #: Refusals not logged because of the overall limit, since the last line.
        self.suppressed = 0

    def refused(self, peer: str, detail: str) -> None:
        """Count a refusal of ``peer``; log it if this peer was quiet for an interval."""
        self.total += 1
        now = time.monotonic()
        last, count = self._seen.pop(peer, (-self.interval, 0))
        if now - last < self.interval:
            self._seen[peer] = (last, count + 1)
        elif self._take_line(now):
            more = f" ({count} more since the last report)" if count else ""
            if self.suppressed:
                more += (
                    f" ({self.suppressed} other refusals not logged: over "
                    f"{self.lines} lines in {self.interval:g}s)"
                )
                self.suppressed = 0
            import logging  # here: busctl, which refuses nobody, starts faster without it

            logging.getLogger(__name__).warning("%s %s: %s%s", self.what, peer, detail, more)
            self._seen[peer] = (now, 0)
        else:
            self.suppressed += 1
            self._seen[peer] = (last, count)
        while len(self._seen) > REFUSAL_PEERS:
            del self._seen[next(iter(self._seen))]

    def _take_line(self, now: float) -> bool:
        start, used = self._window
        if now - start >= self.interval:
            start, used = now, 0
        if used >= self.lines:
            return False
        self._window = (start, used + 1)
        return True


def peer_role(frame: zmq.Frame) -> tuple[Role, str]:
    """The role of the peer a frame came from, and its key (``local`` over ipc)."""
    try:
        user = frame.get("User-Id")
    except zmq.ZMQError:
        return Role.FULL, "local"
    role, _, key = str(user).partition(":")
    if role == Role.FULL.value and key:
        return Role.FULL, key
    if role == Role.READ_ONLY.value and key:
        return Role.READ_ONLY, key
    return Role.FULL, "local"


def is_tcp(endpoint: str) -> bool:
    """Whether ``endpoint`` goes over the network (CURVE applies)."""
    return endpoint.startswith("tcp://")


# -- the client side -----------------------------------------------------------


class ClientKeys(NamedTuple):
    """What a client needs to talk CURVE: the master's public key and its own pair."""

    server: bytes
    own: KeyPair


def client_keys(
    server_key: str | Path | None = None,
    curve_secret: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> ClientKeys | None:
    """Keys from the arguments, else BUSD_SERVER_KEY / BUSD_CURVE_SECRET; None if neither."""
    env = os.environ if env is None else env
    server = server_key or env.get("BUSD_SERVER_KEY") or None
    secret = curve_secret or env.get("BUSD_CURVE_SECRET") or None
    if server is None and secret is None:
        return None
    if server is None or secret is None:
        raise KeyFileError(
            "CURVE needs both the master's public key (--server-key, "
            "BUSD_SERVER_KEY) and this client's secret key (--curve-secret, "
            "BUSD_CURVE_SECRET)"
        )
    return ClientKeys(load_public(server), load_secret(secret))


def secure_client(sock: zmq.Socket[Any], keys: ClientKeys | None, endpoint: str) -> None:
    """Make ``sock``'s connection to a tcp ``endpoint`` a CURVE client (before connect)."""
    if keys is None or not is_tcp(endpoint):
        return
    sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.own.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.own.secret)


_FAILURES: dict[int, str] = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: (
        "the master refused the key (its public key is not in the master's "
        "--authorized-keys or --readonly-keys)"
    ),
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: (
        "the master refused the key: the handshake failed (CURVE settings differ; a "
        "CURVE master needs --server-key and --curve-secret, or BUSD_SERVER_KEY and "
        "BUSD_CURVE_SECRET)"
    ),
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: (
        "the master refused the key: the handshake failed (is --server-key the "
        "master's public key?)"
    ),
}
_NO_KEY = (
    "the master refused the key: this client has none and the master requires "
    "CURVE (give --server-key FILE and --curve-secret FILE, or BUSD_SERVER_KEY and "
    "BUSD_CURVE_SECRET)"
)
_WATCHED = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


class HandshakeWatch:
    """Watches a tcp socket's handshakes (socket monitor) so a refusal is told, not timed out.

    Poll :attr:`socket` for POLLIN with the watched socket, then call
    :meth:`check`, which raises :class:`KeyRefused` on a failed handshake.
    """

    def __init__(self, sock: zmq.Socket[Any], endpoint: str, keyed: bool = True) -> None:
        self.endpoint = endpoint
        self.keyed = keyed
        self._watched = sock
        self.socket: zmq.Socket[Any] = sock.get_monitor_socket(_WATCHED)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.succeeded = False

    def check(self) -> None:
        """Read the events waiting; raise KeyRefused if a handshake failed."""
        while self.socket.poll(0, zmq.POLLIN):
            # A monitor message: (uint16 event, uint32 value), then the endpoint
            # (zmq.utils.monitor parses it the same way, but loads asyncio).
            event = struct.unpack("=hi", self.socket.recv_multipart()[0][:6])[0]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.succeeded = True
            elif event in _FAILURES and not self.succeeded:
                why = _FAILURES[event] if self.keyed else _NO_KEY
                raise KeyRefused(f"{why} at {self.endpoint}")

    def close(self) -> None:
        """Stop monitoring and close the monitor socket."""
        if not self.socket.closed:
            if not self._watched.closed:
                self._watched.disable_monitor()
            self.socket.close(linger=0)


def watch_handshakes(
    sock: zmq.Socket[Any], endpoint: str, keys: ClientKeys | None
) -> HandshakeWatch | None:
    """A HandshakeWatch for a tcp endpoint, or None (ipc needs none)."""
    return HandshakeWatch(sock, endpoint, keys is not None) if is_tcp(endpoint) else None
