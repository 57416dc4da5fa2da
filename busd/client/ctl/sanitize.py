"""Text from a master, made safe to print on a terminal (see :mod:`busd.commands.text`).

The output of every command is made of it; it lives with the commands so
that the master side could print it too.
"""

from __future__ import annotations

from busd.commands.text import printable

__all__ = ["printable"]
