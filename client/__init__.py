"""The worker side of busd: a bus that mirrors a master process.

``connect()`` finds the master (from ``BUSD_*`` environment variables, else
the default runtime dir) and returns a joined :class:`ClientBus`.
"""

from __future__ import annotations

from client.bus import ClientBus, connect
from client.control import Control

__all__ = ["ClientBus", "Control", "connect"]
