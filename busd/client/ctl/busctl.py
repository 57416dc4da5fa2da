"""The ``busctl`` command: control a running busd from a shell, a script or a unit.

::

    busctl [--name N] [--runtime-dir D] [--endpoint EP] [--timeout S] [--json] CMD ...

      status | workers | ping                answered by the master at once
      wait [--for STATE]                     until the master (perhaps not started yet)
                                             and every worker are in STATE
      start | stop | exit [--wait]           lifecycle commands, queued on the master's bus
      graceful [--wait] | restart
      publish CHANNEL [ARG...] [--kw K=V]... [--wait]
      scale N|+N|-N | signal SIG [WORKER...] the worker pool
      watch [CHANNEL...] [--count N]         follow what the master publishes
      keygen DIR                             CURVE key pairs for tcp endpoints

Exit status: 0 done; 1 busd answered with a failure (its text on stderr);
2 usage; 3 no busd answered within ``--timeout`` (``wait``: not in STATE
within it); 130 interrupted; 141 the
reader of stdout went away (``busctl watch | head -3``).

People and scripts run it often, so it imports only ``client`` and the
shared core of ``busd`` (never the master side, the pool, nor psutil).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import zmq

from busd.client.ctl.console import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NO_MASTER,
    EXIT_OK,
    EXIT_USAGE,
)
from busd.client.ctl.console import dumps as _dumps
from busd.client.ctl.console import emit as _emit
from busd.client.ctl.console import error as _error
from busd.client.ctl.console import error_doc as _error_doc
from busd.client.ctl.console import out as _out
from busd.client.ctl.console import print_json as _print_json
from busd.client.ctl.console import quiet_stdout as _quiet_stdout
from busd.client.ctl.keygen import keygen
from busd.client.ctl.tables import cell, format_status, format_workers
from busd.client.ctl.waitcmd import DEFAULT_WAIT, unreachable, wait_command
from busd.client.ctl.waitcmd import add_options as _wait_for_options
from busd.client.ctl.watch import Output, follow, pub_endpoint, wait_restarted
from busd.core.auth import KeyFileError, client_keys
from busd.core.control import DEFAULT_TIMEOUT, Control
from busd.core.endpoints import EndpointError, client_endpoints
from busd.core.errors import BusError, KeyRefused, NoMaster
from busd.core.wire import (
    Kind,
)

_REPLY = frozenset({Kind.REPLY})

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

PUBLISH_EPILOG = """\
Each ARG (and each --kw value) is parsed as JSON when it parses, else taken
as a string: 1 is a number, '"1"' and x are strings, '[1, 2]' is a list.
Options may come anywhere after CHANNEL; put -- before CHANNEL when an
ARG starts with a dash:
  busctl publish --kw user=ann -- reload -1 '"x"'"""

LIFECYCLE_HELP = {
    "start": "start every process on the bus",
    "stop": "stop every process on the bus (they stay, STOPPED)",
    "exit": "stop, then end every process on the bus",
    "graceful": "reload every process on the bus (the graceful channel)",
}

Handler = Callable[[argparse.Namespace, "Control"], int]


# -- the command line -------------------------------------------------------


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

    add("status", _status, "show the master, its workers and its clients")
    add("workers", _workers, "list the pool's workers")
    add("ping", _ping, "check that the master answers")
    _wait_for_options(
        add(
            "wait",
            _wait,
            "wait until the master, even one not started yet, "
            f"and every worker are in a state (default --timeout {DEFAULT_WAIT:g})",
        )
    )
    for name, help_text in LIFECYCLE_HELP.items():
        _wait_options(add(name, _lifecycle, help_text))
    add("restart", _restart, "exit and re-execute the master (clients follow)").add_argument(
        "--wait",
        action="store_true",
        help="return when the new master is STARTED with all its workers",
    )
    _publish_options(
        add("publish", _publish, "publish a channel in every process", epilog=PUBLISH_EPILOG)
    )
    add("scale", _scale, "set or change the number of workers").add_argument(
        "n",
        type=_scale_arg,
        metavar="N|+N|-N",
        help="the new number of workers, or how many to add (+N) or remove (-N)",
    )
    add(
        "reopen-logs",
        _reopen_logs,
        "reopen busd's and every worker's --log-dir files (after logrotate renamed them)",
    )
    sig = add("signal", _signal, "send a signal to workers (default: all of them)")
    sig.add_argument("signal", type=_signal_name, metavar="SIG", help="HUP, SIGHUP or 1")
    sig.add_argument(
        "workers",
        type=_non_negative,
        nargs="*",
        metavar="WORKER",
        help="worker ids (slots) as busctl workers lists them; an id with no "
        "running worker is an error",
    )
    watch = add("watch", _watch, "print what the master publishes, one line each")
    watch.add_argument(
        "channels",
        nargs="*",
        metavar="CHANNEL",
        help="show only these published channels (states and events always)",
    )
    watch.add_argument("--count", type=_positive_int, metavar="N", help="stop after N messages")
    keygen = add("keygen", None, "create CURVE key pairs (server and client) in DIR")
    keygen.add_argument("dir", metavar="DIR", help="where the key files go (made 0700)")
    keygen.add_argument("--force", action="store_true", help="replace existing key files")
    return parser


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
        type=_seconds,
        default=default(None),
        help=f"seconds to wait for an answer (default {DEFAULT_TIMEOUT:g}; wait: {DEFAULT_WAIT:g})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print one JSON document (watch: one per line)",
    )


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", action="store_true", help="wait until every client acked; fail if one failed"
    )
    parser.add_argument(
        "--ack-timeout",
        type=_seconds,
        default=None,
        metavar="S",
        help="how long the master waits for acks (default, and at most: what is left of --timeout)",
    )


def _publish_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("channel", metavar="CHANNEL", help="the channel to publish on")
    parser.add_argument(
        "args",
        nargs="*",
        type=_json_or_text,
        metavar="ARG",
        help="its positional arguments (JSON where they parse)",
    )
    parser.add_argument(
        "--kw",
        action="append",
        type=_keyword,
        default=[],
        metavar="KEY=VALUE",
        help="a keyword argument (repeatable)",
    )
    _wait_options(parser)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


def _non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a worker number: {text!r}")
    return int(text)


def _scale_arg(text: str) -> str:
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise argparse.ArgumentTypeError(f"expected N, +N or -N, got {text!r}")
    return text


def _signal_name(text: str) -> str:
    """``HUP``, ``sighup``, ``SIGHUP`` or ``1`` -> ``HUP``; unknown names are usage errors."""
    try:
        if text.isdigit():
            return signal.Signals(int(text)).name.removeprefix("SIG")
        name = text.upper().removeprefix("SIG")
        return signal.Signals["SIG" + name].name.removeprefix("SIG")
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown signal {text!r}") from None


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _keyword(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY a name, got {text!r}")
    return key, _json_or_text(value)


# -- running ------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run busctl on ``argv`` (default: the command line) and return its exit status."""
    parser = build_parser()
    try:
        args = parse(parser, argv)
    except SystemExit as exc:  # a usage error (2), or --help (0)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    args.deadline = time.monotonic() + args.timeout
    try:
        if args.command == "keygen":
            return keygen(args)
        return _run_remote(args, args.handler)
    except KeyboardInterrupt:
        if args.command != "watch":
            _error("interrupted (a command already sent may still complete)")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; ``publish``'s ARGs may have options between them (``publish ch --json x``).

    ``--timeout`` not given is 5 s, for ``wait`` 30 s.
    """
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "publish" and not any(x.startswith("-") for x in extra):
        args.args = [*args.args, *(_json_or_text(x) for x in extra)]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.timeout is None:
        args.timeout = DEFAULT_WAIT if args.command == "wait" else DEFAULT_TIMEOUT
    return args


def left(args: argparse.Namespace) -> float:
    """Seconds left of ``--timeout`` (never quite 0: a last look is allowed)."""
    return max(0.01, float(args.deadline) - time.monotonic())


def control_endpoint(args: argparse.Namespace) -> str:
    """The control endpoint: --endpoint, else the one found from name and runtime dir."""
    if args.endpoint:
        return str(args.endpoint)
    return client_endpoints(args.name, args.runtime_dir).ctl


def _run_remote(args: argparse.Namespace, handler: Handler) -> int:
    try:
        endpoint = control_endpoint(args)
        args.curve = client_keys(args.server_key, args.curve_secret)
    except (EndpointError, KeyFileError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except NoMaster as exc:  # an unsafe runtime dir found by default
        _print_json(args, _error_doc("no_master", str(exc), None))
        _error(str(exc))
        return EXIT_NO_MASTER
    # wait waits for a socket that may not exist yet.
    why = unreachable(endpoint) if args.command != "wait" else None
    if why is not None:
        _print_json(args, _error_doc("no_master", why, None))
        _error(why)
        return EXIT_NO_MASTER
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        try:
            control = Control(endpoint, args.timeout, context=ctx, curve=args.curve)
        except zmq.ZMQError as exc:
            # Control leaves its socket open when connect() fails: close it while
            # the traceback still holds it, or its __del__ warns.
            ctx.destroy(linger=0)
            _error(f"cannot connect to {endpoint!r}: {exc}")
            return EXIT_USAGE
        return handler(args, control)
    except NoMaster as exc:
        _print_json(args, _error_doc("no_master", str(exc), None))
        _error(str(exc))
        return EXIT_NO_MASTER
    except BusError as exc:
        return _failed(args, exc)
    except zmq.ZMQError as exc:
        _error(f"{exc} (talking to {endpoint})")
        return EXIT_FAILED
    finally:
        ctx.destroy(linger=0)


def _command(
    args: argparse.Namespace, control: Control, cmd: str, body: dict[str, Any] | None = None
) -> Any:
    """Run a queued command within what is left of --timeout (a ping first: is it there?)."""
    _ask(args, control, "ping")
    try:
        return control.call(cmd, body or {}, left(args))
    except NoMaster:
        raise NoMaster(
            f"busd at {control.endpoint} answered ping but not {cmd!r} within "
            f"--timeout {args.timeout:g}s: the command may still be queued or "
            "running (give a longer --timeout)"
        ) from None


def _ask(args: argparse.Namespace, control: Control, cmd: str) -> Any:
    """A request answered at once (ping, status), within what is left of --timeout."""
    try:
        return control.request(cmd, timeout=left(args))
    except KeyRefused:
        raise
    except NoMaster:
        raise NoMaster(f"no busd answered at {control.endpoint} within {args.timeout:g}s") from None


def _ack_wait(args: argparse.Namespace) -> float:
    """How long the master may wait for acks: what is left of --timeout, less a reply's time."""
    budget = max(0.05, left(args) - min(0.5, float(args.timeout) / 10))
    return min(budget, float(args.ack_timeout)) if args.ack_timeout else budget


