"""What ``--metrics`` takes and how it fails, without importing prometheus_client."""

from __future__ import annotations

from busd.core.errors import BusError


class MetricsError(BusError):
    """``--metrics`` cannot listen where it was told."""


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6) as a pair; ValueError when it is not."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


__all__ = ["MetricsError", "parse_address"]
