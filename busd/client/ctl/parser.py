"""busctl's command line: global options, then one subcommand.

Each subcommand's own arguments come from its module in
:mod:`busd.commands` (``add_arguments``), beside the handler that sends it
(:mod:`busd.client.ctl.commands`).  A usage error is one line
(``busctl CMD: X: message (see busctl CMD --help)``), exit status 2.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any, NoReturn

from busd.client.ctl import commands
from busd.client.ctl.console import EXIT_USAGE
from busd.client.ctl.transport import Handler
from busd.client.ctl.waitcmd import DEFAULT_WAIT
from busd.client.ctl.waitcmd import add_options as _wait_for_options
from busd.commands import (
    broadcast,
    exit,
    graceful,
    ping,
    pools,
    restart,
    scale,
    signal,
    start,
    status,
    stop,
    workers,
)
from busd.commands.checks import seconds
from busd.commands.lifecycle import add_arguments as lifecycle_options
from busd.core.control import DEFAULT_TIMEOUT

EPILOG = """\
exit status: 0 done; 1 busd answered with a failure; 2 usage;
3 no busd answered within --timeout (at once when its socket does not
exist or refuses; wait: not in its state within --timeout); 130 interrupted.
--timeout S bounds every command as a whole, --wait included: the master
waits for acks only as long as is left of it (give a longer --timeout for a
slow reload: busctl --timeout 60 graceful --wait). For watch it bounds the
wait for the master (and for a restarted one), not the stream.
The master is found from --endpoint, else --runtime-dir / --name, else the
BUSD_CTL_ENDPOINT, BUSD_RUNTIME_DIR and BUSD_NAME environment variables,
else the default runtime dir."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: global options, then one subcommand."""
    parser = _Parser(
        prog="busctl",
        description="Control a running busd master.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version, help="print busctl's version and exit")
    _global_options(parser, suppress=False)
    common = _Parser(add_help=False)
    _global_options(common, suppress=True)
    subs = parser.add_subparsers(dest="command", metavar="CMD", required=True)

    def add(
        name: str, handler: Handler | None, help_text: str, **kw: Any
    ) -> argparse.ArgumentParser:
        sub = subs.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=help_text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kw,
        )
        sub.set_defaults(handler=handler)
        return sub

    pools.add_pool_argument(add(status.NAME, commands.status, status.HELP))
    pools.add_pool_argument(add(workers.NAME, commands.workers, workers.HELP))
    add(
        "metrics",
        commands.metrics,
        "print every series busd serves with --metrics, the workers' own merged in "
        "(Prometheus text; --json: the families as JSON)",
    )
    add(ping.NAME, commands.pong, ping.HELP)
    _wait_for_options(
        add(
            "wait",
            commands.wait,
            "wait until the master, even one not started yet, "
            f"and every worker are in a state (default --timeout {DEFAULT_WAIT:g})",
        )
    )
    for name, help_text in (
        (start.NAME, start.HELP),
        (stop.NAME, stop.HELP),
        (exit.NAME, exit.HELP),
        (graceful.NAME, graceful.HELP),
    ):
        sub = add(name, commands.lifecycle, help_text)
        lifecycle_options(sub)
        if name == graceful.NAME:
            pools.add_pool_option(sub)
    restart.add_arguments(add(restart.NAME, commands.restart_master, restart.HELP))
    broadcast.add_arguments(
        add(broadcast.COMMAND, commands.publish, broadcast.HELP, epilog=broadcast.EPILOG)
    )
    scale_parser = add(scale.NAME, commands.scale_pool, scale.HELP)
    scale.add_arguments(scale_parser)
    pools.add_pool_option(scale_parser)
    reload_config = add(pools.RELOAD_CONFIG, commands.reload_config, pools.RELOAD_CONFIG_HELP)
    reload_config.add_argument(
        "--wait",
        action="store_true",
        help="until every pool added or changed is STARTED (give a --timeout above "
        "their --startup-timeout)",
    )
    reload_config.set_defaults(ack_timeout=None)
    add(
        "reopen-logs",
        commands.reopen_logs,
        "reopen busd's and every worker's --log-dir files (after logrotate renamed them)",
    )
    signal_parser = add(signal.NAME, commands.signal_workers, signal.HELP)
    signal.add_arguments(signal_parser)
    pools.add_pool_option(signal_parser)
    watch = add("watch", commands.watch, "print what the master publishes, one line each")
    watch.add_argument(
        "channels",
        nargs="*",
        metavar="CHANNEL",
        help="show only these published channels (states and events always)",
    )
    watch.add_argument("--count", type=_positive_int, metavar="N", help="stop after N messages")
    add("top", commands.top, "a live view: the master, its pools and workers, events (q quits)")
    keygen = add("keygen", None, "create CURVE key pairs (server and client) in DIR")
    keygen.add_argument("dir", metavar="DIR", help="where the key files go (made 0700)")
    keygen.add_argument("--force", action="store_true", help="replace existing key files")
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; ``publish``'s ARGs may have options between them (``publish ch --json x``).

    ``--timeout`` not given is 5 s, for ``wait`` 30 s.
    """
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "publish" and not any(x.startswith("-") for x in extra):
        args.args = [*args.args, *(broadcast.json_or_text(x) for x in extra)]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "top" and args.json:
        parser.error("--json: top is a live view, it has no JSON form")
    if args.timeout is None:
        args.timeout = DEFAULT_WAIT if args.command == "wait" else DEFAULT_TIMEOUT
    return args


class _Parser(argparse.ArgumentParser):
    """Errors are one line, ``busctl CMD: X: message (see busctl --help)``, exit 2."""

    def error(self, message: str) -> NoReturn:
        """Print one line naming the option and what it takes; exit 2."""
        message = re.sub(r"^argument ([^:]+): ", r"\1: ", message)
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


class _Version(argparse.Action):
    """``--version``: the installed distribution's version (looked up only when asked)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("busd")
        except PackageNotFoundError:
            text = "unknown (not installed)"
        print(f"busctl {text}", flush=True)
        parser.exit(0)


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--name", metavar="N", default=default(None), help="the master's name")
    parser.add_argument(
        "--runtime-dir",
        metavar="D",
        default=default(None),
        help="the master's runtime dir (holds ctl.sock and pub.sock)",
    )
    parser.add_argument(
        "--endpoint",
        metavar="EP",
        default=default(None),
        help="the master's control endpoint, e.g. tcp://127.0.0.1:7000",
    )
    parser.add_argument(
        "--server-key",
        metavar="FILE",
        default=default(None),
        help="tcp+CURVE: the master's public certificate (or BUSD_SERVER_KEY)",
    )
    parser.add_argument(
        "--curve-secret",
        metavar="FILE",
        default=default(None),
        help="tcp+CURVE: this client's secret certificate, mode 0600 (or BUSD_CURVE_SECRET)",
    )
    parser.add_argument(
        "--timeout",
        metavar="S",
        type=seconds,
        default=default(None),
        help=f"seconds to wait for an answer (default {DEFAULT_TIMEOUT:g}; wait: {DEFAULT_WAIT:g})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print one JSON document (watch: one per line)",
    )


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


__all__ = ["EPILOG", "build_parser", "parse"]
