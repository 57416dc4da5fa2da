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
message.

Every view starts with ``epoch`` and ``seq``, both checked integers.  The
decoder also checks a PUBLISH's ``channel`` (text), ``args`` (a list) and
``kwargs`` (a map with text keys); the other fields are what the master sent,
unchecked (typed ``Any``): their reader checks them.  The encoders and the
bytes on the wire are :mod:`busd.core.wire`'s, unchanged (docs/PROTOCOL.md).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from busd.core.wire import VERSION, ErrorCode, Kind, batch_items, decode_broadcast, wire_error


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


#: A decoded broadcast frame, dispatched on its type.
Broadcast = StateMsg | PublishMsg | EventMsg | HeartbeatMsg

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
    obj = decode_broadcast(data)
    if obj[1] != _BATCH:
        return [_NEW(_VIEWS[obj[1]], obj[2:])]
    epoch, seq, items = obj[2], obj[3], obj[4]
    views: list[Broadcast] = []
    append = views.append
    for item in items:
        # The common case, inline: a PUBLISH of this epoch, numbered on.
        if (
            type(item) is list
            and len(item) == 8
            and item[1] == _PUBLISH
            and item[0] == VERSION
            and item[3] == seq
            and item[2] == epoch
            and type(item[4]) is str
            and type(item[5]) is list
            and type(item[6]) is dict
            and (not item[6] or all(type(k) is str for k in item[6]))
        ):
            append(_NEW(PublishMsg, (epoch, seq, item[4], item[5], item[6], item[7])))
        else:
            break
        seq += 1
    else:
        return views
    # Not only PUBLISHes, or a bad item: every item checked, then viewed.
    return [_NEW(_VIEWS[item[1]], item[2:]) for item in batch_items(obj)]


def decode_view(data: bytes) -> Broadcast:
    """Decode and check one PUB frame; raises ProtocolError as ``decode_broadcast`` does."""
    obj = decode_broadcast(data)
    if obj[1] == _BATCH:
        raise wire_error(ErrorCode.MALFORMED, "a BATCH holds several messages: see decode_frames")
    # The client's hot path: decode_broadcast checked the kind and the arity, so the
    # view is built as _make would, without its classmethod call and length check.
    return _NEW(_VIEWS[obj[1]], obj[2:])


__all__ = [
    "Broadcast",
    "EventMsg",
    "HeartbeatMsg",
    "PublishMsg",
    "StateMsg",
    "decode_frames",
    "decode_view",
]
