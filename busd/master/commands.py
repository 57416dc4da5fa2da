"""The commands every master answers, and the checks of their arguments.

The lifecycle (``start``, ``stop``, ``exit``, ``graceful``), ``restart`` and
``broadcast``: each handler runs on the master's command thread, takes the
request body as busctl sent it, and answers a map; a bad argument is a
BAD_ARGUMENTS error with one clear line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from busd.core.wire import ErrorCode, wire_error
from busd.master.registry import AckReport, ClientInfo

if TYPE_CHECKING:
    from busd.master.bus import MasterBus

#: Channels whose meaning travels as STATE messages, never as PUBLISH.
LIFECYCLE_CHANNELS = frozenset({"start", "stop", "exit"})

Handler = Callable[[dict[str, Any]], Any]


def default_commands(master: MasterBus) -> dict[str, Handler]:
    """The commands every master answers: the lifecycle, ``restart`` and ``broadcast``."""

    def lifecycle(method: Callable[..., AckReport | None]) -> Handler:
        def handler(body: dict[str, Any]) -> Any:
            report = method(wait=flag(body, "wait"), timeout=number(body, "timeout"))
            return {
                "state": master.state.name,
                "acks": report.as_dict() if report is not None else None,
            }

        return handler

    def restart(body: dict[str, Any]) -> Any:
        master.restart()
        return {"state": master.state.name}

    def broadcast(body: dict[str, Any]) -> Any:
        channel, args, kwargs = broadcast_args(body)
        if flag(body, "wait"):
            report = master.broadcast_and_wait(
                channel, args, kwargs, timeout=number(body, "timeout")
            )
            return {"acks": report.as_dict()}
        master.publish(channel, *args, **kwargs)
        return {"acks": None}

    return {
        "start": lifecycle(master._start),
        "stop": lifecycle(master._stop),
        "exit": lifecycle(master._exit),
        "graceful": lifecycle(master._graceful),
        "restart": restart,
        "broadcast": broadcast,
    }


def timeout_error(limit: float) -> Callable[[list[ClientInfo], AckReport], Exception]:
    def build(silent: list[ClientInfo], partial: AckReport) -> Exception:
        names = ", ".join(c.label() for c in silent)
        return wire_error(
            ErrorCode.TIMEOUT,
            f"no ack within {limit}s from {names}",
            {"silent": [c.id for c in silent], "acks": partial.as_dict()},
        )

    return build


def flag(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise wire_error(ErrorCode.BAD_ARGUMENTS, f"{key!r} must be true or false")
    return value


def number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise wire_error(ErrorCode.BAD_ARGUMENTS, f"{key!r} must be a number of seconds")
    return float(value)


def broadcast_args(body: dict[str, Any]) -> tuple[str, list[Any], dict[str, Any]]:
    channel, args, kwargs = body.get("channel"), body.get("args", []), body.get("kwargs", {})
    if not isinstance(channel, str) or not channel:
        raise wire_error(ErrorCode.BAD_ARGUMENTS, "broadcast needs a 'channel' string")
    if channel in LIFECYCLE_CHANNELS or channel in ("log", "main"):
        raise wire_error(
            ErrorCode.BAD_ARGUMENTS, f"{channel!r} is not broadcast: use the command of that name"
        )
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise wire_error(ErrorCode.BAD_ARGUMENTS, "'args' is a list, 'kwargs' a map")
    if not all(isinstance(k, str) for k in kwargs):
        raise wire_error(ErrorCode.BAD_ARGUMENTS, "'kwargs' keys are strings")
    return channel, args, kwargs