def _failed(args: argparse.Namespace, exc: BusError) -> int:
    """Exit status 1: print what busd said went wrong."""
    code = str(getattr(exc, "code", "") or type(exc).__name__)
    details = getattr(exc, "details", None)
    message = _channel_failures(details) if code == "channel_failures" else str(exc)
    _print_json(args, _error_doc(code, message, details))
    _error(message)
    acks = details.get("acks") if isinstance(details, dict) else None
    for line in _failure_lines(acks):
        _error(line)
    return EXIT_FAILED


def _channel_failures(details: Any) -> str:
    if not isinstance(details, dict):
        return "listeners failed in the master"
    errors = "; ".join(
        f"{e.get('type')}: {e.get('message')}"
        for e in details.get("errors") or ()
        if isinstance(e, dict)
    )
    return f"{details.get('channel')!s} listeners failed in the master: {errors}"


def _failure_lines(acks: Any) -> list[str]:
    if not isinstance(acks, dict):
        return []
    return [str(line) for line in acks.get("failures") or ()]


# -- the commands ---------------------------------------------------------------


def _status(args: argparse.Namespace, control: Control) -> int:
    result = control.request("status")
    _emit(args, result, format_status(result) if isinstance(result, dict) else _dumps(result))
    return EXIT_OK


def _workers(args: argparse.Namespace, control: Control) -> int:
    result = control.request("workers")
    workers = result.get("workers") if isinstance(result, dict) else result
    _emit(args, result, format_workers(workers if isinstance(workers, list) else []))
    return EXIT_OK


