"""busctl's reading commands: ``status``, ``workers``, ``ping`` and ``metrics``.

``status``, ``workers`` and ``ping`` are answered by the master at once;
people and scripts run them most, so this module loads only what they
print with (``busd.commands.status``, ``workers``, ``ping``, ``pools``),
never the queued commands' modules (:mod:`busd.client.ctl.commands`).
Each command's arguments and handler are here together; what it reads
like is written once, in its module of :mod:`busd.commands`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from busd.client.ctl.console import EXIT_OK, dumps
from busd.client.ctl.console import emit as _emit
from busd.client.ctl.transport import Add, command
from busd.commands import ping, pools
from busd.commands import status as status_command
from busd.commands import workers as workers_command
from busd.core.control import Control

if TYPE_CHECKING:
    import argparse


def status(args: argparse.Namespace, control: Control) -> int:
    """``status [POOL]``: the master, its pools, workers and clients."""
    result = control.request("status")
    if args.pool is not None and isinstance(result, dict):
        result = pools.only_pool(result, args.pool)
    text = status_command.render(result) if isinstance(result, dict) else dumps(result)
    _emit(args, result, text)
    return EXIT_OK


def workers(args: argparse.Namespace, control: Control) -> int:
    """``workers [POOL]``: the workers table."""
    if args.pool is not None:
        doc = control.request("status")
        result = pools.only_pool(doc, args.pool)["workers"] if isinstance(doc, dict) else []
    else:
        result = control.request("workers")
    _emit(args, result, workers_command.render(result))
    return EXIT_OK


def metrics(args: argparse.Namespace, control: Control) -> int:
    """``metrics``: the Prometheus text (``--json``: the families)."""
    result = command(args, control, "metrics", {})
    text = result.get("text") if isinstance(result, dict) else None
    families = result.get("families") if isinstance(result, dict) else None
    _emit(args, families, str(text or "").rstrip("\n"))
    return EXIT_OK


def pong(args: argparse.Namespace, control: Control) -> int:
    """``ping``: how long the master took to answer."""
    began = time.perf_counter()
    result = control.request("ping")
    took = (time.perf_counter() - began) * 1000
    _emit(args, result, ping.render(result, took))
    return EXIT_OK


METRICS_HELP = (
    "print every series busd serves with --metrics, the workers' own merged in "
    "(Prometheus text; --json: the families as JSON)"
)

#: How each subcommand of this module is added to busctl's parser, by its name.
SUBCOMMANDS: dict[str, Callable[[Add], object]] = {
    status_command.NAME: lambda add: pools.add_pool_argument(
        add(status_command.NAME, status, status_command.HELP)
    ),
    workers_command.NAME: lambda add: pools.add_pool_argument(
        add(workers_command.NAME, workers, workers_command.HELP)
    ),
    "metrics": lambda add: add("metrics", metrics, METRICS_HELP),
    ping.NAME: lambda add: add(ping.NAME, pong, ping.HELP),
}

__all__ = ["SUBCOMMANDS", "metrics", "pong", "status", "workers"]
