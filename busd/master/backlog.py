"""What the master has handed libzmq and its peers have not taken yet, in bytes.

ZeroMQ bounds a peer's queue by a count of messages (the high-water mark),
not by bytes, and a message may be 1 MiB: a peer that does not read could
make the master hold its high-water mark times 1 MiB.  The hub therefore
sends every reply, and every published frame of :data:`TRACK_MIN` bytes or
more, with a pyzmq ``MessageTracker``: libzmq lets go of a message (the
tracker is done) once it has written it to the peer's socket, so the
trackers not done are exactly the bytes a peer has not taken::

    hub --send(copy=False, track=True)--> libzmq pipe --kernel socket--> peer
         Replies.sent(identity, tracker)    ^ held until written: counted here

:class:`Replies` keeps this per ROUTER peer: a reply that would take one peer
over :data:`PEER_BYTES` is dropped (the peer does not read), and the hub
answers a ``replay`` with ``busy`` while an earlier answer is still unread.
:class:`Published` keeps it for the PUB socket (a big frame sent to several
subscribers is one buffer, shared): while more than its bound is unread, a
big frame goes to the replay window only, and subscribers repair it from
there; one that stopped reading loses what the window no longer holds and
is told the exact count.  Each entry is charged :data:`ENTRY_OVERHEAD`
beyond its length (the tracker and frame objects), so many small unread
replies are bounded too.  Only the hub thread uses these objects.
"""

from __future__ import annotations

import collections
import ctypes
from dataclasses import dataclass
from typing import Any, Protocol

import zmq

from busd.core.stats import Stats

#: The most reply bytes one ROUTER peer may leave unread before replies to it are dropped.
PEER_BYTES = 2 << 20
#: A replay is answered ``busy`` while the asker has more than this unread.
REPLAY_SLACK = 64 << 10
#: Published frames this long or longer are tracked (shorter ones: the count bound holds).
TRACK_MIN = 256
#: Default bytes of tracked published frames left unread before big frames are withheld.
PUB_BYTES = 64 << 20
#: Bytes charged per tracked message beyond its length.
ENTRY_OVERHEAD = 512


@dataclass(frozen=True, eq=False)
class RepliesStats(Stats):
    """Unread reply bytes of the ROUTER's peers."""

    #: Peers with replies libzmq still holds.
    peers: int
    #: Their unread bytes, entry overhead included.
    bytes: int
    #: The bound per peer.
    max_bytes: int


@dataclass(frozen=True, eq=False)
class PublishedStats(Stats):
    """Unread bytes of tracked published frames."""

    #: Bytes some subscriber has not taken yet, entry overhead included.
    bytes: int
    #: The bound before big frames are withheld.
    max_bytes: int
    #: Big frames that went to the replay window only.
    withheld: int


class Tracker(Protocol):
    """What pyzmq's MessageTracker offers that we use."""

    @property
    def done(self) -> bool:
        """True once libzmq has released the message."""


