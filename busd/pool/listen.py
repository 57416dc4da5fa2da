"""Listening sockets made by the master and inherited by every worker.

``--listen tcp:127.0.0.1:8000`` or ``--listen unix:/run/app.sock``: the
master binds and listens once; workers find the descriptors in
``BUSD_LISTEN_FDS`` (comma separated, in the order given) and accept on
them.  A reload that replaces workers therefore never closes the socket,
and connections waiting in its backlog are served by the new workers.

Socket activation: when systemd (or anything playing its part) started
busd with ``LISTEN_FDS=N`` and ``LISTEN_PID`` naming busd's own pid, the
descriptors 3 .. 3+N-1 are taken as if given by ``--listen`` (before those),
named by ``LISTEN_FDNAMES`` in logs, and the variables are removed so no
worker takes them again (``sd_listen_fds(unset_environment=1)``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from busd.core.endpoints import CTL_FILE, PUB_FILE
from busd.core.errors import BusError

log = logging.getLogger(__name__)

BACKLOG = 1024
SD_LISTEN_FDS_START = 3
SD_VARIABLES = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


class ListenError(BusError):
    """A --listen address is malformed or cannot be bound."""


def make_listener(address: str) -> socket.socket:
    """Bind and listen on ``tcp:HOST:PORT`` or ``unix:PATH``; inheritable."""
    kind, _, rest = address.partition(":")
    try:
        if kind == "tcp":
            host, _, port = rest.rpartition(":")
            host = host.strip("[]") or "127.0.0.1"
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, int(port)))
        elif kind == "unix":
            if os.path.exists(rest):
                os.unlink(rest)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(rest)
        else:
            raise ListenError(f"--listen takes tcp:HOST:PORT or unix:PATH, not {address!r}")
    except (OSError, ValueError) as exc:
        raise ListenError(f"--listen {address}: cannot listen: {exc}") from exc
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


def make_listeners(
    addresses: Iterable[str], kept: dict[str, socket.socket] | None = None
) -> list[socket.socket]:
    """One listening socket per address (all closed again if one fails).

    An address found in ``kept`` (sockets a restarted master inherited, see
    :func:`from_restart`) takes that socket instead of binding again.
    """
    made: list[socket.socket] = []
    kept = dict(kept or {})
    try:
        for address in addresses:
            made.append(kept.pop(address) if address in kept else make_listener(address))
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return made


#: How a master hands its listening sockets to itself across ``restart`` (re-exec).
RESTART_ENV = "BUSD_RESTART_FDS"


def restart_env(sockets: dict[str, socket.socket]) -> str:
    """``RESTART_ENV``'s value for these sockets (by the address they were made for).

    The descriptors are inheritable (made so by :func:`make_listener`), so
    they live through ``execv``: connections arriving meanwhile wait in the
    kernel's backlog and are served by the new master's workers; none is
    refused.
    """
    return json.dumps([[sock.fileno(), address] for address, sock in sockets.items()])


def from_restart(environ: dict[str, str] | None = None) -> dict[str, socket.socket]:
    """In a re-executed master: the listening sockets of its former self, by address.

    The variable is removed from ``environ`` (default ``os.environ``).
    """
    env: Any = os.environ if environ is None else environ
    text = env.pop(RESTART_ENV, "")
    if not text:
        return {}
    found: dict[str, socket.socket] = {}
    try:
        for fd, address in json.loads(text):
            sock = socket.socket(fileno=int(fd))
            sock.set_inheritable(True)
            found[str(address)] = sock
    except (ValueError, TypeError, OSError) as exc:
        for sock in found.values():
            sock.close()
        raise ListenError(f"{RESTART_ENV}={text!r}: {exc}") from exc
    return found


def inherited(environ: dict[str, str] | None = None) -> list[socket.socket]:
    """In a worker: the listening sockets the master passed down."""
    env = os.environ if environ is None else environ
    fds = [int(fd) for fd in env.get("BUSD_LISTEN_FDS", "").split(",") if fd.strip()]
    return [socket.socket(fileno=fd) for fd in fds]


def from_systemd(
    environ: dict[str, str] | None = None, pid: int | None = None
) -> list[tuple[str, socket.socket]]:
    """The listening sockets systemd passed to this process, with their names.

    Empty unless ``LISTEN_PID`` is this process; the variables are removed
    from ``environ`` (default: ``os.environ``) either way.
    """
    env: Any = os.environ if environ is None else environ
    values = {name: env.pop(name, "") for name in SD_VARIABLES}
    if values["LISTEN_PID"] != str(os.getpid() if pid is None else pid):
        return []
    try:
        count = int(values["LISTEN_FDS"])
    except ValueError:
        raise ListenError(f"LISTEN_FDS is a count, not {values['LISTEN_FDS']!r}") from None
    names = values["LISTEN_FDNAMES"].split(":") if values["LISTEN_FDNAMES"] else []
    found: list[tuple[str, socket.socket]] = []
    for index in range(count):
        fd = SD_LISTEN_FDS_START + index
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            for _, made in found:
                made.close()
            raise ListenError(f"LISTEN_FDS: descriptor {fd} is not a socket: {exc}") from exc
        sock.set_inheritable(True)
        found.append((names[index] if index < len(names) else f"fd{fd}", sock))
    return found


def describe(sock: socket.socket) -> str:
    """``tcp:HOST:PORT`` or ``unix:PATH``: the address a listening socket is bound to."""
    name = sock.getsockname()
    if isinstance(name, tuple):
        return f"tcp:{name[0]}:{name[1]}"
    return f"unix:{name}"


def listening_sockets(addresses: list[str]) -> dict[str, socket.socket]:
    """systemd's sockets (LISTEN_FDS) and --listen's, by address; kept across a restart.

    A re-executed master (``busctl restart``) finds its former self's sockets
    in the environment and takes them instead of binding again.
    """
    kept = from_restart()
    found = {f"systemd:{name}": sock for name, sock in from_systemd()}
    for name, sock in found.items():
        log.info("listening on %s from systemd (%s)", describe(sock), name.partition(":")[2])
    if not found:
        found = {a: kept.pop(a) for a in list(kept) if a.startswith("systemd:")}
    for address, sock in zip(addresses, make_listeners(addresses, kept), strict=True):
        found[address] = sock
    for address in set(kept) - set(found):
        kept[address].close()
    return found


def remove_sockets(runtime: Path, listeners: list[socket.socket]) -> None:
    """On every way out: close the --listen sockets, remove the files of ours.

    Called only once this busd owns the runtime dir (no other master
    answered there).  A file busd may no longer remove (privileges dropped
    since it was made) is logged, and left.
    """
    paths = [runtime / CTL_FILE, runtime / PUB_FILE]
    for sock in listeners:
        name = sock.getsockname()
        if isinstance(name, str) and name:
            paths.append(Path(name))
        sock.close()
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remove %s: %s", path, exc)
