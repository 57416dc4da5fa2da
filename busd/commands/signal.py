"""``signal SIG [WORKER...]``: send a signal to some workers of the pool, or to all of them."""

from __future__ import annotations

import argparse
import signal
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from busd.commands.checks import Body, bad

NAME = "signal"
HELP = "send a signal to workers (default: all of them)"


@dataclass(frozen=True)
class Args:
    """Send ``sig`` to the workers in slots ``workers`` (none named: every running one)."""

    sig: signal.Signals
    workers: tuple[int, ...] = ()


def parse(body: Body) -> Args:
    """``{"signal": "HUP" | "SIGHUP", "workers": [slot, ...]}``."""
    name = str(body.get("signal", "")).upper().removeprefix("SIG")
    try:
        sig = signal.Signals[f"SIG{name}"]
    except KeyError:
        raise bad(f"unknown signal {name!r}") from None
    wanted = body.get("workers") or []
    if not isinstance(wanted, list) or not all(
        isinstance(w, int) and not isinstance(w, bool) for w in wanted
    ):
        raise bad(f"signal takes a list of worker ids, not {wanted!r}")
    return Args(sig, tuple(wanted))


class Target(Protocol):
    """A running worker."""

    @property
    def slot(self) -> int:
        """Its worker id."""

    @property
    def pid(self) -> int:
        """Its process id."""


W = TypeVar("W", bound=Target)


class Host(Protocol[W]):
    """The pool on the master's command thread."""

    def running(self) -> dict[int, W]:
        """Each slot's current worker, by slot."""

    def signal(self, worker: W, sig: int) -> None:
        """Send ``sig`` to ``worker``."""


def handle(host: Host[W], args: Args) -> dict[str, Any]:
    """Signal the workers named (every running one when none is); answer who got it."""
    running = host.running()
    missing = [w for w in args.workers if w not in running]
    if missing or not running:
        names = ", ".join(str(w) for w in missing)
        have = ", ".join(str(w) for w in sorted(running)) or "none"
        raise bad(
            f"no running worker {names} (running: {have})"
            if missing
            else "no running worker to signal"
        )
    targets = [w for i, w in sorted(running.items()) if not args.workers or i in args.workers]
    for worker in targets:
        host.signal(worker, args.sig)
    return {
        "signal": args.sig.name,
        "workers": [w.slot for w in targets],
        "pids": [w.pid for w in targets],
    }


# -- busctl ---------------------------------------------------------------------


def signal_name(text: str) -> str:
    """``HUP``, ``sighup``, ``SIGHUP`` or ``1`` -> ``HUP``; unknown names are usage errors."""
    try:
        if text.isdigit():
            return signal.Signals(int(text)).name.removeprefix("SIG")
        name = text.upper().removeprefix("SIG")
        return signal.Signals["SIG" + name].name.removeprefix("SIG")
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown signal {text!r}") from None


def worker_id(text: str) -> int:
    """A WORKER: a slot number."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a worker number: {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``SIG [WORKER...]``."""
    parser.add_argument("signal", type=signal_name, metavar="SIG", help="HUP, SIGHUP or 1")
    parser.add_argument(
        "workers",
        type=worker_id,
        nargs="*",
        metavar="WORKER",
        help="worker ids (slots) as busctl workers lists them; an id with no "
        "running worker is an error",
    )


def request(sig: str, workers: list[int]) -> dict[str, Any]:
    """The body busctl sends."""
    return {"signal": sig, "workers": workers}


def render(sig: str, result: Any) -> str:
    """``signal SIG: sent to workers 0, 1`` (or ``none``)."""
    sent = result.get("workers") if isinstance(result, dict) else None
    whom = ", ".join(str(w) for w in sent) if isinstance(sent, list) and sent else "none"
    return f"signal {sig}: sent to workers {whom}"


__all__ = [
    "HELP",
    "NAME",
    "Args",
    "Host",
    "Target",
    "add_arguments",
    "handle",
    "parse",
    "render",
    "request",
    "signal_name",
    "worker_id",
]
