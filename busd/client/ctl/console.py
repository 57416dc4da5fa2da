"""What busctl prints: one line or one JSON document at a time, and its exit statuses.

Errors go to stderr as ``busctl: message``; with ``--json`` a failure is
also a document ``{"error": {"code", "message", "details"}}`` on stdout.
Each document is one write, so ``busctl status | head -1`` reads it whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from busd.client.ctl.sanitize import printable

if TYPE_CHECKING:
    import argparse

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_MASTER = 3
EXIT_INTERRUPTED = 130
#: The reader of stdout went away (128 + SIGPIPE, as a shell reports it).
EXIT_BROKEN_PIPE = 141


def error(message: str) -> None:
    """``busctl: message`` on stderr, one line (control characters escaped)."""
    print(f"busctl: {printable(message)}", file=sys.stderr, flush=True)


def out(text: str) -> None:
    """One line (or document) on stdout, in one write."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def error_doc(code: str, message: str, details: Any) -> dict[str, Any]:
    """The JSON document of a failure."""
    return {"error": {"code": code, "message": message, "details": details}}


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return repr(value)


def dumps(doc: Any) -> str:
    """One JSON document on one line (bytes as text, anything else by repr)."""
    return json.dumps(doc, default=_jsonable, sort_keys=False)


def print_json(args: argparse.Namespace, doc: Any) -> None:
    """``doc`` as JSON, with --json only."""
    if args.json:
        out(dumps(doc))


def emit(args: argparse.Namespace, doc: Any, text: str) -> None:
    """Print ``doc`` as JSON with --json, else ``text`` (if any) for people.

    Every line of ``text`` is escaped again (its cells already were, with
    their newlines), so no control character reaches the terminal.
    """
    if args.json:
        print_json(args, doc)
    elif text:
        out("\n".join(printable(line) for line in text.split("\n")))


def quiet_stdout() -> None:
    """Point stdout at /dev/null, so the flush at exit after a broken pipe is silent."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NO_MASTER",
    "EXIT_OK",
    "EXIT_USAGE",
    "dumps",
    "emit",
    "error",
    "error_doc",
    "out",
    "print_json",
    "quiet_stdout",
]
