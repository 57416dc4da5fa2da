"""Relay: numbers the master's frames and hands them to the hub, in one lock.

::

    any thread --send/publish/publish_many--> [seq lock: number, encode,
                                               hub.send_pub] --> Outbox --> [busd-hub]

Whoever publishes (the command thread, a listener's thread, a producer) takes
the lock for the time it takes to number the frame and queue it for the hub:
sequence order is send order, and the state a client is left in travels with
each frame.  The lock and the counter are this object's alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from busd.core.wire import CLOSING_EVENT, Kind, encode, encode_publish
from busd.master.hub import PUBLISH_BATCH

if TYPE_CHECKING:
    from busd.master.hub import Hub


class Relay:
    """The sequence counter of one master epoch, and the hand-off to its hub."""

    def __init__(self, hub: Hub, epoch: int, batch: int = PUBLISH_BATCH) -> None:
        self.hub = hub
        self.epoch = epoch
        self.batch = batch
        self._seq = 0
        self._state = "STOPPED"
        self._lock = threading.Lock()

    def snapshot(self) -> tuple[int, str]:
        """The last sequence number and the state it leaves clients in."""
        with self._lock:
            return self._seq, self._state

    def send(self, kind: Kind, *items: Any, state: str | None = None) -> int:
        """Number a frame of ``kind`` and queue it for every client; its seq."""
        with self._lock:
            seq = self._seq + 1
            frame = encode(kind, self.epoch, seq, *items)
            self._seq = seq
            if state is not None:
                self._state = state
            self.hub.send_pub(frame, seq, self._state)
        return seq

    def publish(self, channel: str, args: Iterable[Any], kwargs: dict[str, Any], ack: Any) -> int:
        """Number and queue one PUBLISH (the hot path: every publish comes here)."""
        with self._lock:
            seq = self._seq + 1
            frame = encode_publish(self.epoch, seq, channel, list(args), kwargs, ack)
            self._seq = seq
            self.hub.send_pub(frame, seq, self._state)
        return seq

    def publish_many(self, channel: str, items: Sequence[tuple[Any, ...]]) -> None:
        """Number ``items`` consecutively and queue them in batches, nothing between them.

        Everything is encoded before anything is numbered: a ProtocolError
        leaves the counter and the clients as they were.
        """
        with self._lock:
            first = self._seq + 1
            frames = tuple(
                encode_publish(self.epoch, first + i, channel, list(args), {}, False)
                for i, args in enumerate(items)
            )
            self._seq = first + len(frames) - 1
            for at in range(0, len(frames), self.batch):
                self.hub.send_many(frames[at : at + self.batch], first + at, self._state)

    def close(self, drain: float, flush: float) -> None:
        """Queue the closing EVENT last, and tell the hub to drain for ``drain`` seconds.

        Queued under the lock: a racing publish comes after it and is dropped.
        """
        with self._lock:
            seq = self._seq + 1
            frame = encode(
                Kind.EVENT, self.epoch, seq, CLOSING_EVENT, {"reason": "exit", "drain": drain}
            )
            self._seq = seq
            self.hub.close_after(frame, seq, self._state, drain, flush)
