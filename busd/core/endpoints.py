"""Where busd's sockets live, and how they are made.

The runtime dir is ``$BUSD_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/busd/<name>``,
else ``/tmp/busd-<uid>/<name>``; it is mode 0700 and holds two ipc sockets
(mode 0600)::

    <runtime dir>/pub.sock   master PUB  (XPUB)  <- clients SUB
    <runtime dir>/ctl.sock   master ROUTER       <- clients DEALER, busctl

Clients find them from ``BUSD_PUB_ENDPOINT`` / ``BUSD_CTL_ENDPOINT`` when
set (the pool sets them for its workers), else from the runtime dir.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import stat
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar
from urllib.parse import urlsplit

import zmq

from busd.core.errors import BusError, NoMaster
from busd.core.wire import MAX_MESSAGE_SIZE

T = TypeVar("T")

DEFAULT_NAME = "busd"
PUB_FILE = "pub.sock"
CTL_FILE = "ctl.sock"
#: The longest busd name (``--name``, ``BUSD_NAME``), and what one is made of.
MAX_NAME = 64
NAME = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{MAX_NAME - 1}}}", re.ASCII)
#: sockaddr_un holds 108 bytes with the terminating NUL.
MAX_IPC_PATH = 107
#: Queue limits: a subscriber that never reads costs at most this many messages.
PUB_HWM = 100_000
CTL_HWM = 10_000


class EndpointError(BusError):
    """An endpoint or runtime dir is unusable (too long, unsafe, not allowed)."""


class UnsafeRuntimeDir(NoMaster):
    """The default runtime dir is another user's, or others may write it: no master of ours."""


class Endpoints(NamedTuple):
    """The two endpoints of a master: where it publishes and where it takes commands."""

    pub: str
    ctl: str


def check_name(name: str) -> str:
    """``name`` if it is a good busd name, else :class:`EndpointError` saying why.

    A name becomes a directory name (the runtime dir) and part of file names
    (``--log-dir``'s): 1 to :data:`MAX_NAME` letters, digits, ``-``, ``_``
    or ``.``, not starting with ``.`` or ``-``, so it never climbs out of
    the directory it is put in.
    """
    if not NAME.fullmatch(name):
        raise EndpointError(
            f"bad busd name {name!r}: a name is 1 to {MAX_NAME} letters, "
            "digits, '-', '_' or '.', not starting with '.' or '-'"
        )
    return name


def runtime_dir(
    name: str | None = None, env: Mapping[str, str] | None = None, uid: int | None = None
) -> Path:
    """The runtime dir for master ``name`` (not created), as user ``uid`` (default: ours)."""
    env = os.environ if env is None else env
    name = check_name(name or env.get("BUSD_NAME") or DEFAULT_NAME)
    if env.get("BUSD_RUNTIME_DIR"):
        return Path(env["BUSD_RUNTIME_DIR"])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "busd" / name
    return Path(f"/tmp/busd-{os.getuid() if uid is None else uid}") / name


def ensure_runtime_dir(path: Path) -> Path:
    """Create ``path`` (and parents) mode 0700; refuse an unsafe one.

    Refused: a dir another user owns, or one that group or others may write
    (they could replace its sockets), and the same for the per-user parent
    ``/tmp/busd-<uid>``.  Read access for others is taken away (mode 0700).
    """
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.mkdir(mode=0o700, exist_ok=True)
    if path.parent.name == f"busd-{os.getuid()}":
        check_private_dir(path.parent)
    check_private_dir(path)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def check_private_dir(path: Path) -> None:
    """Refuse a dir that is not ours, or that group or others may write."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise EndpointError(f"runtime dir {path} is not a directory (a symlink?)")
    if info.st_uid != os.getuid():
        raise EndpointError(
            f"runtime dir {path} belongs to uid {info.st_uid}, not to us "
            f"(uid {os.getuid()}): choose another --runtime-dir"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise EndpointError(
            f"runtime dir {path} is mode {mode:04o}, writable by group or "
            f"others (they could replace its sockets): chmod 700 {path}"
        )


def ipc_endpoint(path: Path) -> str:
    """``ipc://path``, refusing a path the kernel cannot bind."""
    text = str(path)
    if len(text.encode()) > MAX_IPC_PATH:
        raise EndpointError(
            f"ipc path {text!r} is {len(text.encode())} bytes, "
            f"over the {MAX_IPC_PATH} a unix socket allows; "
            "choose a shorter --runtime-dir"
        )
    return f"ipc://{text}"


