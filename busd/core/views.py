"""Typed views of the master's broadcast frames (STATE, PUBLISH, EVENT, HEARTBEAT).

:func:`decode_view` decodes one PUB frame with the checks of
:func:`busd.core.wire.decode_broadcast` (the same frames are refused, with the
same ``ProtocolError`` and code) and returns one NamedTuple per kind, read by
name::

    [1, STATE,     epoch, seq, state]                          -> StateMsg
    [1, PUBLISH,   epoch, seq, channel, args, kwargs, ack]     -> PublishMsg
    [1, EVENT,     epoch, seq, name, data]                     -> EventMsg
    [1, HEARTBEAT, epoch, seq, state, interval]                -> HeartbeatMsg

Every view starts with ``epoch`` and ``seq``, both checked integers.  The
decoder also checks a PUBLISH's ``channel`` (text), ``args`` (a list) and
``kwargs`` (a map with text keys); the other fields are what the master sent,
unchecked (typed ``Any``): their reader checks them.  The encoders and the
bytes on the wire are :mod:`busd.core.wire`'s, unchanged (docs/PROTOCOL.md).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from busd.core.wire import Kind, decode_broadcast


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


def decode_view(data: bytes) -> Broadcast:
    """Decode and check one PUB frame; raises ProtocolError as ``decode_broadcast`` does."""
    obj = decode_broadcast(data)
    # The client's hot path: decode_broadcast checked the kind and the arity, so the
    # view is built as _make would, without its classmethod call and length check.
    return _NEW(_VIEWS[obj[1]], obj[2:])


__all__ = [
    "Broadcast",
    "EventMsg",
    "HeartbeatMsg",
    "PublishMsg",
    "StateMsg",
    "decode_view",
]
