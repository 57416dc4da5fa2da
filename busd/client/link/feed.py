"""The stream feeding of a client's link: frames and replies in, the stream's actions out.

::

    [busd-link] sockets --frames (SUB), replay and snapshot replies (DEALER)--> Feed
        Feed --read_frame--> Stream.receive / replayed / state_checked --> [Action, ...]
        Feed performs them: Deliver, Synced --> the dispatcher;  AskReplay, AskStateCheck,
        SendHello, Heartbeat, Closing --> the link's sockets (through :class:`Wire`)

The feed runs in the link thread, which owns it, the stream and the counters
they share; it never touches a socket: what is to be sent goes through
:class:`Wire`, which the link implements.  It logs on the link's logger.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from busd.client.link.complaints import Complaints
from busd.client.link.messages import SNAPSHOT_ID, DeliverTo
from busd.client.link.stream import Stream
from busd.client.link.streamtypes import (
    Action,
    AskReplay,
    AskStateCheck,
    Closing,
    CountLost,
    Deliver,
    Heartbeat,
    ReplayAnswer,
    ReplayBusy,
    ReplayFailed,
    ReplayPart,
    SendHello,
    Synced,
)
from busd.core.control import reply_result
from busd.core.errors import ProtocolError
from busd.core.views import Broadcast, decode_frames, read_frame
from busd.core.wire import Kind, Message, encode


class Wire(Protocol):
    """What the feed asks of the link's sockets (all in the link thread)."""

    def send_now(self, frame: bytes) -> None:
        """Send ``frame`` to the master now (counted, never waited for, if it cannot)."""

    def pong(self) -> None:
        """Send a PONG now."""

    def pong_due(self) -> bool:
        """True if a heartbeat now calls for a PONG."""

    def send_hello(self, subscribe: bool) -> None:
        """Say HELLO."""


class Feed:
    """Feeds one stream what the link reads and performs what the stream returns."""

    def __init__(
        self,
        stream: Stream,
        wire: Wire,
        deliver: DeliverTo,
        stats: collections.Counter[str],
        complaints: Complaints,
        log: logging.Logger,
    ) -> None:
        self.stream = stream
        self.wire = wire
        self.deliver = deliver
        #: The link's counters (the link thread owns them): ``bad_messages``, ``missed``.
        self.stats = stats
        self._complaints = complaints
        self._log = log

    def frames(self, frames: Iterable[bytes], now: float) -> None:
        """Frames read from SUB, in order: decode (counting the bad ones) and feed the stream."""
        msgs: list[Broadcast] = []
        for frame in frames:
            try:
                msgs.append(read_frame(frame))
            except ProtocolError as exc:
                self.stats["bad_messages"] += 1
                self._complaints.warn("bad_message", "bad message from master: %s", exc)
        self.perform(self.stream.receive(msgs, now))

    def perform(self, actions: list[Action]) -> None:
        """Do what the stream asks, in order."""
        for action in actions:
            if type(action) is Deliver:
                self.deliver(action.items)
            elif type(action) is Synced:
                self.deliver([action])
            elif type(action) is Heartbeat:
                if self.wire.pong_due():
                    self.wire.pong()
            elif type(action) is AskReplay:
                ask = {
                    "cmd": "replay",
                    "epoch": action.epoch,
                    "from": action.first,
                    "to": action.last,
                }
                self.wire.send_now(encode(Kind.REQUEST, action.req_id, ask))
            elif type(action) is CountLost:
                self.stats["missed"] += action.count
                self._log.warning(
                    "%d message(s) before seq %d were older than the master's replay "
                    "window: lost; checking the state",
                    action.count,
                    action.next_seq,
                )
            elif type(action) is AskStateCheck:
                self.wire.send_now(encode(Kind.REQUEST, SNAPSHOT_ID, {"cmd": "snapshot"}))
            elif type(action) is SendHello:
                self.wire.send_hello(action.subscribe)
            elif type(action) is Closing:
                self._log.info(
                    "the master is closing; every message up to seq %d arrived", action.seq
                )
                self.wire.pong()  # the master waits for this to close

    def replayed(self, msg: Message, now: float) -> None:
        """The master's answer to the replay ask in flight."""
        repair = self.stream.repair
        assert repair is not None
        answer: ReplayAnswer
        if not msg.items[1] and _code(msg.items[2]) == "busy":
            answer = ReplayBusy()
        else:
            try:
                part = reply_result(msg)
                if part.get("epoch") != self.stream.epoch:
                    raise ProtocolError("a replay of another master incarnation")
                answer = ReplayPart(
                    int(part["first"]),
                    [msg for f in part["frames"] for msg in decode_frames(f)],
                    int(part["lost"]),
                    bool(part.get("more")),
                )
            except Exception as exc:  # noqa: BLE001 - whatever it was, the range is gone
                self._complaints.warn(
                    "replay",
                    "the master could not replay messages %d..%d: %s",
                    repair.next,
                    repair.last,
                    exc,
                )
                answer = ReplayFailed()
        self.perform(self.stream.replayed(msg.req_id, answer, now))

    def state_checked(self, msg: Message) -> None:
        """The master's answer to a state check after a loss."""
        try:
            snap = reply_result(msg)
        except Exception as exc:  # noqa: BLE001 - logged in one line; the next loss asks again
            self._complaints.warn("snapshot", "the master would not give a snapshot: %s", exc)
            self.perform(self.stream.state_checked(None))
            return
        self.perform(self.stream.state_checked(int(snap["seq"]), str(snap["state"])))


def _code(error: Any) -> Any:
    """The ``code`` of an error map from the wire (None if it is not one)."""
    return error.get("code") if isinstance(error, dict) else None


__all__ = ["Feed", "Wire"]