def default_endpoints(directory: Path) -> Endpoints:
    """The ipc endpoints inside a runtime dir."""
    return Endpoints(pub=ipc_endpoint(directory / PUB_FILE), ctl=ipc_endpoint(directory / CTL_FILE))


def client_endpoints(
    name: str | None = None, runtime: str | Path | None = None, env: Mapping[str, str] | None = None
) -> Endpoints:
    """Where a client finds a master: explicit env endpoints, else the runtime dir.

    A runtime dir found by default (not named by ``runtime`` or
    ``BUSD_RUNTIME_DIR``) is checked as busd checks it: one another user
    owns, or that group or others may write, raises :class:`UnsafeRuntimeDir`
    (a :class:`NoMaster`), since a master there is not ours to talk to.
    """
    env = os.environ if env is None else env
    directory = Path(runtime) if runtime else runtime_dir(name, env)
    defaults = default_endpoints(directory)
    found = not runtime and not env.get("BUSD_RUNTIME_DIR")
    if runtime or name:
        if found:
            check_found_dir(directory)
        return defaults
    pub, ctl = env.get("BUSD_PUB_ENDPOINT"), env.get("BUSD_CTL_ENDPOINT")
    if found and not (pub and ctl):
        check_found_dir(directory)
    return Endpoints(pub=pub or defaults.pub, ctl=ctl or defaults.ctl)


def check_found_dir(path: Path) -> None:
    """Refuse a default runtime dir (or its ``busd-<uid>`` parent) that is unsafe, if it exists."""
    parent = [path.parent] if path.parent.name == f"busd-{os.getuid()}" else []
    for directory in (*parent, path):
        try:
            info = directory.lstat()
        except FileNotFoundError:
            continue
        except PermissionError:
            raise UnsafeRuntimeDir(
                f"not talking to a master in {directory}: we (uid "
                f"{os.getuid()}) may not look into {directory.parent} "
                "(name the dir with --runtime-dir or BUSD_RUNTIME_DIR)"
            ) from None
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            why = "it is not a directory (a symlink?)"
        elif info.st_uid != os.getuid():
            why = f"it belongs to uid {info.st_uid}, not to us (uid {os.getuid()})"
        elif mode & 0o022:
            why = f"it is mode {mode:04o}, writable by group or others"
        else:
            continue
        raise UnsafeRuntimeDir(
            f"not talking to a master in {directory}: {why}, so another "
            "user could have planted it (name it with --runtime-dir or "
            "BUSD_RUNTIME_DIR to trust it)"
        )


def pub_beside(ctl: str) -> Endpoints:
    """The PUB endpoint that goes with a control endpoint given to ``--bind``."""
    if ctl.startswith("ipc://"):
        return Endpoints(pub=ipc_endpoint(Path(ctl[6:] + ".pub")), ctl=ctl)
    if ctl.startswith("tcp://"):
        host, _, port = ctl[6:].rpartition(":")
        pub_port = "*" if port == "*" else str(int(port) + 1)
        return Endpoints(pub=f"tcp://{host}:{pub_port}", ctl=ctl)
    raise EndpointError(f"unsupported endpoint {ctl!r}")