class Replies:
    """Unread reply bytes per ROUTER peer (its routing id)."""

    def __init__(self, max_bytes: int = PEER_BYTES) -> None:
        self.max_bytes = max_bytes
        self._peers: dict[bytes, collections.deque[tuple[Tracker, int]]] = {}
        self._bytes: dict[bytes, int] = {}

    def unread(self, identity: bytes) -> int:
        """Bytes sent to ``identity`` that libzmq still holds (entry overhead included)."""
        queue = self._peers.get(identity)
        if queue is None:
            return 0
        held = self._bytes[identity]
        while queue and queue[0][0].done:
            held -= queue.popleft()[1]
        if not queue:
            del self._peers[identity], self._bytes[identity]
            return 0
        self._bytes[identity] = held
        return held

    def room(self, identity: bytes, size: int) -> bool:
        """True when a reply of ``size`` bytes may go: nothing unread, or it fits the bound."""
        held = self.unread(identity)
        return held == 0 or held + size + ENTRY_OVERHEAD <= self.max_bytes

    def sent(self, identity: bytes, tracker: Tracker, size: int) -> None:
        """Count a reply handed to libzmq."""
        if tracker.done:
            return
        self._peers.setdefault(identity, collections.deque()).append(
            (tracker, size + ENTRY_OVERHEAD)
        )
        self._bytes[identity] = self._bytes.get(identity, 0) + size + ENTRY_OVERHEAD

    def send(self, sock: zmq.Socket[Any], identity: bytes, frame: bytes) -> bool:
        """Send a reply on the ROUTER ``sock``, tracked; False if it was dropped."""
        if not self.room(identity, len(frame)):
            return False
        try:
            tracker = sock.send_multipart([identity, frame], zmq.NOBLOCK, copy=False, track=True)
        except zmq.Again:  # its queue is full (count high-water mark)
            return False
        if tracker is not None:
            self.sent(identity, tracker, len(frame))
        return True

    def sweep(self) -> None:
        """Forget peers whose replies have all been taken (or whose connection closed)."""
        for identity in list(self._peers):
            self.unread(identity)

    def statistics(self) -> RepliesStats:
        """Peers with unread replies, the bytes they leave unread, and the bound."""
        self.sweep()
        return RepliesStats(
            peers=len(self._peers), bytes=sum(self._bytes.values()), max_bytes=self.max_bytes
        )


class Published:
    """Unread bytes of tracked published frames (shared by every subscriber's queue).

    libzmq frees a published frame once the slowest subscriber has taken it,
    and subscribers' queues are first in, first out, so trackers are done in
    the order they were sent: the oldest not done bounds the rest.
    """

    def __init__(self, max_bytes: int = PUB_BYTES) -> None:
        self.max_bytes = max_bytes
        self._queue: collections.deque[tuple[Tracker, int]] = collections.deque()
        self._bytes = 0
        self.withheld = 0

    def unread(self) -> int:
        """Bytes of tracked frames some subscriber has not taken yet."""
        queue = self._queue
        while queue and queue[0][0].done:
            self._bytes -= queue.popleft()[1]
        return self._bytes

    def room(self, size: int) -> bool:
        """True when a frame of ``size`` bytes may go on PUB; else it is counted as withheld."""
        if self.unread() + size + ENTRY_OVERHEAD <= self.max_bytes or not self._queue:
            return True
        self.withheld += 1
        return False

    def send(self, sock: zmq.Socket[Any], frame: bytes) -> None:
        """Publish a frame on ``sock``, tracked, or leave it to repairs (withheld)."""
        if self.room(len(frame)):
            tracker = sock.send(frame, zmq.NOBLOCK, copy=False, track=True)
            if tracker is not None:
                self.sent(tracker, len(frame))

    def sent(self, tracker: Tracker, size: int) -> None:
        """Count a frame handed to libzmq."""
        self._queue.append((tracker, size + ENTRY_OVERHEAD))
        self._bytes += size + ENTRY_OVERHEAD

    def statistics(self) -> PublishedStats:
        """Unread bytes, the bound, and how many big frames went to the window only."""
        return PublishedStats(bytes=self.unread(), max_bytes=self.max_bytes, withheld=self.withheld)


#: glibc's mallopt parameter number for the mmap threshold.
_M_MMAP_THRESHOLD = -3
#: Allocations this large or larger get their own mapping, returned to the system when freed.
MMAP_THRESHOLD = 128 << 10


def pin_mmap_threshold() -> bool:
    """Keep glibc's mmap threshold at :data:`MMAP_THRESHOLD`; True if it took.

    glibc raises the threshold each time a mapped block is freed, so after the
    first big frames go, later ones come from the heap and, once freed, stay
    in the process (a master that held 300 MB for a stopped subscriber kept
    most of it after the subscriber drained).  A fixed threshold stops that:
    every frame of 128 KiB or more is its own mapping, given back when freed.
    """
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):  # not glibc: its allocator decides
        return False
