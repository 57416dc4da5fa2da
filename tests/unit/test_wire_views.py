"""busd.core.views: the typed views of the master's broadcast frames."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from busd.core import wire
from busd.core.errors import ProtocolError
from busd.core.views import (
    EventMsg,
    HeartbeatMsg,
    PublishMsg,
    StateMsg,
    decode_frames,
    decode_view,
)
from busd.core.wire import BROADCAST_KINDS, Kind
from tests.fuzz.frames import frames

EPOCH = 0x5F3A9C21B7E4
V = wire.VERSION


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
        [V, int(Kind.PUBLISH), EPOCH, 1, b"ch", [], {}, False],  # channel not text
        [V, int(Kind.PUBLISH), EPOCH, 1, "ch", {}, {}, False],  # args not a list
        [V, int(Kind.PUBLISH), EPOCH, 1, "ch", [], {1: 2}, False],  # a kwarg not named
        [V, int(Kind.STATE), EPOCH, "1", "STARTED"],  # seq not an integer
        [V, int(Kind.STATE), EPOCH, 1],  # an item short
        [V, int(Kind.HELLO), 1, {}],  # not a broadcast kind
        [1, int(Kind.STATE), EPOCH, 1, "STARTED"],  # the older protocol version
        [3, int(Kind.STATE), EPOCH, 1, "STARTED"],  # a newer protocol version
        [V, int(Kind.BATCH), EPOCH, 1, {}],  # a BATCH whose messages are not an array
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
    if bare[1] == Kind.BATCH:  # several messages: decode_frames' business, not decode_view's
        assert isinstance(view, ProtocolError), view
        assert view.code == "malformed"  # type: ignore[attr-defined]
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


# -- decode_frames: one frame, or every message of a BATCH ---------------------------


def test_decode_frames_views_each_message_of_a_batch_as_it_would_alone() -> None:
    alone = [
        wire.encode_publish(EPOCH, 4, "ch", [1], {}, False),
        wire.encode_publish(EPOCH, 5, "reload", ["/etc/a"], {"f": 1}, True),
        wire.encode_publish(EPOCH, 6, "ch", [], {}, {"ack": True, "pools": ["web"]}),
        wire.encode_publish(EPOCH, 7, "ch", [], {}, False),
    ]

    views = decode_frames(wire.encode_batch(EPOCH, 4, alone))

    assert views == [decode_view(f) for f in alone]
    assert [type(v) for v in views] == [PublishMsg] * 4
    assert decode_frames(wire.encode_batch(EPOCH, 4, [])) == []
    # Not numbered on (5 then 7): refused whole.
    with pytest.raises(ProtocolError) as info:
        decode_frames(wire.encode_batch(EPOCH, 5, [alone[1], alone[3]]))
    assert info.value.code == "malformed"  # type: ignore[attr-defined]
    # A STATE or an EVENT travels alone, never in a BATCH.
    for other in (
        wire.encode(Kind.STATE, EPOCH, 5, "STARTED"),
        wire.encode(Kind.EVENT, EPOCH, 5, "client_left", {"id": 2}),
    ):
        with pytest.raises(ProtocolError) as info:
            decode_frames(wire.encode_batch(EPOCH, 4, [alone[0], other]))
        assert info.value.code == "malformed"  # type: ignore[attr-defined]


def _decoded(frame: bytes) -> Any:
    """What ``wire.decode`` makes of a PUB frame: its messages' items, or the error."""
    try:
        msg = wire.decode(frame, BROADCAST_KINDS)
    except ProtocolError as exc:
        return exc
    items = msg.items[2] if msg.kind is Kind.BATCH else [[V, int(msg.kind), *msg.items]]
    return [tuple(item[2:]) for item in items]


@settings(max_examples=200, deadline=None)
@given(frames(sorted(BROADCAST_KINDS)) | st.binary(max_size=64))
def test_decode_frames_accepts_exactly_what_wire_decode_accepts(frame: bytes) -> None:
    expected = _decoded(frame)
    got = _outcome(decode_frames, frame)
    if isinstance(expected, ProtocolError):
        assert isinstance(got, ProtocolError), got
        assert got.code == expected.code  # type: ignore[attr-defined]
        return
    assert isinstance(got, list), got
    # Compared as msgpack bytes: a NaN the fuzzer drew is not equal to itself.
    assert _packed([tuple(view) for view in got]) == _packed(expected)


def _packed(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


@pytest.mark.parametrize(
    "item",
    [
        pytest.param([V, 2, EPOCH, 11.0, "ch", [], {}, False], id="seq-float"),
        pytest.param([2.0, 2, EPOCH, 11, "ch", [], {}, False], id="version-float"),
        pytest.param([V, 2, float(EPOCH), 11, "ch", [], {}, False], id="epoch-float"),
    ],
)
def test_decode_frames_refuses_a_batch_number_that_is_not_an_integer(item: list[Any]) -> None:
    frame = msgpack.packb([V, int(Kind.BATCH), EPOCH, 11, [item]], use_bin_type=True)
    with pytest.raises(ProtocolError):
        wire.decode(frame)

    with pytest.raises(ProtocolError):
        decode_frames(frame)


def test_decode_frames_refuses_a_batch_seq_that_is_a_boolean() -> None:
    item = [V, 2, 1, True, "ch", [], {}, False]
    frame = msgpack.packb([V, int(Kind.BATCH), 1, 1, [item]], use_bin_type=True)
    with pytest.raises(ProtocolError):
        wire.decode(frame)

    with pytest.raises(ProtocolError):
        decode_frames(frame)


def test_decode_broadcast_refuses_a_batch_wire_decode_refuses() -> None:
    frame = msgpack.packb(
        [V, int(Kind.BATCH), EPOCH, 1, [[V, int(Kind.HEARTBEAT), EPOCH, 1, "STARTED", 1.0]]],
        use_bin_type=True,
    )
    with pytest.raises(ProtocolError):
        wire.decode(frame)

    with pytest.raises(ProtocolError):
        wire.decode_broadcast(frame)
