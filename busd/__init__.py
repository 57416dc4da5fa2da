"""busd: a process bus for Python services that run as several processes.

``Bus`` is the in-process state machine (CherryPy wspbus semantics);
``MasterBus`` relays it to worker processes and is loaded lazily, so that
importing the client side never loads the master side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from busd.bus import Bus, State, states
from busd.errors import (
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
    from busd.master import MasterBus

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


def __getattr__(name: str) -> Any:
    if name == "MasterBus":
        from busd.master import MasterBus

        return MasterBus
    raise AttributeError(f"module 'busd' has no attribute {name!r}")
