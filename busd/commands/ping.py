"""``ping``: check that the master answers (the hub answers it at once)."""

from __future__ import annotations

from typing import Any

NAME = "ping"
HELP = "check that the master answers"


def render(result: Any, took_ms: float) -> str:
    """``pong from busd pid P (epoch E) in T ms``."""
    if not isinstance(result, dict):
        return "pong"
    return (
        f"pong from busd pid {result.get('pid')} (epoch {result.get('epoch')}) in {took_ms:.2f} ms"
    )


__all__ = ["HELP", "NAME", "render"]
