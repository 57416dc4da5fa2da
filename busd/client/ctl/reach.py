"""Whether a master can answer at an ipc endpoint right now, without asking it.

::

    no socket file             -> "... does not exist"     (busctl: exit 3 at once)
    a file nobody listens on   -> "... nothing listens on"  (a stale socket: exit 3 at once)
    anything else (or tcp)     -> None: send the request and see

Every busctl command looks before it sends, so the probe is cheap: a
connect() on a Unix socket through ``_socket``, the C half of the
``socket`` module, whose Python half (its enums, ``selectors``) takes
longer to import than the whole probe and busctl's request together.
"""

from __future__ import annotations

import _socket
import os

#: --timeout of ``busctl wait`` when none is given: a pool's default --startup-timeout.
DEFAULT_WAIT = 30.0


def unreachable(endpoint: str) -> str | None:
    """Why nobody can answer at an ipc ``endpoint`` right now (None: try it).

    A socket file that does not exist, or that nobody listens on, is known
    at once; waiting out --timeout for it would only waste the operator's time.
    """
    if not endpoint.startswith("ipc://"):
        return None
    path = endpoint.removeprefix("ipc://")
    hint = "is busd running? --name or --runtime-dir finds another"
    if not os.path.exists(path):
        return f"no busd at {endpoint}: {path} does not exist ({hint})"
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        return f"no busd at {endpoint}: nothing listens on {path} ({hint})"
    except OSError:
        return None
    finally:
        probe.close()
    return None


__all__ = ["DEFAULT_WAIT", "unreachable"]
