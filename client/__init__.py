"""The worker side of busd: a bus that mirrors a master process."""

from __future__ import annotations

__all__: list[str] = []
