"""Errors on the wire: their ``code``, and exceptions to and from ``{code, message, details}``.

Part of the wire protocol (:mod:`busd.core.wire` re-exports every name here);
docs/PROTOCOL.md section 12 lists the codes.
"""

from __future__ import annotations

import enum
from typing import Any

from busd.core.errors import (
    BusError,
    Busy,
    ChannelFailures,
    Forbidden,
    IllegalTransition,
    NoMaster,
    ProtocolError,
    RemoteError,
    WaitTimeout,
)

#: Characters of an exception's text that travel in an error or an ack.
DESCRIBE_LIMIT = 4096


class ErrorCode(str, enum.Enum):
    """The ``code`` of an error on the wire."""

    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    BAD_VERSION = "bad_version"
    UNKNOWN_KIND = "unknown_kind"
    UNKNOWN_CLIENT = "unknown_client"
    UNKNOWN_COMMAND = "unknown_command"
    BAD_ARGUMENTS = "bad_arguments"
    CHANNEL_FAILURES = "channel_failures"
    ILLEGAL_TRANSITION = "illegal_transition"
    TIMEOUT = "timeout"
    NO_MASTER = "no_master"
    FORBIDDEN = "forbidden"
    BUSY = "busy"
    INTERNAL = "internal"


_CODE_CLASSES: dict[ErrorCode, type[BusError]] = {
    ErrorCode.CHANNEL_FAILURES: ChannelFailures,
    ErrorCode.ILLEGAL_TRANSITION: IllegalTransition,
    ErrorCode.TIMEOUT: WaitTimeout,
    ErrorCode.NO_MASTER: NoMaster,
    ErrorCode.FORBIDDEN: Forbidden,
    ErrorCode.BUSY: Busy,
    ErrorCode.INTERNAL: RemoteError,
}


def wire_error(code: ErrorCode, message: str, details: Any = None) -> BusError:
    """Build the exception for ``code``, carrying ``code`` and ``details``."""
    cls = _CODE_CLASSES.get(code, ProtocolError)
    exc = cls(message)
    exc.code = code.value  # type: ignore[attr-defined]
    exc.details = details  # type: ignore[attr-defined]
    return exc


def error_to_wire(exc: BaseException) -> dict[str, Any]:
    """The ``{code, message, details}`` map for an exception."""
    code = getattr(exc, "code", None)
    details = getattr(exc, "details", None)
    if isinstance(exc, ChannelFailures):
        code = ErrorCode.CHANNEL_FAILURES.value
        details = {"channel": exc.channel, "errors": [describe(e) for e in exc.get_instances()]}
    elif code is None or not isinstance(code, str):
        code = _code_for(exc).value
    if details is None:
        details = {"type": type(exc).__name__}
    return {"code": code, "message": str(exc) or type(exc).__name__, "details": details}


def _code_for(exc: BaseException) -> ErrorCode:
    for code, cls in _CODE_CLASSES.items():
        if cls is not RemoteError and isinstance(exc, cls):
            return code
    if isinstance(exc, ProtocolError):
        return ErrorCode.MALFORMED
    return ErrorCode.INTERNAL


def describe(exc: BaseException) -> dict[str, str]:
    """A listener failure as ``{type, message}``."""
    return {"type": type(exc).__name__, "message": str(exc)[:DESCRIBE_LIMIT]}


def error_from_wire(data: Any) -> BusError:
    """Rebuild the exception a ``{code, message, details}`` map describes."""
    if not isinstance(data, dict):
        return wire_error(ErrorCode.INTERNAL, f"malformed error {data!r}")
    try:
        code = ErrorCode(data.get("code"))
    except ValueError:
        code = ErrorCode.INTERNAL
    message = str(data.get("message", ""))
    details = data.get("details")
    if code is ErrorCode.CHANNEL_FAILURES:
        errors = details.get("errors", []) if isinstance(details, dict) else []
        channel = details.get("channel") if isinstance(details, dict) else None
        exc: BusError = ChannelFailures(
            channel=channel,
            exceptions=[
                RemoteError(f"{e.get('type')}: {e.get('message')}")
                for e in errors
                if isinstance(e, dict)
            ],
        )
        exc.code = code.value  # type: ignore[attr-defined]
        exc.details = details  # type: ignore[attr-defined]
        return exc
    return wire_error(code, message, details)
