"""``workers``: the pool's workers, one row each (the hub answers from the board)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from busd.commands.text import cell, duration, percent, size, table

NAME = "workers"
HELP = "list the pool's workers"

#: Worker columns: header, key, how to show the value.
COLUMNS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("ID", "id", cell),
    ("PID", "pid", cell),
    ("STATE", "state", cell),
    ("RESTARTS", "restarts", cell),
    ("REASON", "reason", cell),
    ("CPU", "cpu_percent", percent),
    ("RSS", "rss", size),
    ("UPTIME", "uptime", duration),
)


def rows_table(workers: Sequence[Any]) -> str:
    """The workers table (only the columns some worker has)."""
    rows = [w for w in workers if isinstance(w, dict)]
    if not rows:
        return "WORKERS: none"
    columns = [c for c in COLUMNS if any(c[1] in w for w in rows)]
    if len({w.get("pool") for w in rows}) > 1:  # several pools: which one each is in
        columns.insert(0, ("POOL", "pool", cell))
    body = [[show(w.get(key)) for _, key, show in columns] for w in rows]
    return "WORKERS\n" + table([c[0] for c in columns], body)


def render(result: Any) -> str:
    """The answer to ``workers`` (a list, or a map holding one) as a table."""
    workers = result.get("workers") if isinstance(result, dict) else result
    return rows_table(workers if isinstance(workers, list) else [])


__all__ = ["COLUMNS", "HELP", "NAME", "render", "rows_table"]