def check_bind(endpoint: str, insecure: bool = False, curve: bool = False) -> None:
    """Refuse a plain TCP endpoint, loopback included, unless ``insecure`` is set.

    Any local user may connect to a loopback port, and plain TCP tells no
    user from another: they could command the master and read everything it
    publishes.  The ipc endpoints (a 0700 dir) are the safe way on one host.
    With ``curve`` every tcp endpoint is a CURVE server: any address will do.
    """
    parts = urlsplit(endpoint)
    if parts.scheme in ("ipc", "inproc"):
        return
    if parts.scheme != "tcp":
        raise EndpointError(f"unsupported endpoint {endpoint!r}: use ipc:// or tcp://")
    if not insecure and not curve:
        raise EndpointError(
            f"{endpoint}: plain TCP lets anyone who can reach it (every "
            "local user, on loopback too) command busd and read all it "
            "publishes; use the ipc endpoints on one host, give "
            "--curve-secret and --authorized-keys (CURVE), or --insecure"
        )


def secure_ipc(endpoint: str) -> None:
    """Make a bound ipc socket file mode 0600."""
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        if os.path.exists(path):
            os.chmod(path, 0o600)


def configure(sock: zmq.Socket[Any], hwm: int, outside: bool = True) -> None:
    """Linger 0, deliberate high-water marks, and a size cap on what comes in."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    if outside:
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_SIZE)


class Outbox(Generic[T]):
    """Items handed to an I/O thread from any thread, with a pipe to wake it.

    ``put`` appends and writes one byte to the pipe only when the I/O thread
    is not already due to drain, so a burst costs one wake-up.  A deque's
    append and popleft are atomic, and ``drain`` empties the pipe *before*
    clearing the flag, so whenever the flag is set a byte is waiting in the
    pipe (no wake-up is ever lost).  The write of that byte and ``close``
    take one lock, so a ``put`` racing ``close`` never writes to a closed
    (maybe already reused) descriptor; the common ``put``, with the flag
    already set, takes no lock.
    """

    def __init__(self) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self._lock = threading.Lock()
        self._signalled = False
        self._closed = False

    @property
    def fileno(self) -> int:
        """The descriptor the I/O thread polls for POLLIN."""
        return self._rfd

    def put(self, item: T) -> bool:
        """Queue one item and wake the I/O thread; False if it was dropped (closed)."""
        if self._closed:
            return False
        self._items.append(item)
        if not self._signalled:
            self._wake()  # a full pipe is already a wake-up
        return True

    def _closed_or_signalled(self) -> bool:
        return self._closed or self._signalled

    def drain(self, limit: int = 0) -> list[T]:
        """What is queued, in order (at most ``limit`` items if given); clears the wake-up.

        Items left over by the limit leave the wake-up set, so the I/O thread
        comes back for them after it has looked at its sockets.
        """
        # One read empties the pipe (a byte is written only when the flag was clear, so
        # few are ever waiting); called when the pipe is readable, it raises nothing.
        with contextlib.suppress(BlockingIOError, OSError):
            os.read(self._rfd, 4096)
        self._signalled = False
        pop = self._items.popleft
        # Only what was queued up to now (a later put wakes the thread again); no
        # exception on the way, this is every wake-up's path.
        count = len(self._items)
        items = [pop() for _ in range(min(count, limit) if limit else count)]
        if limit and self._items:
            self._wake()
        return items

    def _wake(self) -> None:
        with self._lock:
            if self._closed_or_signalled():
                return
            self._signalled = True
            with contextlib.suppress(BlockingIOError):
                os.write(self._wfd, b"\0")

    def __len__(self) -> int:
        return len(self._items)

    def wait_readable(self, timeout: float) -> bool:
        """Block until something is queued or ``timeout`` passes (for tests and tools)."""
        import select  # here: busctl, which makes no Outbox, starts faster without it

        ready, _, _ = select.select([self._rfd], [], [], timeout)
        return bool(ready)

    def close(self) -> None:
        """Close the pipe; later puts are dropped."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._rfd)
            os.close(self._wfd)
