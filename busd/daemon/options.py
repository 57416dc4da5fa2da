"""The values ``busd``'s flags take, and one way to refuse a bad one.

Every flag also reads ``BUSD_<FLAG>``; a bad value from either place is one
line on stderr that names the flag (or the variable) and the form it
expects, and exit status 2, never a traceback::

    busd: -w/--workers: expected a whole number of 0 or more, not 'abc'
    busd: BUSD_WORKERS='abc': expected a whole number of 0 or more
    busd: --listen: expected tcp:HOST:PORT (PORT 0-65535) or unix:PATH, not 'tcp:127.0.0.1'

Every duration is a number of seconds (a fraction is fine) of at most a week,
:data:`MAX_SECONDS`: ``BUSD_HEARTBEAT=1e300`` is refused like any bad value.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from busd.metrics.errors import parse_address

EX_USAGE = 2


NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``prog: message``) and exit 2.

    An option it does not know is named as such before anything else is
    looked at (argparse would first take the mistyped flag's value for
    TARGET and blame TARGET)::

        busd: unrecognized option --wokers (did you mean --workers?)
    """

    def error(self, message: str) -> NoReturn:
        """Print ``prog: message`` (argparse's "argument X:" made "X:") and exit 2."""
        message = re.sub(r"^argument ([^:]+): ", r"\1: ", message)
        self.exit(EX_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        """Refuse an unknown option by name, then parse as argparse does."""
        argv = list(sys.argv[1:] if args is None else args)
        unknown = unknown_option(self, argv)
        if unknown is not None:
            known = [o for o in self._option_string_actions if o.startswith("--")]
            close = difflib.get_close_matches(unknown, known, n=1, cutoff=0.8)
            hint = f"did you mean {close[0]}?" if close else f"see {self.prog} --help"
            self.exit(EX_USAGE, f"{self.prog}: unrecognized option {unknown} ({hint})\n")
        return super().parse_known_args(argv, namespace)


def unknown_option(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """The first option in ``argv`` (up to ``--``) that ``parser`` has no flag for.

    An abbreviation of a long option counts as known (argparse resolves it
    and refuses an ambiguous one itself), as does a negative number (a value).
    """
    known = parser._option_string_actions
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-") or arg == "-" or NEGATIVE_NUMBER.match(arg):
            continue
        name = arg.split("=", 1)[0]
        if name in known:
            continue
        if arg.startswith("--"):
            if parser.allow_abbrev and any(o.startswith(name) for o in known):
                continue
        elif arg[:2] in known:
            continue  # -w2: a short option with its value
        return name
    return None


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default when it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if (
            action.default in (None, False, [], argparse.SUPPRESS)
            or "default" in (action.help or "")
            or "[" in (action.help or "")
        ):
            return action.help
        return super()._get_help_string(action)


def _expect(form: str, check: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: ``check(text)``, or "expected FORM, not TEXT"."""

    def convert(text: str) -> Any:
        try:
            return check(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {form}, not {text!r}") from None

    convert.form = form  # type: ignore[attr-defined]
    convert.__name__ = form
    return convert


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _positive_count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


#: The longest duration any flag takes: a week.  Past it a timer's milliseconds
#: overflow what poll() and ZeroMQ take, and no real timeout is that long.
MAX_SECONDS = 7 * 24 * 3600
#: The largest plain number (--max-rss, in MiB: a tebibyte).
MAX_NUMBER = 1 << 20


def _non_negative_seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value <= MAX_SECONDS:
        raise ValueError(text)
    return value


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= MAX_SECONDS:
        raise ValueError(text)
    return value


def _positive_number(text: str) -> float:
    value = float(text)
    if not 0 < value <= MAX_NUMBER:
        raise ValueError(text)
    return value


def _key_value(text: str) -> str:
    key, sep, _ = text.partition("=")
    if not sep or not key or not key.replace("_", "a").isalnum() or key[0].isdigit():
        raise ValueError(text)
    return text


def _listen(text: str) -> str:
    kind, _, rest = text.partition(":")
    if kind == "unix" and rest:
        return text
    if kind != "tcp":
        raise ValueError(text)
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(text)
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(text)
    return text


def _directory(text: str) -> str:
    path = os.path.abspath(os.path.expanduser(text))
    if not text or not os.path.isdir(path):
        raise ValueError(text)
    return path


def _target(text: str) -> str:
    module, sep, func = text.removeprefix("asgi:").removeprefix("wsgi:").partition(":")
    if not sep or not module or not func:
        raise ValueError(text)
    return text


count = _expect("a whole number of 0 or more", _count)
positive_count = _expect("a whole number of 1 or more", _positive_count)
seconds = _expect(
    f"a positive number of seconds, at most {MAX_SECONDS} (a week)", _positive_seconds
)
non_negative_seconds = _expect(
    f"a number of seconds from 0 to {MAX_SECONDS} (a week)", _non_negative_seconds
)
positive_number = _expect(f"a positive number, at most {MAX_NUMBER}", _positive_number)
key_value = _expect("KEY=VALUE with KEY a variable name", _key_value)
listen_address = _expect("tcp:HOST:PORT (PORT 0-65535) or unix:PATH", _listen)
target = _expect("pkg.module:function", _target)
directory = _expect("an existing directory", _directory)
metrics_address = _expect("HOST:PORT (PORT 0-65535)", lambda text: _metrics_address(text))


def _metrics_address(text: str) -> str:
    parse_address(text)  # ValueError when it is not HOST:PORT
    return text


def env_name(dest: str) -> str:
    """The variable a flag reads: ``worker_timeout`` -> ``BUSD_WORKER_TIMEOUT``."""
    return "BUSD_" + dest.upper()


def check_env(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
    """Refuse (one line, exit 2) a ``BUSD_*`` value its flag would refuse."""
    env = os.environ if environ is None else environ
    for action in parser._actions:
        value = env.get(env_name(action.dest))
        convert = action.type
        if value is None or not callable(convert):
            continue
        if not isinstance(action, argparse._AppendAction):
            parts = [value]
        else:  # as busd splits them: BUSD_ENV by spaces, lists of addresses by commas too
            parts = value.split() if action.dest == "env" else value.replace(",", " ").split()
        for part in parts:
            try:
                convert(part)
            except (argparse.ArgumentTypeError, ValueError) as exc:
                form = getattr(convert, "form", None)
                why = f"expected {form}" if form else str(exc)
                parser.exit(EX_USAGE, f"{parser.prog}: {env_name(action.dest)}={value!r}: {why}\n")


def env_default(dest: str, default: Any = None) -> Any:
    """``BUSD_<DEST>`` as the flag's default (a string: argparse converts it), else ``default``."""
    return os.environ.get(env_name(dest), default)


def die(message: str) -> NoReturn:
    """One line on stderr and exit 2: for a bad flag found after parsing."""
    print(f"busd: {message}", file=sys.stderr)
    raise SystemExit(EX_USAGE)


__all__ = [
    "MAX_NUMBER",
    "MAX_SECONDS",
    "OneLineParser",
    "check_env",
    "count",
    "directory",
    "env_default",
    "key_value",
    "listen_address",
    "non_negative_seconds",
    "positive_count",
    "positive_number",
    "seconds",
    "target",
    "unknown_option",
]
