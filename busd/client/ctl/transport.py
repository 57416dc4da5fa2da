"""How busctl talks to a master: finding it, the Control request, failures as exit statuses.

::

    --endpoint | --runtime-dir/--name | BUSD_* -> control endpoint
        bad endpoint or key file -> 2      no socket, nothing listening -> 3 at once
    Control (DEALER) -> handler(args, control) -> its exit status
        NoMaster (silent within --timeout) -> 3    BusError (busd said no) -> 1
        ZMQError while talking -> 1

Every request is bounded by what is left of ``--timeout`` (:func:`left`).
A queued command is sent at once, never after a ping (a round trip more
each time); only a command still unanswered near the end of --timeout is
followed by a ping, so that the line says which it was::

    command --reply--> its result
        |  nothing until --timeout less a margin
        +--> ping --pong--> "busd at EP answered ping but not CMD ... (still queued or running)"
                  nothing --> "no busd answered at EP within Ts"
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import zmq

from busd.client.ctl.console import EXIT_FAILED, EXIT_NO_MASTER, EXIT_USAGE
from busd.client.ctl.console import error as _error
from busd.client.ctl.console import error_doc as _error_doc
from busd.client.ctl.console import print_json as _print_json
from busd.client.ctl.reach import unreachable
from busd.core.control import Control
from busd.core.endpoints import EndpointError, client_endpoints
from busd.core.errors import BusError, KeyRefused, NoMaster

if TYPE_CHECKING:
    import argparse

    from busd.core.auth import ClientKeys

Handler = Callable[["argparse.Namespace", Control], int]


class Add(Protocol):
    """Adds subcommand ``name`` to busctl's parser, run by ``handler``; its subparser."""

    def __call__(
        self, name: str, handler: Handler | None, help_text: str, **kw: Any
    ) -> argparse.ArgumentParser: ...


def left(args: argparse.Namespace) -> float:
    """Seconds left of ``--timeout`` (never quite 0: a last look is allowed)."""
    return max(0.01, float(args.deadline) - time.monotonic())


def control_endpoint(args: argparse.Namespace) -> str:
    """The control endpoint: --endpoint, else the one found from name and runtime dir."""
    if args.endpoint:
        return str(args.endpoint)
    return client_endpoints(args.name, args.runtime_dir).ctl


def _keys(args: argparse.Namespace) -> ClientKeys | None:
    """CURVE keys from the options or the environment (busd.core.auth loaded only then)."""
    env = os.environ
    if not (
        args.server_key
        or args.curve_secret
        or env.get("BUSD_SERVER_KEY")
        or env.get("BUSD_CURVE_SECRET")
    ):
        return None
    from busd.core.auth import client_keys

    return client_keys(args.server_key, args.curve_secret)


def _key_file_error() -> type[Exception]:
    """busd.core.auth's KeyFileError (an ``except`` looks it up only when something is
    raised, so busctl loads auth for it then, if it has not already)."""
    from busd.core.auth import KeyFileError

    return KeyFileError


def run_remote(args: argparse.Namespace, handler: Handler) -> int:
    """Connect to the master and run ``handler``; its exit status, or the failure's."""
    try:
        endpoint = control_endpoint(args)
        args.curve = _keys(args)
    except (EndpointError, _key_file_error()) as exc:
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
        return failed(args, exc)
    except zmq.ZMQError as exc:
        _error(f"{exc} (talking to {endpoint})")
        return EXIT_FAILED
    finally:
        ctx.destroy(linger=0)


def command(
    args: argparse.Namespace, control: Control, cmd: str, body: dict[str, Any] | None = None
) -> Any:
    """Run a queued command within what is left of --timeout: sent at once, no ping first.

    Only when it is still unanswered at the last :func:`margin` / 2 of
    --timeout does a ping, bounded by what is left, tell a master that is
    not there from one that is still busy with it (or with those before it).
    """
    try:
        return control.call(cmd, body or {}, max(0.01, left(args) - margin(args) / 2))
    except KeyRefused:
        raise
    except NoMaster:
        pass
    ask(args, control, "ping")
    raise NoMaster(
        f"busd at {control.endpoint} answered ping but not {cmd!r} within "
        f"--timeout {args.timeout:g}s: the command may still be queued or "
        "running (give a longer --timeout)"
    )


def ask(args: argparse.Namespace, control: Control, cmd: str) -> Any:
    """A request answered at once (ping, status), within what is left of --timeout."""
    try:
        return control.request(cmd, timeout=left(args))
    except KeyRefused:
        raise
    except NoMaster:
        raise NoMaster(f"no busd answered at {control.endpoint} within {args.timeout:g}s") from None


def margin(args: argparse.Namespace) -> float:
    """What a reply is given of --timeout: the master waits for acks until this is left,
    busctl for the reply until half of it is, and a ping may have the rest."""
    return min(0.5, float(args.timeout) / 10)


def ack_wait(args: argparse.Namespace) -> float:
    """How long the master may wait for acks: what is left of --timeout, less a reply's time."""
    budget = max(0.05, left(args) - margin(args))
    return min(budget, float(args.ack_timeout)) if args.ack_timeout else budget


def failed(args: argparse.Namespace, exc: BusError) -> int:
    """Exit status 1: print what busd said went wrong."""
    code = str(getattr(exc, "code", "") or type(exc).__name__)
    details = getattr(exc, "details", None)
    message = _channel_failures(details) if code == "channel_failures" else str(exc)
    _print_json(args, _error_doc(code, message, details))
    _error(message)
    acks = details.get("acks") if isinstance(details, dict) else None
    from busd.commands.acks import failure_lines  # here: only a failure prints them

    for line in failure_lines(acks):
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


__all__ = [
    "Add",
    "Handler",
    "ack_wait",
    "ask",
    "command",
    "control_endpoint",
    "failed",
    "left",
    "margin",
    "run_remote",
]
