"""When a program that does not speak the bus counts as ready.

A worker of a bus pool is ready when it is STARTED on the bus.  A pool of
``bus = false`` runs any program (``redis-server``, ``nginx``), which
never says so; its ``ready`` says how busd tells instead::

    ready = 2                      alive for 2 seconds
    ready = "tcp:127.0.0.1:6380"   a connect to 127.0.0.1:6380 succeeds
    ready = "unix:/run/app.sock"   a connect to that unix stream socket succeeds

:func:`probe` asks once and answers at once: it runs on the master's
command thread between other work, so a connect that has not succeeded
within :data:`PROBE_TIMEOUT` is a "not yet", and so is a refused one or a
missing socket file.  It never looks a name up (a resolver may take
seconds): a tcp host is an IP address, or ``localhost`` (probed as
127.0.0.1).
"""

from __future__ import annotations

import errno
import ipaddress
import select
import socket
import time
from dataclasses import dataclass

#: The longest a probe may take: it runs between the command thread's other work.
PROBE_TIMEOUT = 0.05
#: The longest wait for "alive for N seconds" (as busd's durations: a week).
MAX_SECONDS = 7 * 24 * 3600
LOCALHOST = "127.0.0.1"
FORMS = (
    f"a number of seconds from 0 to {MAX_SECONDS}, tcp:HOST:PORT "
    "(HOST an IP address or localhost) or unix:PATH"
)


@dataclass(frozen=True)
class Ready:
    """One readiness check: exactly one of ``seconds``, ``tcp`` and ``unix`` is set."""

    seconds: float | None = None
    tcp: tuple[str, int] | None = None
    unix: str | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.seconds, self.tcp, self.unix) if v is not None]
        if len(given) != 1:
            raise ValueError("Ready takes exactly one of seconds, tcp and unix")

    @classmethod
    def parse(cls, value: object) -> Ready:
        """``2``, ``0.5``, ``"tcp:HOST:PORT"`` or ``"unix:PATH"``; else ValueError (why)."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not 0 <= value <= MAX_SECONDS:
                raise ValueError(f"expected {FORMS}, not {value!r}")
            return cls(seconds=float(value))
        if isinstance(value, str):
            kind, _, rest = value.partition(":")
            if kind == "unix" and rest:
                return cls(unix=rest)
            if kind == "tcp":
                address = _tcp_address(rest)
                if address is not None:
                    return cls(tcp=address)
        shown = repr(value).lower() if isinstance(value, bool) else repr(value)
        raise ValueError(f"expected {FORMS}, not {shown}")

    def describe(self) -> str:
        """The check as it is written in a config file: ``2``, ``tcp:H:P``, ``unix:PATH``."""
        if self.tcp is not None:
            host, port = self.tcp
            return f"tcp:[{host}]:{port}" if ":" in host else f"tcp:{host}:{port}"
        if self.unix is not None:
            return f"unix:{self.unix}"
        return f"{self.seconds:g}"


def _tcp_address(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            return None
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return None
    return host, int(port)


def probe(ready: Ready, alive_for: float) -> bool:
    """Is the program ready?  At most :data:`PROBE_TIMEOUT` long; never raises.

    ``alive_for`` is how long the process has been running.
    """
    if ready.seconds is not None:
        return alive_for >= ready.seconds
    if ready.tcp is not None:
        host, port = ready.tcp
        host = LOCALHOST if host == "localhost" else host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return _connects(family, (host, port))
    if ready.unix is not None:
        return _connects(socket.AF_UNIX, ready.unix)
    return False


def _connects(family: socket.AddressFamily, address: tuple[str, int] | str) -> bool:
    """A non-blocking connect that succeeds within PROBE_TIMEOUT; closed at once."""
    deadline = time.monotonic() + PROBE_TIMEOUT
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        return False
    try:
        sock.setblocking(False)
        code = sock.connect_ex(address)
        if code == 0:
            return True
        if code not in (errno.EINPROGRESS, errno.EALREADY):
            return False  # refused, no such file, or (unix) a full backlog: not yet
        poller = select.poll()
        poller.register(sock, select.POLLOUT)
        remaining = max(0.0, deadline - time.monotonic())
        if not poller.poll(remaining * 1000):
            return False
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    except (OSError, ValueError, TypeError):
        return False
    finally:
        sock.close()


__all__ = ["PROBE_TIMEOUT", "Ready", "probe"]
