"""Checks of a command's arguments: on the wire (BAD_ARGUMENTS) and on busctl's command line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from busd.core.errors import BusError
from busd.core.wire import ErrorCode, wire_error

Body = Mapping[str, Any]


def bad(message: str) -> BusError:
    """The BAD_ARGUMENTS error a command raises for ``message`` (one clear line)."""
    return wire_error(ErrorCode.BAD_ARGUMENTS, message)


def flag(body: Body, key: str) -> bool:
    """``body[key]``: true or false (absent: false)."""
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise bad(f"{key!r} must be true or false")
    return value


def number(body: Body, key: str) -> float | None:
    """``body[key]``: a number of seconds, not negative (absent: None)."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise bad(f"{key!r} must be a number of seconds")
    return float(value)


def seconds(text: str) -> float:
    """busctl's type for a positive, finite number of seconds."""
    import argparse  # here: only the parser calls this, and it has argparse loaded

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


__all__ = ["Body", "bad", "flag", "number", "seconds"]
