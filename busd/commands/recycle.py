"""``recycle``: a worker asks to be replaced (``bus.recycle()``), the new one first.

Sent by workers, never by busctl: it has no command line and no output here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from busd.commands.checks import Body, bad

NAME = "recycle"


@dataclass(frozen=True)
class Args:
    """Replace the worker ``pid``, saying ``reason``."""

    pid: int
    reason: str = "asked"


def parse(body: Body) -> Args:
    """``{"pid": int, "reason": str}``."""
    pid = body.get("pid")
    if not isinstance(pid, int):
        raise bad(f"recycle takes a worker's pid, not {pid!r}")
    return Args(pid, str(body.get("reason") or "asked"))


class Recycled(Protocol):
    """The worker queued for recycling."""

    @property
    def slot(self) -> int:
        """Its worker id."""

    @property
    def pid(self) -> int:
        """Its process id."""


class Host(Protocol):
    """The pool on the master's command thread."""

    def recycle(self, pid: int, reason: str) -> Recycled:
        """Queue the worker ``pid`` for a recycle (a new one starts first)."""


def handle(host: Host, args: Args) -> dict[str, Any]:
    """Queue it; answer which worker."""
    worker = host.recycle(args.pid, args.reason)
    return {"worker": worker.slot, "pid": worker.pid, "queued": True}


__all__ = ["NAME", "Args", "Host", "Recycled", "handle", "parse"]
