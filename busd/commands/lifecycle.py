"""What the lifecycle commands (``start``, ``stop``, ``exit``, ``graceful``) share.

Each is ``CMD [--wait] [--ack-timeout S]``: the body ``{"wait": bool,
"timeout": seconds}``, the answer ``{"state": NAME, "acks": report|None}``,
and for people ``CMD: state NAME[; N clients acked[, M failed]]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from busd.commands import acks
from busd.commands.checks import Body, flag, number
from busd.commands.text import cell

#: Channels whose meaning travels as STATE messages, never as PUBLISH.
LIFECYCLE_CHANNELS = frozenset({"start", "stop", "exit"})


@dataclass(frozen=True)
class Args:
    """``wait`` for every client's ack, at most ``timeout`` s (None: the master's ack timeout)."""

    wait: bool = False
    timeout: float | None = None


def parse(body: Body) -> Args:
    """``{"wait": bool, "timeout": seconds}``, both optional."""
    return Args(wait=flag(body, "wait"), timeout=number(body, "timeout"))


class Named(Protocol):
    """A state: its name is what the reply carries."""

    @property
    def name(self) -> str: ...


class Stateful(Protocol):
    """The master, as far as a reply needs it: its state."""

    @property
    def state(self) -> Named: ...


def answer(host: Stateful, report: acks.Acks | None) -> dict[str, Any]:
    """The reply: the master's state now, and the acks waited for (if any)."""
    return {"state": host.state.name, "acks": report.as_dict() if report is not None else None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--wait``, ``--ack-timeout S``."""
    acks.add_wait_options(parser)


def request(wait: bool, ack_wait: Callable[[], float]) -> dict[str, Any]:
    """The body busctl sends; ``ack_wait()`` is how long the master may wait for acks."""
    body: dict[str, Any] = {"wait": wait}
    if wait:
        body["timeout"] = ack_wait()
    return body


def state_line(name: str, result: Any) -> str:
    """``CMD: state NAME``."""
    state = result.get("state") if isinstance(result, dict) else None
    return f"{name}: state {cell(state)}"


def render(name: str, result: Any) -> str:
    """``CMD: state NAME``, then the acks counted when the command waited."""
    return acks.counted(result, state_line(name, result))


__all__ = [
    "LIFECYCLE_CHANNELS",
    "Args",
    "Named",
    "Stateful",
    "add_arguments",
    "answer",
    "parse",
    "render",
    "request",
    "state_line",
]
