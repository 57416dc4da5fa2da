"""``status``: the master, its workers, its clients and joined hosts (the hub answers it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from busd.commands import clients, pools, workers
from busd.commands.text import cell, duration, percent, size, table

NAME = "status"
HELP = "show the master, its workers and its clients"


def render(status: dict[str, Any]) -> str:
    """What ``busctl status`` shows people: a header, then workers and clients."""
    host = f" on {cell(status['host'])}" if status.get("host") else ""
    ctl = cell(", ".join(str(e) for e in status.get("endpoints", {}).get("ctl") or []))
    header = [
        ("name", cell(status.get("name"))),
        ("state", cell(status.get("state"))),
        ("pid", f"{cell(status.get('pid'))}{host}"),
        ("epoch", f"{cell(status.get('epoch'))} (seq {cell(status.get('seq'))})"),
        ("uptime", duration(status.get("uptime"))),
        ("control", ctl),
    ]
    usage = status.get("master")
    if isinstance(usage, dict) and usage:
        header.append(
            (
                "usage",
                f"cpu {percent(usage.get('cpu_percent'))}, "
                f"rss {size(usage.get('rss'))}, fds {cell(usage.get('fds'))}, "
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
            *(
                ["", pools.pools_table(status["pools"])]
                if len(status.get("pools") or []) > 1
                else []
            ),
            "",
            workers.rows_table(status.get("workers") or []),
            "",
            clients.rows_table(status.get("clients") or []),
            *(["", hosts_table(hosts)] if hosts else []),
        ]
    )


def hosts_table(hosts: Sequence[dict[str, Any]]) -> str:
    """Joined hosts (``busd --join``), one row per worker (or one for a host without)."""
    body = []
    for host in hosts:
        rows = [w for w in host.get("workers") or [] if isinstance(w, dict)] or [{}]
        body += [
            [
                cell(host.get("host")),
                cell(host.get("state")),
                cell(w.get("id")),
                cell(w.get("pid")),
                cell(w.get("state")),
            ]
            for w in rows
        ]
    return "HOSTS\n" + table(["HOST", "LINK", "WORKER", "PID", "STATE"], body)


__all__ = ["HELP", "NAME", "hosts_table", "render"]