def _ping(args: argparse.Namespace, control: Control) -> int:
    began = time.perf_counter()
    result = control.request("ping")
    took = (time.perf_counter() - began) * 1000
    text = (
        f"pong from busd pid {result.get('pid')} (epoch {result.get('epoch')}) in {took:.2f} ms"
        if isinstance(result, dict)
        else "pong"
    )
    _emit(args, result, text)
    return EXIT_OK


def _wait(args: argparse.Namespace, control: Control) -> int:
    return wait_command(args, control, left)


def _lifecycle(args: argparse.Namespace, control: Control) -> int:
    wait = bool(getattr(args, "wait", False))
    body: dict[str, Any] = {}
    if args.command != "restart":
        body["wait"] = wait
    if wait:
        body["timeout"] = _ack_wait(args)
    result = _command(args, control, args.command, body)
    state = result.get("state") if isinstance(result, dict) else None
    reload = result.get("reload") if isinstance(result, dict) else None
    text = f"{args.command}: state {cell(state)}"
    if isinstance(reload, dict):  # a respawn: new workers STARTED, then the old ones gone
        started, exited = len(reload.get("started") or ()), len(reload.get("exited") or ())
        text += (
            f"; {started} new worker{'s' if started != 1 else ''} STARTED, {exited} old "
            f"worker{'s' if exited != 1 else ''} exited"
        )
    return _report_acks(args, result, text)


