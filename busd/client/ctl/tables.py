"""The tables ``busctl`` prints for people: status, workers, clients, joined hosts.

Each is written once, in its command's module of :mod:`busd.commands`.
"""

from __future__ import annotations

from busd.commands.clients import rows_table as format_clients
from busd.commands.status import hosts_table as format_hosts
from busd.commands.status import render as format_status
from busd.commands.text import cell
from busd.commands.workers import COLUMNS as WORKER_COLUMNS
from busd.commands.workers import rows_table as format_workers

__all__ = [
    "WORKER_COLUMNS",
    "cell",
    "format_clients",
    "format_hosts",
    "format_status",
    "format_workers",
]
