"""Relay: numbers the master's frames and hands them to the hub, in one lock.

::

    any thread --send/publish/publish_many--> [seq lock: number, encode,
                                               append to the open PublishRun] --> Outbox
                                                     ^ taken (under the lock)      |
                                                     +---------- [busd-hub] <------+

Whoever publishes (the command thread, a listener's thread, a producer) takes
the lock for the time it takes to number the frame and queue it for the hub:
sequence order is send order, and the state a client is left in travels with
each run of frames.  A PUBLISH joins the run queued last while the hub has not
taken it (no queue operation, no wake-up); otherwise it opens a new run, which
is queued and wakes the hub.  A STATE or EVENT goes alone, and closes the run
(a BATCH holds PUBLISH messages only).  So a lone message goes at once, and a burst
reaches the hub as one run, which it sends as BATCH frames.  The lock, the
counter and the open run are this object's alone (the hub takes a run under
the same lock).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from busd.core.errors import ProtocolError
from busd.core.wire import (
    CLOSING_EVENT,
    MAX_MESSAGE_SIZE,
    VERSION,
    Kind,
    encode,
    encode_publish,
    new_packer,
    too_large,
)
from busd.master.hub import PUBLISH_BATCH
from busd.master.hubmsg import PublishRun

if TYPE_CHECKING:
    from busd.master.hub import Hub

_PUBLISH = int(Kind.PUBLISH)


class Relay:
    """The sequence counter of one master epoch, and the hand-off to its hub."""

    def __init__(self, hub: Hub, epoch: int, batch: int = PUBLISH_BATCH) -> None:
        self.hub = hub
        self.epoch = epoch
        self.batch = batch
        self._seq = 0
        self._state = "STOPPED"
        self._lock = threading.Lock()
        self._pack = new_packer().pack
        #: The run queued last, while the hub has not taken it.
        self._run: PublishRun | None = None

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
            # Alone, and after it a new run: a BATCH holds PUBLISH messages only.
            self._run = None
            self.hub.send_pub(frame, seq, self._state)
        return seq

    def publish(self, channel: str, args: Iterable[Any], kwargs: dict[str, Any], ack: Any) -> int:
        """Number and queue one PUBLISH (the hot path: every publish comes here)."""
        if type(args) is not tuple:
            args = list(args)
        lock = self._lock
        lock.acquire()  # not ``with``: this is every publish's path, and twice as quick
        try:
            seq = self._seq + 1
            try:
                # The relay's own packer (used under the lock only); a tuple packs as an array.
                frame = self._pack([VERSION, _PUBLISH, self.epoch, seq, channel, args, kwargs, ack])
            except (TypeError, ValueError, OverflowError) as exc:
                raise ProtocolError(f"cannot encode PUBLISH message: {exc}") from exc
            if len(frame) > MAX_MESSAGE_SIZE:
                raise too_large("PUBLISH", len(frame))
            self._seq = seq
            run = self._run
            if run is not None and not run.taken:
                run.frames.append(frame)
            else:
                run = PublishRun(frame, seq, self._state, lock)
                # A run the closed hub will never take is not kept growing.
                self._run = run if self.hub.send_run(run) else None
        finally:
            lock.release()
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
            self._run = None  # what follows goes after these
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
            self._run = None
            self.hub.close_after(frame, seq, self._state, drain, flush)
