"""What the commands' output for people is made of: safe text, cells, tables.

Channel names, states, client names and error texts come from other
processes (any client may publish, and a read-only key may name itself).
Printed raw, a control character would reach the operator's terminal: an
escape sequence can clear the screen or move the cursor, a newline can
forge a whole line of ``busctl watch``, a bidi override can reorder what is
shown.  :func:`printable` writes each such character as a visible escape
(``\\n``, ``\\x1b``, ``\\u202e``); everything else, non-ASCII text included,
is left as it is.  ``--json`` output needs none of this: JSON escapes
control characters itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

#: C0 controls, DEL, C1 controls, and the bidi and line-breaking format characters.
UNSAFE = "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
_unsafe: list[re.Pattern[str]] = []  # compiled once, when first needed (busctl runs often)
_NAMED = MappingProxyType({"\n": "\\n", "\r": "\\r", "\t": "\\t"})


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: Any) -> str:
    """``value`` as text with every control and bidi character escaped (one line, inert)."""
    text = value if isinstance(value, str) else str(value)
    if text.isascii() and text.isprintable():  # most text: nothing to escape
        return text
    if not _unsafe:
        _unsafe.append(re.compile(UNSAFE))
    return _unsafe[0].sub(_escape, text)


def cell(value: Any) -> str:
    """A value as a table cell: "-" for nothing; control characters escaped."""
    return "-" if value is None or value == "" else printable(value)


def plural(count: int, noun: str) -> str:
    """``1 worker``, ``2 workers``."""
    return f"{count} {noun}{'s' if count != 1 else ''}"


def duration(seconds: Any) -> str:
    """``12.5s``, ``3m 20s``, ``2d 4h``; "-" for no number."""
    if not isinstance(seconds, int | float):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n][:2]
    return " ".join(shown)


def size(value: Any) -> str:
    """Bytes as ``512B``, ``1.5K``, ``20.0M``; "-" for no number."""
    if not isinstance(value, int | float):
        return "-"
    for unit in ("B", "K", "M", "G"):
        if abs(value) < 1024:
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"


def percent(value: Any) -> str:
    """``12.5%``; "-" for no number."""
    return f"{value:.1f}%" if isinstance(value, int | float) else "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns as wide as their widest cell, two spaces apart, no trailing blanks."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [list(headers), *rows]
    ]
    return "\n".join(lines)


__all__ = ["cell", "duration", "percent", "plural", "printable", "size", "table"]
