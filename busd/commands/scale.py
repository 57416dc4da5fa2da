"""``scale N|+N|-N``: run N workers from now on, or N more, or N fewer."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Any, Protocol

from busd.commands.checks import Body, bad
from busd.commands.text import cell

NAME = "scale"
HELP = "set or change the number of workers"


@dataclass(frozen=True)
class Args:
    """``amount`` workers, or (``relative``) that many more (fewer when negative)."""

    amount: int
    relative: bool = False


def parse(body: Body) -> Args:
    """``{"n": "4" | "+2" | "-1"}`` (or a number)."""
    text = str(body.get("n", ""))
    try:
        amount = int(text)
    except ValueError:
        raise bad(f"scale takes N, +N or -N, not {text!r}") from None
    return Args(amount, relative=text[:1] in "+-")


class Host(Protocol):
    """The pool on the master's command thread."""

    @property
    def size(self) -> int:
        """How many workers it runs."""

    def scale(self, size: int) -> int:
        """Run ``size`` workers from now on; returns the new size."""


def handle(host: Host, args: Args) -> dict[str, Any]:
    """Scale; answer the new size."""
    size = host.size + args.amount if args.relative else args.amount
    if size < 0:
        raise bad("a pool cannot have fewer than 0 workers")
    return {"size": host.scale(size)}


# -- busctl ---------------------------------------------------------------------


def amount(text: str) -> str:
    """busctl's type for N, +N or -N (sent as given)."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise argparse.ArgumentTypeError(f"expected N, +N or -N, got {text!r}")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``N|+N|-N``."""
    parser.add_argument(
        "n",
        type=amount,
        metavar="N|+N|-N",
        help="the new number of workers, or how many to add (+N) or remove (-N)",
    )


def request(n: str) -> dict[str, Any]:
    """The body busctl sends."""
    return {"n": n}


def render(n: str, result: Any) -> str:
    """``scale N: SIZE workers``."""
    size = result.get("size") if isinstance(result, dict) else None
    return f"scale {n}: {cell(size)} workers"


__all__ = [
    "HELP",
    "NAME",
    "Args",
    "Host",
    "add_arguments",
    "amount",
    "handle",
    "parse",
    "render",
    "request",
]
