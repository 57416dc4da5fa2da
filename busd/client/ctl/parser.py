"""busctl's command line: global options, then one subcommand.

Each subcommand is added to the parser by the module that runs it (its
``SUBCOMMANDS``: :mod:`busd.client.ctl.reads`, :mod:`busd.client.ctl.commands`,
:mod:`busd.client.ctl.keygen`), with its own arguments from its module of
:mod:`busd.commands`.  busctl is run often, so it loads only the module of
the subcommand it runs::

    argv --command_named (the global options alone)--> "status"
         --build_parser(only="status")--> global options + status's subparser
         --parse--> args

``-h``, ``--help`` or ``--version`` before the subcommand, or a command line
the scan does not follow, gets the whole parser: its help lists every
subcommand, and its error is the one line it always was.  A usage error is
one line (``busctl CMD: X: message (see busctl CMD --help)``), exit status 2.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from busd.client.ctl.console import EXIT_USAGE
from busd.client.ctl.reach import DEFAULT_WAIT
from busd.client.ctl.transport import Add, Handler
from busd.commands.checks import seconds
from busd.core.control import DEFAULT_TIMEOUT

Subcommands = Mapping[str, Callable[[Add], object]]


def _reads() -> Subcommands:
    from busd.client.ctl.reads import SUBCOMMANDS as reads

    return reads


def _queued() -> Subcommands:
    from busd.client.ctl.commands import SUBCOMMANDS as queued

    return queued


def _keygen() -> Subcommands:
    from busd.client.ctl.keygen import SUBCOMMANDS as keygen

    return keygen


#: Every subcommand, in the order ``busctl --help`` lists them, and how to load
#: the module that adds it (only when busctl runs it, or for the whole parser).
SUBCOMMANDS: dict[str, Callable[[], Subcommands]] = {
    "status": _reads,
    "workers": _reads,
    "metrics": _reads,
    "ping": _reads,
    "wait": _queued,
    "start": _queued,
    "stop": _queued,
    "exit": _queued,
    "graceful": _queued,
    "restart": _queued,
    "publish": _queued,
    "scale": _queued,
    "reload-config": _queued,
    "reopen-logs": _queued,
    "signal": _queued,
    "watch": _queued,
    "top": _queued,
    "keygen": _keygen,
}

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


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: global options, then every subcommand (or ``only`` that one)."""
    parser = _Parser(
        prog="busctl",
        description="Control a running busd master.",
        epilog=EPILOG,
        formatter_class=_formatter,
    )
    parser.add_argument("--version", action=_Version, help="print busctl's version and exit")
    _global_options(parser, suppress=False)
    common = _Parser(add_help=False, formatter_class=_formatter)
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
            formatter_class=_formatter,
            **kw,
        )
        sub.set_defaults(handler=handler)
        return sub

    for name in SUBCOMMANDS if only is None else (only,):
        SUBCOMMANDS[name]()[name](add)
    return parser


def command_named(argv: Sequence[str] | None) -> str | None:
    """The subcommand ``argv`` runs, found past the global options alone, without argparse.

    None when the whole parser is needed: for ``-h``, ``--help``,
    ``--version``, an abbreviated or unknown option before the subcommand,
    or no subcommand (the whole parser reads it as it always did).
    """
    args = sys.argv[1:] if argv is None else list(argv)
    at = 0
    while at < len(args):
        arg = args[at]
        if arg in SUBCOMMANDS:
            return arg
        if arg in _VALUED:
            at += 2
        elif arg in _FLAGS or ("=" in arg and arg.partition("=")[0] in _VALUED):
            at += 1
        else:
            return None
    return None


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; ``publish``'s ARGs may have options between them (``publish ch --json x``).

    ``--timeout`` not given is 5 s, for ``wait`` 30 s.
    """
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "publish" and not any(x.startswith("-") for x in extra):
        from busd.commands.broadcast import json_or_text

        args.args = [*args.args, *(json_or_text(x) for x in extra)]
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


def _formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's formatter (descriptions as written), as wide as the terminal.

    argparse makes one for every argument added, and finds the width with
    ``shutil``, whose import (with ``bz2`` and ``lzma``) takes longer than
    busctl's request: the same width is found here as ``shutil`` finds it.
    """
    return argparse.RawDescriptionHelpFormatter(prog, width=_columns() - 2)


def _columns() -> int:
    """``shutil.get_terminal_size().columns``: $COLUMNS, else stdout's terminal, else 80."""
    columns = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else 0
    if columns > 0:
        return columns
    stdout = sys.__stdout__
    try:
        columns = os.get_terminal_size(stdout.fileno()).columns if stdout else 0
    except (AttributeError, ValueError, OSError):
        return 80
    return columns or 80


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


#: The global options, as :func:`command_named` skips them: with a value, and without.
_VALUED = frozenset(
    {"--name", "--runtime-dir", "--endpoint", "--server-key", "--curve-secret", "--timeout"}
)
_FLAGS = frozenset({"--json"})


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


__all__ = ["EPILOG", "SUBCOMMANDS", "build_parser", "command_named", "parse"]
