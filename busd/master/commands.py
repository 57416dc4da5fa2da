"""The commands every master answers, registered from :mod:`busd.commands`.

The lifecycle (``start``, ``stop``, ``exit``, ``graceful``), ``restart`` and
``broadcast``: each module there checks the request body (``parse``) and
runs the command (``handle``) on the master's command thread; here they are
only put in the master's table.  The master is seen through a Protocol, so
this module does not import ``busd.master.bus`` (which imports it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from busd.commands import broadcast, exit, graceful, restart, start, stop
from busd.commands.lifecycle import LIFECYCLE_CHANNELS
from busd.core.wire import ErrorCode, wire_error
from busd.master.registry import AckReport, ClientInfo

Handler = Callable[[dict[str, Any]], Any]


class Master(
    start.Host, stop.Host, exit.Host, graceful.Host, restart.Host, broadcast.Host, Protocol
):
    """The master, as its default commands see it."""


def default_commands(master: Master) -> dict[str, Handler]:
    """The commands every master answers: the lifecycle, ``restart`` and ``broadcast``."""
    return {
        "start": lambda body: start.handle(master, start.parse(body)),
        "stop": lambda body: stop.handle(master, stop.parse(body)),
        "exit": lambda body: exit.handle(master, exit.parse(body)),
        "graceful": lambda body: graceful.handle(master, graceful.parse(body)),
        "restart": lambda body: restart.handle(master, restart.parse(body)),
        "broadcast": lambda body: broadcast.handle(master, broadcast.parse(body)),
    }


def timeout_error(limit: float) -> Callable[[list[ClientInfo], AckReport], Exception]:
    """The error of an ack wait past ``limit``: who was silent, and the acks so far."""

    def build(silent: list[ClientInfo], partial: AckReport) -> Exception:
        names = ", ".join(c.label() for c in silent)
        return wire_error(
            ErrorCode.TIMEOUT,
            f"no ack within {limit}s from {names}",
            {"silent": [c.id for c in silent], "acks": partial.as_dict()},
        )

    return build


__all__ = ["LIFECYCLE_CHANNELS", "Handler", "Master", "default_commands", "timeout_error"]
