"""What can go wrong with metrics before prometheus_client is imported."""

from __future__ import annotations

from busd.core.errors import BusError


class MetricsError(BusError):
    """``--metrics`` cannot listen where it was told."""


__all__ = ["MetricsError"]
