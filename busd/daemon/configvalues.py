"""The values of a config file: each key's check, which returns the value as busd holds it.

A check takes what TOML gave (a string, a number, a bool, a list, a table)
and returns the value converted (``workers`` an int, durations floats,
signals numbers, lists tuples), or raises :class:`Refused` with the reason,
in the words of the flag's own check where there is a flag::

    expected a whole number of 0 or more, not 'x'

``busd.daemon.config`` puts the file, the table and the key in front.
"""

from __future__ import annotations

import argparse
import re
import signal
from collections.abc import Callable
from typing import Any

from busd.daemon import options
from busd.pool.ready import Ready

POOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


Check = Callable[[Any], Any]


class Refused(ValueError):
    """A value refused: why, and the part of the value it is about (``env.KEY``)."""

    def __init__(self, reason: str, part: str | None = None) -> None:
        super().__init__(reason)
        self.part = part


def show(value: Any) -> str:
    """A value as TOML writes it, for an error: ``'x'``, ``5``, ``true``, ``[1, 2]``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return repr(value)


def flag_value(convert: Callable[[str], Any], kinds: tuple[type, ...] = (int, float, str)) -> Check:
    """A check by a flag's own type: a number or a string, converted from ``str(value)``."""
    form = getattr(convert, "form", "a value")

    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise Refused(f"expected {form}, not {show(value)}")
        try:
            return convert(str(value))
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise Refused(str(exc)) from None

    return check


def one_of(*choices: str) -> Check:
    """One of ``choices``, a string."""

    def check(value: Any) -> str:
        if value not in choices or not isinstance(value, str):
            raise Refused(f"expected one of {', '.join(map(repr, choices))}, not {show(value)}")
        return value

    return check


def boolean(value: Any) -> bool:
    """A TOML bool."""
    if not isinstance(value, bool):
        raise Refused(f"expected true or false, not {show(value)}")
    return value


def strings(each: Check) -> Check:
    """A list of strings, or one string; each checked."""

    def check(value: Any) -> tuple[Any, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise Refused(f"expected a string or a list of strings, not {show(value)}")
        try:
            return tuple(each(v) for v in items)
        except argparse.ArgumentTypeError as exc:
            raise Refused(str(exc)) from None

    return check


def command(value: Any) -> tuple[str, ...]:
    """A program and its arguments: a non-empty list of strings, the program not empty."""
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) for v in value)
        or not value[0]
    ):
        raise Refused(
            "expected the program and its arguments, a non-empty list of strings "
            f'(["prog", "arg"]), not {show(value)}'
        )
    return tuple(value)


def environment(value: Any) -> tuple[tuple[str, str], ...]:
    """A table of strings, in file order; each name a variable name."""
    if not isinstance(value, dict):
        raise Refused(f'expected a table of strings ({{ KEY = "value" }}), not {show(value)}')
    pairs = []
    for key, text in value.items():
        if not isinstance(text, str):
            raise Refused(f"expected a string, not {show(text)}", part=f"env.{key}")
        try:
            options.key_value(f"{key}={text}")
        except argparse.ArgumentTypeError:
            raise Refused("expected a variable name", part=f"env.{key}") from None
        pairs.append((key, text))
    return tuple(pairs)


def pool_name(value: str) -> str:
    """A pool's name: 1 to 64 of ``A-Z a-z 0-9 _ . -``."""
    if not POOL_NAME.fullmatch(value):
        raise Refused(f"a pool name is 1 to 64 of A-Z a-z 0-9 _ . -, not {value!r}")
    return value


def signal_number(value: Any) -> int:
    """``"HUP"``, ``"SIGHUP"``, ``"hup"`` or a number: a signal this system has."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isdigit():
        number = int(value)
    elif isinstance(value, str):
        name = value.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        member = signal.Signals.__members__.get(name)
        number = None if member is None else int(member)
    if number is None or number not in {int(s) for s in signal.valid_signals()}:
        raise Refused(f'expected a signal ("HUP", "SIGTERM", 15, ...), not {show(value)}')
    return number


def readiness(value: Any) -> Ready:
    """A number of seconds alive, ``"tcp:HOST:PORT"`` or ``"unix:PATH"``."""
    try:
        return Ready.parse(value)
    except ValueError as exc:
        raise Refused(str(exc)) from None


#: Every key a pool table takes and its check, which returns the value as a PoolSpec holds it.
POOL_KEYS: dict[str, Check] = {
    "target": flag_value(options.target, (str,)),
    "command": command,
    "workers": flag_value(options.count),
    "reload": one_of("inplace", "respawn"),
    "spawn": one_of("fork", "exec"),
    "preload": boolean,
    "listen": strings(options.listen_address),
    "env": environment,
    "max_age": flag_value(options.seconds),
    "max_rss": flag_value(options.positive_number),
    "recycle_jitter": flag_value(options.non_negative_seconds),
    "graceful_timeout": flag_value(options.seconds),
    "worker_timeout": flag_value(options.seconds),
    "startup_timeout": flag_value(options.seconds),
    "backoff": flag_value(options.non_negative_seconds),
    "backoff_max": flag_value(options.seconds),
    "flap_limit": flag_value(options.count),
    "flap_window": flag_value(options.seconds),
    "after": strings(pool_name),
    "bus": boolean,
    "ready": readiness,
    "reload_signal": signal_number,
    "stop_signal": signal_number,
}
#: The keys whose unset value is busd's option of the same name.


def flag_argv(action: argparse.Action, value: Any) -> list[str]:
    """One ``[busd]`` value as the flag's arguments (none for a false switch)."""
    flag = max(action.option_strings, key=len)
    if isinstance(action, argparse._StoreTrueAction):
        return [flag] if boolean(value) else []
    if isinstance(action, argparse._AppendAction):
        return [arg for item in strings(str)(value) for arg in flag_arg(action, flag, item)]
    if not isinstance(action, argparse._StoreAction):
        raise Refused(f"{flag} is not an option a file sets")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Refused(f"expected a string or a number, not {show(value)}")
    return flag_arg(action, flag, str(value))


def flag_arg(action: argparse.Action, flag: str, text: str) -> list[str]:
    """``[flag, text]`` once ``text`` passes the flag's type and choices."""
    convert = action.type
    converted: Any = text
    if callable(convert):
        try:
            converted = convert(text)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise Refused(str(exc)) from None
    if action.choices is not None and converted not in action.choices:
        allowed = ", ".join(repr(c) for c in action.choices)
        raise Refused(f"expected one of {allowed}, not {text!r}")
    # A value that looks like a flag stays the flag's value.
    return [f"{flag}={text}"] if text.startswith("-") else [flag, text]
