"""The clients' acks a command may wait for: busctl's ``--wait`` and what it prints of them.

A lifecycle command or a publish with ``wait`` answers ``{"acks": report}``:
the clients that acked, the failures (one line each), ``ok``.  busctl prints
how many acked and failed, then each failure on stderr, and exits 1 unless
``ok`` is true.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from busd.commands.checks import seconds
from busd.commands.text import plural

if TYPE_CHECKING:
    import argparse


class Acks(Protocol):
    """The master's report of the acks it waited for."""

    def as_dict(self) -> dict[str, Any]:
        """A plain map for the reply (``acks``, ``failures``, ``ok``, ...)."""


def add_wait_options(parser: argparse.ArgumentParser) -> None:
    """``--wait`` and ``--ack-timeout S``."""
    parser.add_argument(
        "--wait", action="store_true", help="wait until every client acked; fail if one failed"
    )
    parser.add_argument(
        "--ack-timeout",
        type=seconds,
        default=None,
        metavar="S",
        help="how long the master waits for acks (default, and at most: what is left of --timeout)",
    )


def of(result: Any) -> dict[str, Any] | None:
    """The acks map of a command's result (None: it did not wait)."""
    acks = result.get("acks") if isinstance(result, dict) else None
    return acks if isinstance(acks, dict) else None


def counted(result: Any, text: str) -> str:
    """``text``, then ``; N clients acked, M failed`` when the command waited."""
    acks = of(result)
    if acks is None:
        return text
    failed = len(acks.get("failures") or [])
    text += f"; {plural(len(acks.get('acks') or []), 'client')} acked"
    return text + (f", {failed} failed" if failed else "")


def failure_lines(acks: Any) -> list[str]:
    """The failures of an acks map, one line each."""
    if not isinstance(acks, dict):
        return []
    return [str(line) for line in acks.get("failures") or ()]


__all__ = ["Acks", "add_wait_options", "counted", "failure_lines", "of"]
