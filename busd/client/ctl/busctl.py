"""The ``busctl`` command: control a running busd from a shell, a script or a unit.

::

    busctl [--name N] [--runtime-dir D] [--endpoint EP] [--timeout S] [--json] CMD ...

      status [POOL] | workers [POOL] | ping  answered by the master at once
      wait [--for STATE]                     until the master (perhaps not started yet)
                                             and every worker are in STATE
      start | stop | exit [--wait]           lifecycle commands, queued on the master's bus
      graceful [--pool P] [--wait] | restart
      publish CHANNEL [ARG...] [--kw K=V]... [--wait]
      scale [--pool P] N|+N|-N               the pools
      signal SIG [--pool P] [WORKER...]
      reload-config [--wait]                 busd's --config file again, the difference
      metrics                                every series, the workers' own merged in
      top                                    a live view of the pools and their events
      watch [CHANNEL...] [--count N]         follow what the master publishes
      keygen DIR                             CURVE key pairs for tcp endpoints

Exit status: 0 done; 1 busd answered with a failure (its text on stderr);
2 usage; 3 no busd answered within ``--timeout`` (``wait``: not in STATE
within it); 130 interrupted; 141 the
reader of stdout went away (``busctl watch | head -3``).

People and scripts run it often, so it imports only the client side, the
commands (``busd.commands``) and the shared core of ``busd`` (never the
master side, the pool, nor psutil), and of those only what the subcommand
it runs needs: ``busctl status`` loads neither the queued commands, nor
``watch``, ``wait``, ``top`` or ``keygen``, nor ``dataclasses``,
``logging``, ``signal`` or ``socket``.  A queued command is sent at once,
with no ping before it.

The parts: the command line (:mod:`busd.client.ctl.parser`, and for the
plain reads :mod:`busd.client.ctl.quick`, without argparse), talking to
the master and failures as exit statuses (:mod:`busd.client.ctl.transport`),
the commands (:mod:`busd.client.ctl.reads` and :mod:`busd.client.ctl.commands`,
each written once in :mod:`busd.commands`), and output
(:mod:`busd.client.ctl.console`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from busd.client.ctl.console import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE
from busd.client.ctl.console import error as _error
from busd.client.ctl.console import quiet_stdout as _quiet_stdout
from busd.client.ctl.quick import quick_args
from busd.client.ctl.transport import run_remote


def main(argv: Sequence[str] | None = None) -> int:
    """Run busctl on ``argv`` (default: the command line) and return its exit status."""
    args = quick_args(argv)
    if args is None:
        from busd.client.ctl.parser import build_parser, command_named, parse

        parser = build_parser(only=command_named(argv))
        try:
            args = parse(parser, argv)
        except SystemExit as exc:  # a usage error (2), or --help (0)
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    args.deadline = time.monotonic() + args.timeout
    try:
        if args.command == "keygen":
            from busd.client.ctl.keygen import keygen

            return keygen(args)
        return run_remote(args, args.handler)
    except KeyboardInterrupt:
        if args.command != "watch":
            _error("interrupted (a command already sent may still complete)")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE


def __getattr__(name: str) -> Any:
    """``build_parser``, ``parse`` and ``format_status``, still found here, loaded when asked."""
    if name in ("build_parser", "parse"):
        from busd.client.ctl import parser

        return getattr(parser, name)
    if name == "format_status":
        from busd.client.ctl.tables import format_status

        return format_status
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["main"]  # build_parser, parse and format_status: see __getattr__

if __name__ == "__main__":
    sys.exit(main())
