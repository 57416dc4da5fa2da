"""``graceful [--wait]``: reload every process on the bus (see :mod:`busd.commands.lifecycle`).

With ``--reload respawn`` the pool replaces its workers instead, and wraps
this command (``busd.pool.commands``): with ``wait`` the reply also waits
until every old worker has exited, and carries ``reload`` (the new workers'
and the old ones' pids), which busctl counts.
"""

from __future__ import annotations

from typing import Any, Protocol

from busd.commands import acks, lifecycle
from busd.commands.acks import Acks
from busd.commands.lifecycle import Args, add_arguments, parse, request
from busd.commands.text import plural

NAME = "graceful"
HELP = "reload every process on the bus (the graceful channel)"


class Host(lifecycle.Stateful, Protocol):
    """The master on its command thread."""

    def _graceful(self, wait: bool = False, timeout: float | None = None) -> Acks | None:
        """Run graceful here and relay it; with ``wait``, until every client acked."""


def handle(host: Host, args: Args) -> dict[str, Any]:
    """Run it; answer the state and the acks."""
    return lifecycle.answer(host, host._graceful(wait=args.wait, timeout=args.timeout))


def render(result: Any) -> str:
    """``graceful: state NAME[; N new workers STARTED, M old workers exited][; acks]``."""
    text = lifecycle.state_line(NAME, result)
    reload = result.get("reload") if isinstance(result, dict) else None
    if isinstance(reload, dict):  # a respawn: new workers STARTED, then the old ones gone
        started, exited = len(reload.get("started") or ()), len(reload.get("exited") or ())
        text += f"; {plural(started, 'new worker')} STARTED, {plural(exited, 'old worker')} exited"
    return acks.counted(result, text)


__all__ = ["HELP", "NAME", "Args", "Host", "add_arguments", "handle", "parse", "render", "request"]
