"""``broadcast`` (busctl's ``publish CHANNEL [ARG...] [--kw K=V]... [--wait]``).

Publishes a channel on the master's bus and in every client; with ``wait``,
until every client ran its listeners (their failures make busctl exit 1).
The lifecycle channels, ``log`` and ``main`` are not broadcast: each has
its own command, or is the master's alone.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from busd.commands import acks
from busd.commands.acks import Acks
from busd.commands.checks import Body, bad, flag, number
from busd.commands.lifecycle import LIFECYCLE_CHANNELS

NAME = "broadcast"
#: busctl's name for it.
COMMAND = "publish"
HELP = "publish a channel in every process"
EPILOG = """\
Each ARG (and each --kw value) is parsed as JSON when it parses, else taken
as a string: 1 is a number, '"1"' and x are strings, '[1, 2]' is a list.
Options may come anywhere after CHANNEL; put -- before CHANNEL when an
ARG starts with a dash:
  busctl publish --kw user=ann -- reload -1 '"x"'"""


@dataclass(frozen=True)
class Args:
    """Publish ``channel(*args, **kwargs)``; ``wait`` at most ``timeout`` s for the acks."""

    channel: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] | None = None
    wait: bool = False
    timeout: float | None = None


def parse(body: Body) -> Args:
    """``{"channel", "args": [...], "kwargs": {...}, "wait", "timeout"}``."""
    channel, args, kwargs = body.get("channel"), body.get("args", []), body.get("kwargs", {})
    if not isinstance(channel, str) or not channel:
        raise bad("broadcast needs a 'channel' string")
    if channel in LIFECYCLE_CHANNELS or channel in ("log", "main"):
        raise bad(f"{channel!r} is not broadcast: use the command of that name")
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise bad("'args' is a list, 'kwargs' a map")
    if not all(isinstance(k, str) for k in kwargs):
        raise bad("'kwargs' keys are strings")
    wait = flag(body, "wait")
    timeout = number(body, "timeout") if wait else None
    return Args(channel, tuple(args), dict(kwargs), wait, timeout)


class Host(Protocol):
    """The master on its command thread."""

    def publish(self, channel: str, *args: Any, **kwargs: Any) -> Any:
        """Publish here and relay to every client."""

    def broadcast_and_wait(
        self,
        channel: str,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Acks:
        """Publish everywhere and wait until every client ran its listeners."""


def handle(host: Host, args: Args) -> dict[str, Any]:
    """Publish; answer the acks waited for (None without ``wait``)."""
    kwargs = dict(args.kwargs or {})
    if args.wait:
        report = host.broadcast_and_wait(
            args.channel, list(args.args), kwargs, timeout=args.timeout
        )
        return {"acks": report.as_dict()}
    host.publish(args.channel, *args.args, **kwargs)
    return {"acks": None}


# -- busctl ---------------------------------------------------------------------


def json_or_text(text: str) -> Any:
    """An ARG: JSON where it parses, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def keyword(text: str) -> tuple[str, Any]:
    """``--kw KEY=VALUE``: KEY a name, VALUE as an ARG."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY a name, got {text!r}")
    return key, json_or_text(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``CHANNEL [ARG...] [--kw KEY=VALUE]... [--wait] [--ack-timeout S]``."""
    parser.add_argument("channel", metavar="CHANNEL", help="the channel to publish on")
    parser.add_argument(
        "args",
        nargs="*",
        type=json_or_text,
        metavar="ARG",
        help="its positional arguments (JSON where they parse)",
    )
    parser.add_argument(
        "--kw",
        action="append",
        type=keyword,
        default=[],
        metavar="KEY=VALUE",
        help="a keyword argument (repeatable)",
    )
    acks.add_wait_options(parser)


def request(
    channel: str,
    args: Iterable[Any],
    kwargs: Iterable[tuple[str, Any]],
    wait: bool,
    ack_wait: Callable[[], float],
) -> dict[str, Any]:
    """The body busctl sends; ``ack_wait()`` is how long the master may wait for acks."""
    body: dict[str, Any] = {
        "channel": channel,
        "args": list(args),
        "kwargs": dict(kwargs),
        "wait": wait,
    }
    if wait:
        body["timeout"] = ack_wait()
    return body


def render(channel: str, result: Any) -> str:
    """``publish CHANNEL: relayed[; N clients acked[, M failed]]``."""
    return acks.counted(result, f"publish {channel}: relayed")


__all__ = [
    "COMMAND",
    "EPILOG",
    "HELP",
    "NAME",
    "Args",
    "Host",
    "add_arguments",
    "handle",
    "json_or_text",
    "keyword",
    "parse",
    "render",
    "request",
]
