"""busctl's commands: each sends its request and prints its answer, one line or document.

What each command sends and how its answer reads for people is written
once, in its module of :mod:`busd.commands`; here is only the order of the
requests (a ping first for a queued command) and the exit status.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from busd.client.ctl.console import EXIT_FAILED, EXIT_OK, dumps
from busd.client.ctl.console import emit as _emit
from busd.client.ctl.console import error as _error
from busd.client.ctl.console import out as _out
from busd.client.ctl.transport import ack_wait, ask, command, left
from busd.client.ctl.waitcmd import wait_command
from busd.client.ctl.watch import Output, follow, pub_endpoint, wait_restarted
from busd.commands import (
    acks,
    broadcast,
    exit,
    graceful,
    ping,
    pools,
    restart,
    scale,
    signal,
    start,
    stop,
)
from busd.commands import status as status_command
from busd.commands import workers as workers_command
from busd.commands.lifecycle import request as lifecycle_request
from busd.commands.text import cell
from busd.core.control import Control

#: How each lifecycle command's answer reads, by its name (busctl's and the wire's).
LIFECYCLE: dict[str, Callable[[Any], str]] = {
    start.NAME: start.render,
    stop.NAME: stop.render,
    exit.NAME: exit.render,
    graceful.NAME: graceful.render,
}


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


def wait(args: argparse.Namespace, control: Control) -> int:
    """``wait [--for STATE]``: see :mod:`busd.client.ctl.waitcmd`."""
    return wait_command(args, control, left)


def lifecycle(args: argparse.Namespace, control: Control) -> int:
    """``start``, ``stop``, ``exit``, ``graceful`` ``[--wait]``."""
    body = lifecycle_request(bool(getattr(args, "wait", False)), lambda: ack_wait(args))
    body = pools.with_pool(body, getattr(args, "pool", None))
    result = command(args, control, args.command, body)
    return report(args, result, LIFECYCLE[args.command](result))


def restart_master(args: argparse.Namespace, control: Control) -> int:
    """Re-exec the master; with --wait, until the new one is STARTED with all its workers."""
    pub = pub_endpoint(args, control) if args.wait else ""
    before = ask(args, control, "ping")
    result = command(args, control, restart.NAME, restart.request())
    if not args.wait:
        return report(args, result, restart.render(result))
    epoch = before.get("epoch") if isinstance(before, dict) else None
    status = wait_restarted(args, control, pub, epoch, left)
    _emit(args, status, restart.render_restarted(status))
    return EXIT_OK


def publish(args: argparse.Namespace, control: Control) -> int:
    """``publish CHANNEL [ARG...] [--kw K=V]... [--wait]``."""
    body = broadcast.request(args.channel, args.args, args.kw, args.wait, lambda: ack_wait(args))
    result = command(args, control, broadcast.NAME, body)
    return report(args, result, broadcast.render(args.channel, result))


def report(args: argparse.Namespace, result: Any, text: str) -> int:
    """Print a lifecycle or publish result; 1 when a client failed or was lost."""
    _emit(args, result, text)
    answered = acks.of(result)
    if answered is None:
        return EXIT_OK
    for line in acks.failure_lines(answered):
        _error(line)
    return EXIT_OK if answered.get("ok") is True else EXIT_FAILED


def scale_pool(args: argparse.Namespace, control: Control) -> int:
    """``scale N|+N|-N``."""
    result = command(args, control, scale.NAME, pools.with_pool(scale.request(args.n), args.pool))
    _emit(args, result, scale.render(args.n, result))
    return EXIT_OK


def reopen_logs(args: argparse.Namespace, control: Control) -> int:
    """``reopen-logs``: busd's and every worker's --log-dir files (answered by the pool)."""
    result = command(args, control, "reopen-logs", {})
    where = result.get("reopened") if isinstance(result, dict) else None
    _emit(args, result, f"reopen-logs: {cell(where)}")
    return EXIT_OK


def signal_workers(args: argparse.Namespace, control: Control) -> int:
    """``signal SIG [WORKER...]``."""
    body = pools.with_pool(signal.request(args.signal, args.workers), args.pool)
    result = command(args, control, signal.NAME, body)
    _emit(args, result, signal.render(args.signal, result))
    return EXIT_OK


def reload_config(args: argparse.Namespace, control: Control) -> int:
    """``reload-config [--wait]``: what became of each pool; 1 if they did not start."""
    body = pools.reload_config_request(args.wait, ack_wait(args) if args.wait else None)
    result = command(args, control, pools.RELOAD_CONFIG, body)
    _emit(args, result, pools.render_reload_config(result))
    started = result.get("started") if isinstance(result, dict) else None
    return EXIT_FAILED if started is False else EXIT_OK


def watch(args: argparse.Namespace, control: Control) -> int:
    """``watch [CHANNEL...]``: see :mod:`busd.client.ctl.watch`."""
    ctl = control.endpoint
    return follow(
        args,
        control,
        Output(_out, _error),
        ctl_path=ctl.removeprefix("ipc://") if ctl.startswith("ipc://") else None,
    )


def top(args: argparse.Namespace, control: Control) -> int:
    """``top``: a live view (:mod:`busd.client.ctl.top`, loaded only here: it needs curses)."""
    from busd.client.ctl.top import top as live_view

    return live_view(args, control)


__all__ = [
    "LIFECYCLE",
    "lifecycle",
    "metrics",
    "pong",
    "publish",
    "reload_config",
    "reopen_logs",
    "report",
    "restart_master",
    "scale_pool",
    "signal_workers",
    "status",
    "top",
    "wait",
    "watch",
    "workers",
]
