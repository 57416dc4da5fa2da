"""busd: a process bus for Python services that run as several processes.

``Bus`` is the in-process state machine (CherryPy wspbus semantics);
``MasterBus`` relays it to worker processes.  Both are loaded on first use,
so that importing the client side never loads the master side and
``busctl`` (which needs only the wire format) starts quickly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from busd.core.errors import (
    AlreadyRunning,
    BusError,
    ChannelFailures,
    IllegalTransition,
    MasterLost,
    NoMaster,
    ProtocolError,
    RemoteError,
    WaitTimeout,
)

if TYPE_CHECKING:
    from busd.core.bus import Bus, State, states
    from busd.master.bus import MasterBus

__all__ = [
    "AlreadyRunning",
    "Bus",
    "BusError",
    "ChannelFailures",
    "IllegalTransition",
    "MasterBus",
    "MasterLost",
    "NoMaster",
    "ProtocolError",
    "RemoteError",
    "State",
    "WaitTimeout",
    "states",
]

__version__ = "0.1.0"


_HOMES = {
    "Bus": "busd.core.bus",
    "State": "busd.core.bus",
    "states": "busd.core.bus",
    "MasterBus": "busd.master.bus",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'busd' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
