"""Text from a master, made safe to print on a terminal.

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
from types import MappingProxyType
from typing import Any

#: C0 controls, DEL, C1 controls, and the bidi and line-breaking format characters.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
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
    return _UNSAFE.sub(_escape, text)


__all__ = ["printable"]
