"""``start [--wait]``: start every process on the bus.

Shared with the other lifecycle commands: :mod:`busd.commands.lifecycle`.
"""

from __future__ import annotations

from typing import Any, Protocol

from busd.commands import lifecycle
from busd.commands.acks import Acks
from busd.commands.lifecycle import Args, add_arguments, parse, request

NAME = "start"
HELP = "start every process on the bus"


class Host(lifecycle.Stateful, Protocol):
    """The master on its command thread."""

    def _start(self, wait: bool = False, timeout: float | None = None) -> Acks | None:
        """Run the start transition here and relay it; with ``wait``, until every client acked."""


def handle(host: Host, args: Args) -> dict[str, Any]:
    """Run it; answer the state and the acks."""
    return lifecycle.answer(host, host._start(wait=args.wait, timeout=args.timeout))


def render(result: Any) -> str:
    """``start: state NAME[; N clients acked[, M failed]]``."""
    return lifecycle.render(NAME, result)


__all__ = ["HELP", "NAME", "Args", "Host", "add_arguments", "handle", "parse", "render", "request"]
