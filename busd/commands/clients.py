"""``clients``: the master's connected clients (the hub answers it; ``status`` shows them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from busd.commands.text import cell, table

NAME = "clients"


def _heartbeat_age(value: Any) -> str:
    return f"{value:.1f}s ago" if isinstance(value, int | float) else "-"


def rows_table(clients: Sequence[Any]) -> str:
    """The clients table."""
    rows = [c for c in clients if isinstance(c, dict)]
    if not rows:
        return "CLIENTS: none"
    body = [
        [
            cell(c.get("id")),
            cell(c.get("pid")),
            cell(c.get("worker")),
            cell(c.get("state")),
            _heartbeat_age(c.get("last_heartbeat")),
        ]
        for c in rows
    ]
    return "CLIENTS\n" + table(["ID", "PID", "WORKER", "STATE", "LAST-HEARTBEAT"], body)


def render(result: Any) -> str:
    """The answer to ``clients`` (a list of maps) as a table."""
    return rows_table(result if isinstance(result, list) else [])


__all__ = ["NAME", "render", "rows_table"]