def _restart(args: argparse.Namespace, control: Control) -> int:
    """Re-exec the master; with --wait, until the new one is STARTED with all its workers."""
    pub = pub_endpoint(args, control) if args.wait else ""
    before = _ask(args, control, "ping")
    result = _command(args, control, "restart", {})
    state = result.get("state") if isinstance(result, dict) else None
    if not args.wait:
        return _report_acks(args, result, f"restart: state {cell(state)}")
    epoch = before.get("epoch") if isinstance(before, dict) else None
    status = wait_restarted(args, control, pub, epoch, left)
    workers = status.get("workers") or []
    _emit(
        args,
        status,
        f"restart: new master pid {status.get('pid')} (epoch "
        f"{status.get('epoch')}) STARTED with {len(workers)} worker"
        f"{'s' if len(workers) != 1 else ''}",
    )
    return EXIT_OK


def _publish(args: argparse.Namespace, control: Control) -> int:
    body: dict[str, Any] = {
        "channel": args.channel,
        "args": list(args.args),
        "kwargs": dict(args.kw),
        "wait": args.wait,
    }
    if args.wait:
        body["timeout"] = _ack_wait(args)
    result = _command(args, control, "broadcast", body)
    return _report_acks(args, result, f"publish {args.channel}: relayed")


def _report_acks(args: argparse.Namespace, result: Any, text: str) -> int:
    """Print a lifecycle or publish result; 1 when a client failed or was lost."""
    acks = result.get("acks") if isinstance(result, dict) else None
    if isinstance(acks, dict):
        answered = len(acks.get("acks") or [])
        failed = len(acks.get("failures") or [])
        text += f"; {answered} client{'s' if answered != 1 else ''} acked"
        text += f", {failed} failed" if failed else ""
    _emit(args, result, text)
    if not isinstance(acks, dict):
        return EXIT_OK
    for line in _failure_lines(acks):
        _error(line)
    return EXIT_OK if acks.get("ok") is True else EXIT_FAILED


def _scale(args: argparse.Namespace, control: Control) -> int:
    result = _command(args, control, "scale", {"n": args.n})
    size = result.get("size") if isinstance(result, dict) else None
    _emit(args, result, f"scale {args.n}: {cell(size)} workers")
    return EXIT_OK


def _reopen_logs(args: argparse.Namespace, control: Control) -> int:
    result = _command(args, control, "reopen-logs", {})
    where = result.get("reopened") if isinstance(result, dict) else None
    _emit(args, result, f"reopen-logs: {cell(where)}")
    return EXIT_OK


def _signal(args: argparse.Namespace, control: Control) -> int:
    result = _command(args, control, "signal", {"signal": args.signal, "workers": args.workers})
    sent = result.get("workers") if isinstance(result, dict) else None
    whom = ", ".join(str(w) for w in sent) if isinstance(sent, list) and sent else "none"
    _emit(args, result, f"signal {args.signal}: sent to workers {whom}")
    return EXIT_OK


# -- watch --------------------------------------------------------------------


def _watch(args: argparse.Namespace, control: Control) -> int:
    ctl = control.endpoint
    return follow(
        args,
        control,
        Output(_out, _error),
        ctl_path=ctl.removeprefix("ipc://") if ctl.startswith("ipc://") else None,
    )


if __name__ == "__main__":
    sys.exit(main())
