"""``restart [--wait]``: exit and re-execute the master; its clients follow the new one.

The body is empty (``--wait`` is busctl's own: it watches for the new
master, STARTED with all its workers).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Protocol

from busd.commands import lifecycle
from busd.commands.checks import Body
from busd.commands.text import plural

NAME = "restart"
HELP = "exit and re-execute the master (clients follow)"


@dataclass(frozen=True)
class Args:
    """``restart`` takes no argument."""


def parse(body: Body) -> Args:
    """Any body: nothing in it is read."""
    return Args()


class Host(lifecycle.Stateful, Protocol):
    """The master on its command thread."""

    def restart(self) -> None:
        """Exit, then re-execute this process."""


def handle(host: Host, args: Args) -> dict[str, Any]:
    """Restart; answer the state (EXITING by then)."""
    host.restart()
    return {"state": host.state.name}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--wait``."""
    parser.add_argument(
        "--wait",
        action="store_true",
        help="return when the new master is STARTED with all its workers",
    )


def request() -> dict[str, Any]:
    """The body busctl sends."""
    return {}


def render(result: Any) -> str:
    """``restart: state NAME``."""
    return lifecycle.render(NAME, result)


def render_restarted(status: dict[str, Any]) -> str:
    """With ``--wait``: the new master's pid and epoch, and how many workers it has."""
    workers = status.get("workers") or []
    return (
        f"restart: new master pid {status.get('pid')} (epoch "
        f"{status.get('epoch')}) STARTED with {plural(len(workers), 'worker')}"
    )


__all__ = [
    "HELP",
    "NAME",
    "Args",
    "Host",
    "add_arguments",
    "handle",
    "parse",
    "render",
    "render_restarted",
    "request",
]
