"""The worker side of busd: a bus that mirrors a master process.

``connect()`` finds the master (from ``BUSD_*`` environment variables, else
the default runtime dir) and returns a joined :class:`ClientBus`.  Names are
loaded on first use, so ``busctl`` (which needs only ``busd.core.control``)
starts without the bus machinery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from busd.client.bus import ClientBus, connect
    from busd.core.control import Control

__all__ = ["ClientBus", "Control", "connect"]

_HOMES = {
    "ClientBus": "busd.client.bus",
    "connect": "busd.client.bus",
    "Control": "busd.core.control",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'client' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
