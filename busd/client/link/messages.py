"""What other threads send a client's link thread, and what it hands the dispatcher.

::

    any thread --Send | Bye | Close--> Outbox --> [busd-link]
    [busd-link] --deliver([Delivered, ...])--> the ClientBus's inbox --> [busd-dispatch]

Every value is a frozen dataclass (the frames delivered are
:mod:`busd.core.views`); the request ids the link reserves for itself are here
too, for the link thread and the stream feeding to agree on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from busd.client.link.streamtypes import Synced
from busd.core.stats import Stats
from busd.core.views import Broadcast

HELLO_ID = 1
#: The request id of the link's own state checks after a loss.
SNAPSHOT_ID = 2
#: Request ids above this are the link's repairs and the bus's requests.
REPLAY_ID = 3


# -- what other threads send the link -------------------------------------------


@dataclass(frozen=True)
class Send:
    """Send one frame to the master (a request, an ack, a pong)."""

    frame: bytes


@dataclass(frozen=True)
class Bye:
    """Say BYE: from now on the link never pongs or joins again."""

    frame: bytes


@dataclass(frozen=True)
class Close:
    """Flush for at most ``linger`` seconds, close the sockets, end the thread."""

    linger: float


LinkMessage = Send | Bye | Close


# -- what the link hands the dispatcher -------------------------------------------


@dataclass(frozen=True)
class Gone:
    """The master is lost, for ``reason``; everything up to ``seq`` of ``epoch`` came first."""

    reason: str
    epoch: int = 0
    seq: int = 0


#: One item the link hands the dispatcher: a relayed message, a snapshot to mirror, a loss.
Delivered = Broadcast | Synced | Gone
#: Hands items to the dispatcher, in order; never refuses.
DeliverTo = Callable[[Sequence[Delivered]], None]


@dataclass(frozen=True, eq=False)
class LinkStats(Stats):
    """A link's counters: where it stands, and what it met on the way."""

    epoch: int
    seq: int
    client_id: int
    #: Messages delivered in order (replayed ones included), and held behind a repair.
    received: int
    held: int
    #: The stream: gaps seen, messages repaired from the replay window, state checks
    #: after a loss, joins again, new master incarnations, repair asks again
    #: (unanswered, or answered busy), stale replay answers.
    gaps: int = 0
    repaired: int = 0
    resyncs: int = 0
    rejoins: int = 0
    new_epochs: int = 0
    repair_retries: int = 0
    repair_busy: int = 0
    stale_replies: int = 0
    #: BATCH frames dropped off the fast path: their messages did not decode as announced.
    bad_batches: int = 0
    #: The link: messages lost for good, bad frames on SUB and DEALER, frames it could
    #: not send at once, welcomes, masters counted lost.
    missed: int = 0
    bad_messages: int = 0
    bad_replies: int = 0
    dropped_sends: int = 0
    welcomes: int = 0
    master_lost: int = 0


class Handover:
    """What the link's stream delivered in one turn of its loop (the link thread's).

    Handed to the dispatcher in one put by :meth:`flush`, last before the
    link waits again: the dispatcher it wakes finds the interpreter free.
    """

    def __init__(self, deliver: DeliverTo) -> None:
        self._deliver = deliver
        self._items: list[Delivered] = []

    def add(self, items: Sequence[Delivered]) -> None:
        """Keep ``items`` for the end of this turn, after what came before them."""
        self._items.extend(items)

    def flush(self) -> None:
        """Hand over everything kept, in order, in one put."""
        if self._items:
            items = self._items[:]
            self._items.clear()
            self._deliver(items)


__all__ = [
    "HELLO_ID",
    "REPLAY_ID",
    "SNAPSHOT_ID",
    "Bye",
    "Close",
    "DeliverTo",
    "Delivered",
    "Gone",
    "Handover",
    "LinkMessage",
    "LinkStats",
    "Send",
]
