"""What MasterBus.statistics() returns: the bus's state and listeners, the relay's
sequence, the hub's statistics, and the client events that failed."""

from __future__ import annotations

from dataclasses import dataclass

from busd.core.bus import BusStats
from busd.master.hubview import HubStats


@dataclass(frozen=True, eq=False)
class MasterStats(BusStats):
    """A master's statistics (a frozen snapshot that reads as a map): the bus's state
    and listeners, and what follows."""

    #: This master incarnation, and the last sequence number it handed to the hub.
    epoch: int
    seq: int
    hub: HubStats
    #: Client events whose relay or hooks failed (logged; the command thread went on).
    failed_events: int
