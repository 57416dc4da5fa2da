"""Typed views of the master's broadcast frames (STATE, PUBLISH, EVENT, HEARTBEAT).

:func:`decode_view` decodes one PUB frame with the checks of
:func:`busd.core.wire.decode_broadcast` (the same frames are refused, with the
same ``ProtocolError`` and code) and returns one NamedTuple per kind, read by
name::

    [2, STATE,     epoch, seq, state]                          -> StateMsg
    [2, PUBLISH,   epoch, seq, channel, args, kwargs, ack]     -> PublishMsg
    [2, EVENT,     epoch, seq, name, data]                     -> EventMsg
    [2, HEARTBEAT, epoch, seq, state, interval]                -> HeartbeatMsg

:func:`decode_frames` also takes a BATCH, ``[2, BATCH, epoch, first,
[message, ...]]``, and returns its messages' views, in order: one decode
of the whole frame (msgpack's C unpacker), then a check and a view per
message.  :func:`read_frame`, the link's, reads a BATCH only up to its
header: a :class:`BatchMsg` the dispatcher decodes as it runs it.

Every view starts with ``epoch`` and ``seq``, both checked integers.  The
decoder also checks a PUBLISH's ``channel`` (text), ``args`` (a list) and
``kwargs`` (a map with text keys); the other fields are what the master sent,
unchecked (typed ``Any``): their reader checks them.  The encoders and the
bytes on the wire are :mod:`busd.core.wire`'s, unchanged (docs/PROTOCOL.md).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack

from busd.core.wire import (
    MAX_MESSAGE_SIZE,
    VERSION,
    ErrorCode,
    Kind,
    decode_broadcast,
    wire_error,
)


class StateMsg(NamedTuple):
    """The master's state changed to ``state`` (a state's name)."""

    epoch: int
    seq: int
    state: Any


class PublishMsg(NamedTuple):
    """A relayed ``publish(channel, *args, **kwargs)``; ``ack``: the master waits for acks."""

    epoch: int
    seq: int
    channel: str
    args: list[Any]
    kwargs: dict[str, Any]
    ack: Any


class EventMsg(NamedTuple):
    """A busd event (``client_joined``, ``closing``...) with its ``data``."""

    epoch: int
    seq: int
    name: Any
    data: Any


class HeartbeatMsg(NamedTuple):
    """A heartbeat: ``seq`` is the last one used; the master's ``state`` and ``interval``."""

    epoch: int
    seq: int
    state: Any
    interval: Any


class BatchMsg(NamedTuple):
    """PUBLISH messages ``seq`` to ``last`` of one BATCH frame, read up to its header only.

    Whoever runs them decodes them from ``frame`` (from offset ``body``) as it
    goes (:func:`batch_views` decodes them all, checked, at once).
    """

    epoch: int
    seq: int
    last: int
    frame: bytes
    body: int


#: A decoded broadcast frame, dispatched on its type.
Broadcast = StateMsg | PublishMsg | EventMsg | HeartbeatMsg | BatchMsg

_VIEWS: dict[int, type[Broadcast]] = {
    int(Kind.STATE): StateMsg,
    int(Kind.PUBLISH): PublishMsg,
    int(Kind.EVENT): EventMsg,
    int(Kind.HEARTBEAT): HeartbeatMsg,
}


_NEW = tuple.__new__


_BATCH = int(Kind.BATCH)
_PUBLISH = int(Kind.PUBLISH)


def decode_frames(data: bytes) -> list[Broadcast]:
    """The views of one PUB frame: its one message, or every message of a BATCH, in order.

    Raises ProtocolError as ``decode_broadcast`` does; a BATCH with one bad
    message is refused whole (``malformed``).
    """
    obj = decode_broadcast(data)  # a BATCH: every message checked (wire.batch_items)
    if obj[1] != _BATCH:
        return [_NEW(_VIEWS[obj[1]], obj[2:])]
    return [_NEW(PublishMsg, item[2:]) for item in obj[4]]


#: The fewest bytes a PUBLISH takes (an array header and seven one-byte items).
_PUBLISH_MIN = 9


def read_frame(data: bytes) -> Broadcast:
    """One PUB frame as the link reads it: a BATCH up to its header (a :class:`BatchMsg`),
    any other kind decoded and checked as :func:`decode_view` does.

    The messages of a BATCH are decoded once, by whoever runs them: a backlog
    of batches waiting for the dispatcher is bytes, not millions of objects
    for the garbage collector to walk.  Raises ProtocolError.
    """
    if len(data) < 4 or data[2] != _BATCH or data[1] != VERSION or data[0] != 0x95:
        return decode_view(data)
    if len(data) > MAX_MESSAGE_SIZE:
        raise wire_error(ErrorCode.TOO_LARGE, f"{len(data)} bytes, over {MAX_MESSAGE_SIZE}")
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=MAX_MESSAGE_SIZE)
    unpacker.feed(data)
    try:
        unpacker.read_array_header()  # 5 (its first byte, 0x95, was checked)
        unpacker.skip()  # the version
        unpacker.skip()  # the kind
        epoch, first = unpacker.unpack(), unpacker.unpack()
        count = unpacker.read_array_header()
    except Exception as exc:  # msgpack raises many unrelated types
        raise wire_error(ErrorCode.MALFORMED, f"BATCH: a bad header ({exc})") from exc
    body = unpacker.tell()
    if type(epoch) is not int or type(first) is not int:
        raise wire_error(ErrorCode.MALFORMED, "BATCH: ids must be integers")
    if count < 1 or count * _PUBLISH_MIN > len(data) - body:
        raise wire_error(ErrorCode.MALFORMED, f"BATCH: {count} messages can not fit")
    return BatchMsg(epoch, first, first + count - 1, data, body)


def batch_views(batch: BatchMsg) -> list[Broadcast]:
    """Every message of ``batch``, decoded and checked (a ProtocolError refuses it whole)."""
    return decode_frames(batch.frame)


def decode_view(data: bytes) -> Broadcast:
    """Decode and check one PUB frame; raises ProtocolError as ``decode_broadcast`` does."""
    obj = decode_broadcast(data)
    if obj[1] == _BATCH:
        raise wire_error(ErrorCode.MALFORMED, "a BATCH holds several messages: see decode_frames")
    # The client's hot path: decode_broadcast checked the kind and the arity, so the
    # view is built as _make would, without its classmethod call and length check.
    return _NEW(_VIEWS[obj[1]], obj[2:])


__all__ = [
    "BatchMsg",
    "Broadcast",
    "EventMsg",
    "HeartbeatMsg",
    "PublishMsg",
    "StateMsg",
    "batch_views",
    "decode_frames",
    "decode_view",
    "read_frame",
]
