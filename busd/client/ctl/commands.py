"""busctl's queued commands, ``wait``, ``watch`` and ``top``: each one's arguments and handler.

What each command sends and how its answer reads for people is written
once, in its module of :mod:`busd.commands`; here is how busctl adds it to
its parser, the order of its requests and its exit status.  The reading
commands people run most (``status``, ``workers``, ``ping``, ``metrics``)
are in :mod:`busd.client.ctl.reads`, which loads none of this.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from busd.client.ctl.console import EXIT_FAILED, EXIT_OK
from busd.client.ctl.console import emit as _emit
from busd.client.ctl.console import error as _error
from busd.client.ctl.console import out as _out
from busd.client.ctl.reach import DEFAULT_WAIT
from busd.client.ctl.transport import Add, ack_wait, ask, command, left
from busd.client.ctl.waitcmd import add_options as wait_options
from busd.client.ctl.waitcmd import wait_command
from busd.client.ctl.watch import Output, follow, pub_endpoint, wait_restarted
from busd.commands import (
    acks,
    broadcast,
    exit,
    graceful,
    pools,
    restart,
    scale,
    signal,
    start,
    stop,
)
from busd.commands.lifecycle import add_arguments as lifecycle_options
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
    if not args.wait:
        result = command(args, control, restart.NAME, restart.request())
        return report(args, result, restart.render(result))
    pub = pub_endpoint(args, control)
    before = ask(args, control, "ping")  # the epoch a restarted master no longer has
    command(args, control, restart.NAME, restart.request())
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


def _add_lifecycle(add: Add, name: str, help_text: str) -> None:
    sub = add(name, lifecycle, help_text)
    lifecycle_options(sub)
    if name == graceful.NAME:
        pools.add_pool_option(sub)


def _add_wait(add: Add) -> None:
    help_text = (
        "wait until the master, even one not started yet, "
        f"and every worker are in a state (default --timeout {DEFAULT_WAIT:g})"
    )
    wait_options(add("wait", wait, help_text))


def _add_scale(add: Add) -> None:
    sub = add(scale.NAME, scale_pool, scale.HELP)
    scale.add_arguments(sub)
    pools.add_pool_option(sub)


def _add_reload_config(add: Add) -> None:
    sub = add(pools.RELOAD_CONFIG, reload_config, pools.RELOAD_CONFIG_HELP)
    sub.add_argument(
        "--wait",
        action="store_true",
        help="until every pool added or changed is STARTED (give a --timeout above "
        "their --startup-timeout)",
    )
    sub.set_defaults(ack_timeout=None)


def _add_signal(add: Add) -> None:
    sub = add(signal.NAME, signal_workers, signal.HELP)
    signal.add_arguments(sub)
    pools.add_pool_option(sub)


def _add_watch(add: Add) -> None:
    sub = add("watch", watch, "print what the master publishes, one line each")
    sub.add_argument(
        "channels",
        nargs="*",
        metavar="CHANNEL",
        help="show only these published channels (states and events always)",
    )
    sub.add_argument("--count", type=_positive_int, metavar="N", help="stop after N messages")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


#: How each subcommand of this module is added to busctl's parser, by its name.
SUBCOMMANDS: dict[str, Callable[[Add], object]] = {
    "wait": _add_wait,
    start.NAME: lambda add: _add_lifecycle(add, start.NAME, start.HELP),
    stop.NAME: lambda add: _add_lifecycle(add, stop.NAME, stop.HELP),
    exit.NAME: lambda add: _add_lifecycle(add, exit.NAME, exit.HELP),
    graceful.NAME: lambda add: _add_lifecycle(add, graceful.NAME, graceful.HELP),
    restart.NAME: lambda add: restart.add_arguments(
        add(restart.NAME, restart_master, restart.HELP)
    ),
    broadcast.COMMAND: lambda add: broadcast.add_arguments(
        add(broadcast.COMMAND, publish, broadcast.HELP, epilog=broadcast.EPILOG)
    ),
    scale.NAME: _add_scale,
    pools.RELOAD_CONFIG: _add_reload_config,
    "reopen-logs": lambda add: add(
        "reopen-logs",
        reopen_logs,
        "reopen busd's and every worker's --log-dir files (after logrotate renamed them)",
    ),
    signal.NAME: _add_signal,
    "watch": _add_watch,
    "top": lambda add: add(
        "top", top, "a live view: the master, its pools and workers, events (q quits)"
    ),
}


__all__ = [
    "LIFECYCLE",
    "SUBCOMMANDS",
    "lifecycle",
    "publish",
    "reload_config",
    "reopen_logs",
    "report",
    "restart_master",
    "scale_pool",
    "signal_workers",
    "top",
    "wait",
    "watch",
]
