"""busd.core.views: the typed views of the master's broadcast frames."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from busd.core import wire
from busd.core.errors import ProtocolError
from busd.core.views import EventMsg, HeartbeatMsg, PublishMsg, StateMsg, decode_view
from busd.core.wire import BROADCAST_KINDS, Kind
from tests.fuzz.frames import frames

EPOCH = 0x5F3A9C21B7E4


def test_each_kind_is_read_by_name() -> None:
    assert decode_view(wire.encode(Kind.STATE, EPOCH, 7, "STARTED")) == StateMsg(
        epoch=EPOCH, seq=7, state="STARTED"
    )
    publish = decode_view(wire.encode_publish(EPOCH, 8, "reload", ["/etc/a", 2], {"f": 1}, True))
    assert type(publish) is PublishMsg
    assert (publish.channel, publish.args, publish.kwargs, publish.ack) == (
        "reload",
        ["/etc/a", 2],
        {"f": 1},
        True,
    )
    event = decode_view(wire.encode(Kind.EVENT, EPOCH, 9, "closing", {"reason": "exit"}))
    assert event == EventMsg(EPOCH, 9, "closing", {"reason": "exit"})
    beat = decode_view(wire.encode(Kind.HEARTBEAT, EPOCH, 9, "STARTED", 1.0))
    assert beat == HeartbeatMsg(epoch=EPOCH, seq=9, state="STARTED", interval=1.0)


def test_the_view_holds_every_item_after_version_and_kind() -> None:
    for kind, items in (
        (Kind.STATE, (EPOCH, 1, "STOPPED")),
        (Kind.PUBLISH, (EPOCH, 2, "ch", [], {}, False)),
        (Kind.EVENT, (EPOCH, 3, "client_joined", None)),
        (Kind.HEARTBEAT, (EPOCH, 3, "STARTED", 0.5)),
    ):
        view = decode_view(wire.encode(kind, *items))
        assert tuple(view) == items
        assert len(view._fields) + 2 == wire.ARITY[kind]


@pytest.mark.parametrize(
    "obj",
    [
        [1, int(Kind.PUBLISH), EPOCH, 1, b"ch", [], {}, False],  # channel not text
        [1, int(Kind.PUBLISH), EPOCH, 1, "ch", {}, {}, False],  # args not a list
        [1, int(Kind.PUBLISH), EPOCH, 1, "ch", [], {1: 2}, False],  # a kwarg not named
        [1, int(Kind.STATE), EPOCH, "1", "STARTED"],  # seq not an integer
        [1, int(Kind.STATE), EPOCH, 1],  # an item short
        [1, int(Kind.HELLO), 1, {}],  # not a broadcast kind
        [2, int(Kind.STATE), EPOCH, 1, "STARTED"],  # another protocol version
    ],
)
def test_what_decode_broadcast_refuses_decode_view_refuses_with_the_same_code(obj: Any) -> None:
    frame = msgpack.packb(obj, use_bin_type=True)
    with pytest.raises(ProtocolError) as bare:
        wire.decode_broadcast(frame)
    with pytest.raises(ProtocolError) as view:
        decode_view(frame)
    assert (type(view.value), view.value.code) == (type(bare.value), bare.value.code)  # type: ignore[attr-defined]


@settings(max_examples=400, deadline=None)
@given(frames(sorted(BROADCAST_KINDS)) | st.binary(max_size=64))
def test_decode_view_accepts_exactly_what_decode_broadcast_accepts(frame: bytes) -> None:
    bare = _outcome(wire.decode_broadcast, frame)
    view = _outcome(decode_view, frame)
    if isinstance(bare, ProtocolError):
        assert isinstance(view, ProtocolError), view
        assert view.code == bare.code  # type: ignore[attr-defined]
        return
    assert isinstance(view, tuple), view
    assert list(view) == bare[2:]
    assert (
        type(view).__name__
        == {
            Kind.STATE: "StateMsg",
            Kind.PUBLISH: "PublishMsg",
            Kind.EVENT: "EventMsg",
            Kind.HEARTBEAT: "HeartbeatMsg",
        }[Kind(bare[1])]
    )


def _outcome(decode: Any, frame: bytes) -> Any:
    try:
        return decode(frame)
    except ProtocolError as exc:
        return exc
