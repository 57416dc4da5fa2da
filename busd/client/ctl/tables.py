"""The tables ``busctl`` prints for people: status, workers, clients."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from busd.client.ctl.sanitize import printable


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n][:2]
    return " ".join(shown)


def _size(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    for unit in ("B", "K", "M", "G"):
        if abs(value) < 1024:
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [list(headers), *rows]
    ]
    return "\n".join(lines)


def _percent(value: Any) -> str:
    return f"{value:.1f}%" if isinstance(value, int | float) else "-"


def cell(value: Any) -> str:
    """A value as a table cell: "-" for nothing; control characters escaped."""
    return "-" if value is None or value == "" else printable(value)


#: Worker columns: header, key, how to show the value.
WORKER_COLUMNS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("ID", "id", cell),
    ("PID", "pid", cell),
    ("STATE", "state", cell),
    ("RESTARTS", "restarts", cell),
    ("REASON", "reason", cell),
    ("CPU", "cpu_percent", _percent),
    ("RSS", "rss", _size),
    ("UPTIME", "uptime", _duration),
)


def format_workers(workers: Sequence[Any]) -> str:
    """The workers table (only the columns some worker has)."""
    rows = [w for w in workers if isinstance(w, dict)]
    if not rows:
        return "WORKERS: none"
    columns = [c for c in WORKER_COLUMNS if any(c[1] in w for w in rows)]
    body = [[show(w.get(key)) for _, key, show in columns] for w in rows]
    return "WORKERS\n" + _table([c[0] for c in columns], body)


def format_clients(clients: Sequence[Any]) -> str:
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
    return "CLIENTS\n" + _table(["ID", "PID", "WORKER", "STATE", "LAST-HEARTBEAT"], body)


def _heartbeat_age(value: Any) -> str:
    return f"{value:.1f}s ago" if isinstance(value, int | float) else "-"


def format_status(status: dict[str, Any]) -> str:
    """What ``busctl status`` shows people: a header, then workers and clients."""
    host = f" on {cell(status['host'])}" if status.get("host") else ""
    ctl = cell(", ".join(str(e) for e in status.get("endpoints", {}).get("ctl") or []))
    header = [
        ("name", cell(status.get("name"))),
        ("state", cell(status.get("state"))),
        ("pid", f"{cell(status.get('pid'))}{host}"),
        ("epoch", f"{cell(status.get('epoch'))} (seq {cell(status.get('seq'))})"),
        ("uptime", _duration(status.get("uptime"))),
        ("control", ctl),
    ]
    usage = status.get("master")
    if isinstance(usage, dict) and usage:
        header.append(
            (
                "usage",
                f"cpu {_percent(usage.get('cpu_percent'))}, "
                f"rss {_size(usage.get('rss'))}, fds {cell(usage.get('fds'))}, "
                f"threads {cell(usage.get('threads'))}",
            )
        )
    logs = status.get("logs")
    if isinstance(logs, dict) and logs.get("full"):
        header.append(
            (
                "logs",
                f"FULL: {cell(logs.get('dir'))} ({cell(logs.get('free'))} "
                "bytes free); output is lost until space returns",
            )
        )
    lines = [f"{key + ':':<9}{value}" for key, value in header]
    hosts = [h for h in status.get("hosts") or [] if isinstance(h, dict)]
    return "\n".join(
        [
            *lines,
            "",
            format_workers(status.get("workers") or []),
            "",
            format_clients(status.get("clients") or []),
            *(["", format_hosts(hosts)] if hosts else []),
        ]
    )


def format_hosts(hosts: Sequence[dict[str, Any]]) -> str:
    """Joined hosts (``busd --join``), one row per worker (or one for a host without)."""
    body = []
    for host in hosts:
        workers = [w for w in host.get("workers") or [] if isinstance(w, dict)] or [{}]
        body += [
            [
                cell(host.get("host")),
                cell(host.get("state")),
                cell(w.get("id")),
                cell(w.get("pid")),
                cell(w.get("state")),
            ]
            for w in workers
        ]
    return "HOSTS\n" + _table(["HOST", "LINK", "WORKER", "PID", "STATE"], body)
