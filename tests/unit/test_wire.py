"""busd.core.wire (the codec, its checks, errors on the wire) and busd.core.endpoints."""

from __future__ import annotations

import itertools
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from busd.core import endpoints, wire
from busd.core.endpoints import EndpointError, Endpoints, Outbox
from busd.core.errors import (
    BusError,
    ChannelFailures,
    IllegalTransition,
    NoMaster,
    ProtocolError,
    RemoteError,
    WaitTimeout,
)
from busd.core.views import decode_frames, decode_view
from busd.core.wire import Kind

EPOCH = 0x5F3A9C21B7E4
V = wire.VERSION
TOKEN = bytes(range(12))

#: Items (after version and kind) of one realistic message of each kind.
SAMPLES: dict[Kind, tuple[Any, ...]] = {
    Kind.STATE: (EPOCH, 7, "STARTED"),
    Kind.PUBLISH: (EPOCH, 8, "reload", ["/etc/app.toml", 2, None], {"force": True}, False),
    Kind.EVENT: (EPOCH, 9, "client_joined", {"id": 3, "pid": 42, "worker": None}),
    Kind.HEARTBEAT: (EPOCH, 9, "STARTED", 1.0),
    Kind.BATCH: (
        EPOCH,
        10,
        [
            [V, 2, EPOCH, 10, "reload", [], {}, False],
            [V, 2, EPOCH, 11, "reload", ["/etc/app.toml"], {}, False],
            [V, 2, EPOCH, 12, "tick", [3], {"at": 1.5}, True],
        ],
    ),
    Kind.HELLO: (
        1,
        {
            "token": TOKEN,
            "pid": 42,
            "host": "h",
            "name": "",
            "role": "worker",
            "worker": 0,
            "subscribe": True,
        },
    ),
    Kind.REQUEST: (2, {"cmd": "graceful", "wait": True, "timeout": 2.5}),
    Kind.ACK: (
        0,
        {
            "epoch": EPOCH,
            "seq": 8,
            "ok": False,
            "result": None,
            "errors": [{"type": "OSError", "message": "boom"}],
        },
    ),
    Kind.PONG: (0, {"epoch": EPOCH, "seq": 9, "state": "STARTED"}),
    Kind.BYE: (0, {"reason": "exited"}),
    Kind.REPLY: (2, True, {"state": "STARTED", "acks": None, "blob": b"\x00\xff"}),
}


def pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def decode_error(frame: bytes, allowed: frozenset[Kind] | None = None) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        wire.decode(frame, allowed)
    return info.value


# -- the codec ------------------------------------------------------------------


def test_samples_cover_every_kind() -> None:
    assert set(SAMPLES) == set(Kind)
    assert all(len(items) + 2 == wire.ARITY[kind] for kind, items in SAMPLES.items())


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_round_trip_of_every_kind(kind: Kind) -> None:
    items = SAMPLES[kind]

    frame = wire.encode(kind, *items)
    msg = wire.decode(frame)

    assert msgpack.unpackb(frame, raw=False)[:2] == [wire.VERSION, kind.value]
    assert msg.kind is kind
    assert msg.items == items
    assert msg.body == items[-1]
    if kind in wire.BROADCAST_KINDS:
        assert (msg.epoch, msg.seq) == (EPOCH, items[1])
    else:
        assert msg.req_id == items[0]


def test_decode_keeps_str_and_bytes_apart() -> None:
    msg = wire.decode(wire.encode(Kind.REPLY, 3, True, {"s": "text", "b": b"text"}))

    assert msg.items[2] == {"s": "text", "b": b"text"}
    assert type(msg.items[2]["s"]) is str
    assert type(msg.items[2]["b"]) is bytes


def test_tuples_travel_as_arrays() -> None:
    msg = wire.decode(wire.encode(Kind.PUBLISH, EPOCH, 1, "ch", (1, (2, 3)), {}, False))

    assert msg.items[3] == [1, [2, 3]]


def test_decode_accepts_only_the_allowed_kinds() -> None:
    frame = wire.encode(*(Kind.STATE, *SAMPLES[Kind.STATE]))

    assert wire.decode(frame, wire.BROADCAST_KINDS).kind is Kind.STATE
    exc = decode_error(frame, wire.CLIENT_KINDS)

    assert exc.code == "unknown_kind"  # type: ignore[attr-defined]
    assert "STATE" in str(exc)


def test_encode_refuses_what_msgpack_cannot_carry() -> None:
    with pytest.raises(ProtocolError, match="cannot encode REPLY"):
        wire.encode(Kind.REPLY, 1, True, {"x": object()})
    with pytest.raises(ProtocolError):
        wire.encode(Kind.REPLY, 1, True, {"x": 1 << 70})


def test_encode_caps_the_size_at_the_limit() -> None:
    overhead = len(wire.encode(Kind.REPLY, 1, True, b""))
    # A bin of n > 65535 bytes costs 5 header bytes instead of the 2 of b"".
    largest = wire.MAX_MESSAGE_SIZE - overhead - 3

    fits = wire.encode(Kind.REPLY, 1, True, b"x" * largest)
    with pytest.raises(ProtocolError) as info:
        wire.encode(Kind.REPLY, 1, True, b"x" * (largest + 1))

    assert len(fits) == wire.MAX_MESSAGE_SIZE
    assert wire.decode(fits).items[2] == b"x" * largest
    assert info.value.code == "too_large"  # type: ignore[attr-defined]
    assert isinstance(info.value, ProtocolError)


def test_decode_refuses_an_oversized_frame_before_parsing_it() -> None:
    frame = pack([V, Kind.REPLY.value, 1, True, b"x" * wire.MAX_MESSAGE_SIZE])

    exc = decode_error(frame)

    assert exc.code == "too_large"  # type: ignore[attr-defined]
    assert str(wire.MAX_MESSAGE_SIZE) in str(exc)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param(b"", "malformed", id="empty"),
        pytest.param(b"\xc1", "malformed", id="never-used-byte"),
        pytest.param(b"\x94\x01\x0b", "malformed", id="truncated"),
        pytest.param(pack([V, 11, 2, {"cmd": "ping"}]) + b"\x00", "malformed", id="trailing-bytes"),
        pytest.param(pack({"cmd": "ping"}), "malformed", id="a-map"),
        pytest.param(pack(1), "malformed", id="an-int"),
        pytest.param(pack("hello"), "malformed", id="a-str"),
        pytest.param(pack([V]), "malformed", id="one-item"),
        pytest.param(pack([]), "malformed", id="empty-array"),
        pytest.param(pack([1, 11, 2, {"cmd": "ping"}]), "bad_version", id="version-1-older"),
        pytest.param(pack([3, 11, 2, {"cmd": "ping"}]), "bad_version", id="version-3-newer"),
        pytest.param(pack([0, 11, 2, {"cmd": "ping"}]), "bad_version", id="version-0"),
        pytest.param(pack(["2", 11, 2, {"cmd": "ping"}]), "bad_version", id="version-str"),
        pytest.param(pack([None, 11, 2, {"cmd": "ping"}]), "bad_version", id="version-nil"),
        pytest.param(pack([V, 99, 2, {"cmd": "ping"}]), "unknown_kind", id="kind-99"),
        pytest.param(pack([V, 0, 2, {"cmd": "ping"}]), "unknown_kind", id="kind-0"),
        pytest.param(pack([V, "REQUEST", 2, {"cmd": "ping"}]), "unknown_kind", id="kind-str"),
        pytest.param(pack([V, [11], 2, {"cmd": "ping"}]), "unknown_kind", id="kind-array"),
        pytest.param(pack([V, 11, 2]), "malformed", id="request-too-short"),
        pytest.param(pack([V, 11, 2, {"cmd": "ping"}, None]), "malformed", id="request-too-long"),
        pytest.param(pack([V, 1, EPOCH, 1]), "malformed", id="state-too-short"),
        pytest.param(pack([V, 20, 1, True]), "malformed", id="reply-too-short"),
        pytest.param(pack([V, 11, "2", {"cmd": "ping"}]), "malformed", id="req-id-str"),
        pytest.param(pack([V, 11, 2.0, {"cmd": "ping"}]), "malformed", id="req-id-float"),
        pytest.param(pack([V, 11, True, {"cmd": "ping"}]), "malformed", id="req-id-bool"),
        pytest.param(pack([V, 11, None, {"cmd": "ping"}]), "malformed", id="req-id-nil"),
        pytest.param(pack([V, 20, "1", True, None]), "malformed", id="reply-id-str"),
        pytest.param(pack([V, 1, "e", 1, "STARTED"]), "malformed", id="epoch-str"),
        pytest.param(pack([V, 1, EPOCH, True, "STARTED"]), "malformed", id="seq-bool"),
        pytest.param(pack([V, 4, EPOCH, 1.5, "STARTED", 1.0]), "malformed", id="seq-float"),
        pytest.param(pack([V, 11, 2, ["ping"]]), "malformed", id="request-body-array"),
        pytest.param(pack([V, 10, 1, b"token"]), "malformed", id="hello-body-bin"),
        pytest.param(pack([V, 12, 0, None]), "malformed", id="ack-body-nil"),
        pytest.param(pack([V, 13, 0, 5]), "malformed", id="pong-body-int"),
        pytest.param(pack([V, 14, 0, "bye"]), "malformed", id="bye-body-str"),
        pytest.param(pack([V, 2, EPOCH, 1, b"ch", [], {}, False]), "malformed", id="channel-bin"),
        pytest.param(pack([V, 2, EPOCH, 1, "ch", {}, {}, False]), "malformed", id="args-map"),
        pytest.param(pack([V, 2, EPOCH, 1, "ch", [], [], False]), "malformed", id="kwargs-array"),
        pytest.param(
            pack([V, 2, EPOCH, 1, "ch", [], {1: 2}, False]), "malformed", id="kwargs-int-key"
        ),
    ],
)
def test_decode_errors_carry_their_code(frame: bytes, code: str) -> None:
    exc = decode_error(frame)

    assert exc.code == code  # type: ignore[attr-defined]
    assert type(exc) is ProtocolError
    assert wire.error_to_wire(exc)["code"] == code


@pytest.mark.parametrize(("version", "got"), [(1, 1), (3, 3), (0, 0), ("2", "'2'"), (None, "None")])
def test_bad_version_details_say_what_came_and_what_is_supported(version: Any, got: Any) -> None:
    exc = decode_error(pack([version, 11, 2, {"cmd": "ping"}]))

    assert exc.details == {"got": got, "supported": [wire.VERSION]}  # type: ignore[attr-defined]
    assert wire.error_to_wire(exc)["details"] == {"got": got, "supported": [2]}


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(pack([True, 11, 2, {"cmd": "ping"}]), id="version-true"),
        pytest.param(pack([2.0, 11, 2, {"cmd": "ping"}]), id="version-float"),
        pytest.param(pack([V, 11.0, 2, {"cmd": "ping"}]), id="kind-float"),
        pytest.param(pack([V, True, EPOCH, 1, "STARTED"]), id="kind-true"),
    ],
)
def test_decode_refuses_a_version_or_kind_that_is_not_an_integer(frame: bytes) -> None:
    # PROTOCOL.md: the version is the integer 2 and the kind an integer; the
    # codec refuses booleans and floats as ids, and must as version and kind.
    with pytest.raises(ProtocolError):
        wire.decode(frame)


def test_join_topic_starts_with_a_byte_no_message_starts_with() -> None:
    topic = wire.join_topic(TOKEN)

    assert topic == b"\xffjoin:" + TOKEN
    assert all(not wire.encode(k, *SAMPLES[k]).startswith(b"\xff") for k in Kind)


def test_ack_as_dict() -> None:
    ack = wire.Ack(client=3, seq=8, ok=False, result=[1], errors=({"type": "E", "message": "m"},))

    assert ack.as_dict() == {
        "client": 3,
        "seq": 8,
        "ok": False,
        "result": [1],
        "errors": [{"type": "E", "message": "m"}],
    }


# -- batches ----------------------------------------------------------------------------


def sequenced(first: int, n: int, epoch: int = EPOCH) -> list[bytes]:
    """``n`` real PUBLISH frames numbered from ``first`` (what a BATCH holds)."""
    return [
        wire.encode_publish(epoch, seq, "ch", [seq, "x" * (seq % 5)], {}, False)
        for seq in range(first, first + n)
    ]


def mixed(first: int, n: int, epoch: int = EPOCH) -> list[bytes]:
    """``n`` real frames numbered from ``first``: PUBLISHes with a STATE and an EVENT among them."""
    out = []
    for seq in range(first, first + n):
        if seq % 7 == 3:
            out.append(wire.encode(Kind.STATE, epoch, seq, "STARTED"))
        elif seq % 7 == 5:
            out.append(wire.encode(Kind.EVENT, epoch, seq, "client_joined", {"id": seq}))
        else:
            out.append(wire.encode_publish(epoch, seq, "ch", [seq, "x" * (seq % 5)], {}, False))
    return out


def batch_of(items: list[Any], epoch: int = EPOCH, first: int = 10) -> bytes:
    """A BATCH frame holding ``items`` (decoded messages, good or bad) as they are."""
    return pack([V, int(Kind.BATCH), epoch, first, items])


def test_encode_batch_is_a_header_then_the_frames_as_they_are() -> None:
    frames = sequenced(10, 3)

    data = wire.encode_batch(EPOCH, 10, frames)

    header = b"\x95\x02\x05\xcf" + EPOCH.to_bytes(8, "big") + b"\x0a\x93"
    assert data == header + b"".join(frames)
    assert data == pack([V, 5, EPOCH, 10, [msgpack.unpackb(f) for f in frames]])
    msg = wire.decode(data)
    assert (msg.kind, msg.epoch, msg.seq) == (Kind.BATCH, EPOCH, 10)


def test_encode_batch_then_decode_frames_gives_each_message_s_view_in_order() -> None:
    frames = sequenced(1, 20)

    views_ = decode_frames(wire.encode_batch(EPOCH, 1, frames))

    assert views_ == [decode_view(f) for f in frames]
    assert [v.seq for v in views_] == list(range(1, 21))
    assert {type(v).__name__ for v in views_} == {"PublishMsg"}
    # A frame alone is one view; decode_view refuses a BATCH (it holds several).
    assert decode_frames(frames[0]) == [decode_view(frames[0])]
    with pytest.raises(ProtocolError) as info:
        decode_view(wire.encode_batch(EPOCH, 1, frames))
    assert info.value.code == "malformed"  # type: ignore[attr-defined]


def test_batch_runs_cut_at_batch_count() -> None:
    frames = sequenced(1, 2 * wire.BATCH_COUNT + 5)

    runs = wire.batch_runs(1, frames)

    assert [(first, len(run)) for first, run in runs] == [
        (1, wire.BATCH_COUNT),
        (wire.BATCH_COUNT + 1, wire.BATCH_COUNT),
        (2 * wire.BATCH_COUNT + 1, 5),
    ]
    assert [f for _, run in runs for f in run] == frames


def test_batch_runs_cut_at_batch_bytes_and_an_oversized_frame_goes_alone() -> None:
    tenth = wire.encode_publish(EPOCH, 1, "ch", [b"x" * (wire.BATCH_BYTES // 10)], {}, False)
    huge = wire.encode_publish(EPOCH, 1, "ch", [b"x" * (wire.BATCH_BYTES + 1)], {}, False)
    small = wire.encode_publish(EPOCH, 1, "ch", [], {}, False)
    assert 9 * len(tenth) <= wire.BATCH_BYTES < 10 * len(tenth)

    by_size = wire.batch_runs(5, [tenth] * 20)
    alone = wire.batch_runs(1, [small, huge, small, small, huge])

    assert [(first, len(run)) for first, run in by_size] == [(5, 9), (14, 9), (23, 2)]
    assert [(first, list(run)) for first, run in alone] == [
        (1, [small]),
        (2, [huge]),
        (3, [small, small]),
        (5, [huge]),
    ]
    assert wire.batch_runs(1, [huge]) == [(1, [huge])]


def test_batch_frames_send_a_run_of_one_alone_and_several_as_a_batch() -> None:
    huge = wire.encode_publish(EPOCH, 2, "ch", [b"x" * (wire.BATCH_BYTES + 1)], {}, False)
    frames = [*sequenced(1, 1), huge, *sequenced(3, 4)]

    out = wire.batch_frames(EPOCH, 1, frames)

    assert out[:2] == [frames[0], huge]
    assert out[2] == wire.encode_batch(EPOCH, 3, frames[2:])
    assert [v for f in out for v in decode_frames(f)] == [decode_view(f) for f in frames]


def test_mixed_frames_send_a_state_or_an_event_alone_between_batches() -> None:
    frames = mixed(1, 14)  # STATE at 3 and 10, EVENT at 5 and 12

    runs = wire.batch_runs(1, frames, mixed=True)
    out = wire.batch_frames(EPOCH, 1, frames, mixed=True)

    assert [(first, len(run)) for first, run in runs] == [
        (1, 2),
        (3, 1),
        (4, 1),
        (5, 1),
        (6, 4),
        (10, 1),
        (11, 1),
        (12, 1),
        (13, 2),
    ]
    assert [v for f in out for v in decode_frames(f)] == [decode_view(f) for f in frames]
    assert [f for f in out if f in frames] == [frames[i - 1] for i in (3, 4, 5, 10, 11, 12)]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    first=st.integers(1, 2**40),
    sizes=st.lists(st.integers(0, 120), max_size=40),
    count=st.integers(1, 5),
    limit=st.integers(1, 400),
)
def test_batch_frames_carry_every_frame_once_in_order_within_the_bounds(
    first: int, sizes: list[int], count: int, limit: int
) -> None:
    frames = [
        wire.encode_publish(EPOCH, seq, "ch", ["x" * size], {}, False)
        for seq, size in enumerate(sizes, first)
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(wire, "BATCH_COUNT", count)
        patch.setattr(wire, "BATCH_BYTES", limit)
        runs = wire.batch_runs(first, frames)
        out = wire.batch_frames(EPOCH, first, frames)

    assert [f for _, run in runs for f in run] == frames
    assert all(at + len(run) == after for (at, run), (after, _) in itertools.pairwise(runs))
    assert not runs or runs[0][0] == first
    for _, run in runs:
        assert 1 <= len(run) <= count
        assert len(run) == 1 or sum(map(len, run)) <= limit
    assert [v for f in out for v in decode_frames(f)] == [decode_view(f) for f in frames]


def item(kind: Kind, seq: int, epoch: int = EPOCH, version: Any = V) -> list[Any]:
    """One decoded message as a BATCH holds it."""
    rest: dict[Kind, list[Any]] = {
        Kind.STATE: ["STARTED"],
        Kind.PUBLISH: ["ch", [seq], {}, False],
        Kind.EVENT: ["client_joined", {}],
        Kind.HEARTBEAT: ["STARTED", 1.0],
    }
    return [version, int(kind), epoch, seq, *rest[kind]]


@pytest.mark.parametrize(
    ("items", "code"),
    [
        pytest.param(
            [item(Kind.PUBLISH, 10), item(Kind.PUBLISH, 11, epoch=7)], "malformed", id="wrong-epoch"
        ),
        pytest.param(
            [item(Kind.PUBLISH, 10), item(Kind.PUBLISH, 12)], "malformed", id="wrong-seq-skipped"
        ),
        pytest.param(
            [item(Kind.PUBLISH, 10), item(Kind.PUBLISH, 10)], "malformed", id="wrong-seq-repeated"
        ),
        pytest.param([item(Kind.PUBLISH, 11)], "malformed", id="wrong-first"),
        pytest.param(
            [item(Kind.PUBLISH, 10), item(Kind.STATE, 11)], "malformed", id="state-inside"
        ),
        pytest.param(
            [item(Kind.PUBLISH, 10), item(Kind.EVENT, 11)], "malformed", id="event-inside"
        ),
        pytest.param(
            [item(Kind.PUBLISH, 10), item(Kind.HEARTBEAT, 11)], "malformed", id="heartbeat-inside"
        ),
        pytest.param(
            [item(Kind.PUBLISH, 10), [V, int(Kind.BATCH), EPOCH, 11, [item(Kind.PUBLISH, 11)]]],
            "malformed",
            id="batch-inside",
        ),
        pytest.param(
            [item(Kind.PUBLISH, 10), [V, int(Kind.REPLY), 1, True, None]],
            "malformed",
            id="reply-inside",
        ),
        pytest.param(
            [item(Kind.PUBLISH, 10), item(Kind.PUBLISH, 11, version=1)],
            "bad_version",
            id="older-version-inside",
        ),
        pytest.param(
            [item(Kind.PUBLISH, 10), item(Kind.PUBLISH, 11, version=3)],
            "bad_version",
            id="newer-version-inside",
        ),
        pytest.param(
            [item(Kind.PUBLISH, 10), item(Kind.PUBLISH, 11)[:4]], "malformed", id="short-item"
        ),
        pytest.param(
            [item(Kind.PUBLISH, 10), [*item(Kind.PUBLISH, 11), 0]], "malformed", id="long-item"
        ),
        pytest.param([item(Kind.PUBLISH, 10), "STARTED"], "malformed", id="not-an-array"),
        pytest.param(
            [[*item(Kind.PUBLISH, 10)[:4], b"ch", [], {}, False]],
            "malformed",
            id="channel-bin-inside",
        ),
        pytest.param(
            [item(Kind.PUBLISH, 10), [V, int(Kind.PUBLISH), EPOCH, "11", "ch", [], {}, False]],
            "malformed",
            id="seq-str-inside",
        ),
    ],
)
def test_a_batch_with_one_bad_message_is_refused_whole(items: list[Any], code: str) -> None:
    data = batch_of(items)

    exc = decode_error(data)
    with pytest.raises(ProtocolError) as info:
        decode_frames(data)

    assert exc.code == code  # type: ignore[attr-defined]
    assert info.value.code == code  # type: ignore[attr-defined]
    with pytest.raises(ProtocolError) as direct:
        wire.batch_items(msgpack.unpackb(data, raw=False))
    assert direct.value.code == code  # type: ignore[attr-defined]


def test_batch_items_returns_the_messages_of_a_good_batch() -> None:
    items = [item(Kind.PUBLISH, 10), item(Kind.PUBLISH, 11), item(Kind.PUBLISH, 12)]

    assert wire.batch_items([V, int(Kind.BATCH), EPOCH, 10, items]) == items
    assert wire.batch_items([V, int(Kind.BATCH), EPOCH, 10, []]) == []


#: A BATCH's header up to its array of messages: [2, BATCH, EPOCH, 1, ...
BATCH_HEAD = b"\x95\x02\x05" + pack(EPOCH) + pack(1)


@pytest.mark.parametrize(
    "claim",
    [
        pytest.param(b"\xdd\xff\xff\xff\xff", id="array32-4G"),
        pytest.param(b"\xdc\xff\xff", id="array16-65535"),
        pytest.param(b"\x9f", id="fixarray-15"),
    ],
)
def test_a_batch_claiming_more_messages_than_it_holds_is_refused_as_malformed(
    claim: bytes,
) -> None:
    data = BATCH_HEAD + claim + pack(item(Kind.STATE, 1))

    assert decode_error(data).code == "malformed"  # type: ignore[attr-defined]
    with pytest.raises(ProtocolError) as info:
        decode_frames(data)
    assert info.value.code == "malformed"  # type: ignore[attr-defined]


# -- a peer of an older version --------------------------------------------------------


def test_an_older_peer_s_message_gets_its_refusal_in_its_own_version() -> None:
    exc = decode_error(pack([1, 11, 7, {"cmd": "ping"}]))
    error = wire.error_to_wire(exc)

    request = wire.older_refusal(pack([1, 11, 7, {"cmd": "ping"}]), error)
    hello = wire.older_refusal(pack([1, 10, 1, {"token": TOKEN}]), error)
    odd_id = wire.older_refusal(pack([1, 11, "7", {"cmd": "ping"}]), error)

    assert request is not None
    assert hello is not None
    assert odd_id is not None
    assert msgpack.unpackb(request, raw=False) == [1, 20, 7, False, error]
    assert msgpack.unpackb(hello, raw=False) == [1, 20, 1, False, error]
    assert msgpack.unpackb(odd_id, raw=False)[:4] == [1, 20, 0, False]
    assert error["code"] == "bad_version"
    assert error["details"] == {"got": 1, "supported": [2]}


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(pack([3, 11, 7, {"cmd": "ping"}]), id="newer"),
        pytest.param(pack([V, 11, 7, {"cmd": "ping"}]), id="this-version"),
        pytest.param(pack([0, 11, 7, {"cmd": "ping"}]), id="version-0"),
        pytest.param(pack([True, 11, 7, {"cmd": "ping"}]), id="version-true"),
        pytest.param(pack([1.0, 11, 7, {"cmd": "ping"}]), id="version-float"),
        pytest.param(pack([1, 11]), id="v1-too-short"),
        pytest.param(pack({"v": 1}), id="a-map"),
        pytest.param(b"\xc1", id="not-msgpack"),
        pytest.param(b"", id="empty"),
    ],
)
def test_older_refusal_is_none_for_what_is_not_an_older_message(data: bytes) -> None:
    assert wire.older_refusal(data, {"code": "bad_version"}) is None


# -- errors on the wire -------------------------------------------------------------


def through_the_wire(exc: BaseException) -> BusError:
    """Send ``exc`` as a REPLY and rebuild it, as a client does."""
    frame = wire.encode(Kind.REPLY, 5, False, wire.error_to_wire(exc))
    return wire.error_from_wire(wire.decode(frame).items[2])


def test_channel_failures_come_back_with_their_instances() -> None:
    original = ChannelFailures(
        channel="graceful", exceptions=[ValueError("bad value"), OSError("no disk")]
    )

    data = wire.error_to_wire(original)
    rebuilt = through_the_wire(original)

    assert data["code"] == "channel_failures"
    assert data["details"] == {
        "channel": "graceful",
        "errors": [
            {"type": "ValueError", "message": "bad value"},
            {"type": "OSError", "message": "no disk"},
        ],
    }
    assert type(rebuilt) is ChannelFailures
    assert rebuilt.channel == "graceful"
    instances = rebuilt.get_instances()
    assert [type(e) for e in instances] == [RemoteError, RemoteError]
    assert [str(e) for e in instances] == ["ValueError: bad value", "OSError: no disk"]
    assert rebuilt.code == "channel_failures"  # type: ignore[attr-defined]
    assert bool(rebuilt)


@pytest.mark.parametrize(
    ("exc", "cls", "code"),
    [
        (
            IllegalTransition("bus cannot go from EXITING to STARTING"),
            IllegalTransition,
            "illegal_transition",
        ),
        (WaitTimeout("no ack within 1s"), WaitTimeout, "timeout"),
        (NoMaster("nobody home"), NoMaster, "no_master"),
        (RemoteError("it broke"), RemoteError, "internal"),
        (ValueError("not a bus error"), RemoteError, "internal"),
        (ProtocolError("plain"), ProtocolError, "malformed"),
    ],
)
def test_exceptions_are_rebuilt_as_the_same_class(
    exc: Exception, cls: type[BusError], code: str
) -> None:
    rebuilt = through_the_wire(exc)

    assert type(rebuilt) is cls
    assert str(rebuilt) == str(exc)
    assert rebuilt.code == code  # type: ignore[attr-defined]
    assert rebuilt.details == {"type": type(exc).__name__}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "code",
    [c for c in wire.ErrorCode if c is not wire.ErrorCode.CHANNEL_FAILURES],
    ids=lambda c: c.value,
)
def test_every_code_survives_a_round_trip(code: wire.ErrorCode) -> None:
    original = wire.wire_error(code, f"about {code.value}", {"n": 1})

    rebuilt = through_the_wire(original)

    assert type(rebuilt) is type(original)
    assert rebuilt.code == code.value  # type: ignore[attr-defined]
    assert rebuilt.details == {"n": 1}  # type: ignore[attr-defined]
    assert str(rebuilt) == f"about {code.value}"


def test_protocol_error_codes_map_to_protocol_error() -> None:
    protocol_codes = {
        "malformed",
        "too_large",
        "bad_version",
        "unknown_kind",
        "unknown_client",
        "unknown_command",
        "bad_arguments",
    }

    classes = {c.value: type(wire.wire_error(c, "x")) for c in wire.ErrorCode}

    assert {c for c, cls in classes.items() if cls is ProtocolError} == protocol_codes


def test_timeout_details_survive() -> None:
    details = {
        "silent": [2, 3],
        "acks": {"seqs": [4], "ok": True, "acks": [], "lost": [], "failures": []},
    }

    rebuilt = through_the_wire(wire.wire_error(wire.ErrorCode.TIMEOUT, "late", details))

    assert isinstance(rebuilt, TimeoutError)
    assert rebuilt.details == details  # type: ignore[attr-defined]


@pytest.mark.parametrize("data", [None, "boom", [1, 2], {"code": "no_such_code", "message": "m"}])
def test_an_unreadable_error_becomes_internal(data: Any) -> None:
    rebuilt = wire.error_from_wire(data)

    assert type(rebuilt) is RemoteError
    assert rebuilt.code == "internal"  # type: ignore[attr-defined]


def test_error_to_wire_falls_back_to_the_class_name_as_message() -> None:
    assert wire.error_to_wire(RuntimeError()) == {
        "code": "internal",
        "message": "RuntimeError",
        "details": {"type": "RuntimeError"},
    }


# -- endpoints --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "env", "expected"),
    [
        (None, {"BUSD_RUNTIME_DIR": "/r", "XDG_RUNTIME_DIR": "/x", "BUSD_NAME": "n"}, "/r"),
        ("web", {"BUSD_RUNTIME_DIR": "/r", "XDG_RUNTIME_DIR": "/x"}, "/r"),
        (None, {"XDG_RUNTIME_DIR": "/x", "BUSD_NAME": "n"}, "/x/busd/n"),
        ("web", {"XDG_RUNTIME_DIR": "/x", "BUSD_NAME": "n"}, "/x/busd/web"),
        (None, {"XDG_RUNTIME_DIR": "/x"}, "/x/busd/busd"),
        (None, {"BUSD_RUNTIME_DIR": "", "XDG_RUNTIME_DIR": "/x"}, "/x/busd/busd"),
        ("web", {}, f"/tmp/busd-{os.getuid()}/web"),
        (None, {"BUSD_NAME": "n"}, f"/tmp/busd-{os.getuid()}/n"),
        (None, {"XDG_RUNTIME_DIR": ""}, f"/tmp/busd-{os.getuid()}/busd"),
    ],
)
def test_runtime_dir_precedence(name: str | None, env: dict[str, str], expected: str) -> None:
    assert endpoints.runtime_dir(name, env=env) == Path(expected)


@pytest.mark.parametrize(
    "name", ["a/b", ".", "..", "../x", ".hidden", "-x", "a b", "a\nb", "é", "x" * 65]
)
def test_runtime_dir_refuses_a_name_that_is_not_a_plain_file_name(name: str) -> None:
    with pytest.raises(EndpointError, match="bad busd name"):
        endpoints.runtime_dir(name, env={})
    with pytest.raises(EndpointError, match="bad busd name"):
        endpoints.runtime_dir(None, env={"BUSD_NAME": name, "BUSD_RUNTIME_DIR": "/r"})


@pytest.mark.parametrize("name", ["busd", "web-1", "app_2.blue", "X" * 64, "0"])
def test_plain_names_are_good_names(name: str) -> None:
    assert endpoints.check_name(name) == name


def test_runtime_dir_of_another_uid() -> None:
    assert endpoints.runtime_dir("web", env={}, uid=4321) == Path("/tmp/busd-4321/web")


def test_ensure_runtime_dir_makes_it_private(tmp_path: Path) -> None:
    made = endpoints.ensure_runtime_dir(tmp_path / "a" / "b")
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)

    endpoints.ensure_runtime_dir(loose)

    assert made == tmp_path / "a" / "b"
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700


def test_a_client_refuses_a_default_runtime_dir_others_may_write(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    planted = xdg / "busd" / "busd"
    planted.mkdir(parents=True)
    planted.chmod(0o777)
    env = {"XDG_RUNTIME_DIR": str(xdg)}
    with pytest.raises(NoMaster, match=r"mode 0777, writable by group or others"):
        endpoints.client_endpoints(env=env)
    with pytest.raises(endpoints.UnsafeRuntimeDir):
        endpoints.client_endpoints(name="busd", env=env)
    # Named on purpose: trusted, as busd itself would refuse it to serve there.
    assert endpoints.client_endpoints(runtime=planted, env=env).ctl == f"ipc://{planted}/ctl.sock"
    named = endpoints.client_endpoints(env={**env, "BUSD_RUNTIME_DIR": str(planted)})
    assert named.ctl == f"ipc://{planted}/ctl.sock"
    # The pool's own endpoints for its workers need no dir.
    given = endpoints.client_endpoints(
        env={**env, "BUSD_PUB_ENDPOINT": "ipc:///p", "BUSD_CTL_ENDPOINT": "ipc:///c"}
    )
    assert given == Endpoints(pub="ipc:///p", ctl="ipc:///c")
    planted.chmod(0o700)
    assert endpoints.client_endpoints(env=env).ctl == f"ipc://{planted}/ctl.sock"
    planted.rmdir()
    assert endpoints.client_endpoints(env=env).ctl == f"ipc://{planted}/ctl.sock"


def test_a_client_refuses_a_planted_per_user_parent(tmp_path: Path) -> None:
    parent = tmp_path / f"busd-{os.getuid()}"
    (parent / "busd").mkdir(parents=True, mode=0o700)
    parent.chmod(0o777)
    with pytest.raises(endpoints.UnsafeRuntimeDir, match=f"busd-{os.getuid()}: it is mode 0777"):
        endpoints.check_found_dir(parent / "busd")
    parent.chmod(0o700)
    endpoints.check_found_dir(parent / "busd")
    other = tmp_path / "elsewhere"
    (other / "busd").mkdir(parents=True, mode=0o700)
    other.chmod(0o777)  # not busd's own parent: busd does not check it either
    endpoints.check_found_dir(other / "busd")


def test_ipc_path_length_limit() -> None:
    longest = "/" + "p" * (endpoints.MAX_IPC_PATH - 1)

    assert endpoints.ipc_endpoint(Path(longest)) == f"ipc://{longest}"
    with pytest.raises(EndpointError, match="shorter --runtime-dir"):
        endpoints.ipc_endpoint(Path(longest + "p"))
    with pytest.raises(EndpointError):
        endpoints.default_endpoints(Path("/" + "d" * 100))
    # The limit is in bytes: a two-byte character counts twice.
    with pytest.raises(EndpointError):
        endpoints.ipc_endpoint(Path("/" + "é" * 60))


def test_default_endpoints() -> None:
    assert endpoints.default_endpoints(Path("/run/b")) == Endpoints(
        pub="ipc:///run/b/pub.sock", ctl="ipc:///run/b/ctl.sock"
    )


@pytest.mark.parametrize("endpoint", ["ipc:///tmp/x.sock", "inproc://bus"])
def test_check_bind_allows_local_transports(endpoint: str) -> None:
    endpoints.check_bind(endpoint)
    endpoints.check_bind(endpoint, insecure=True)


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp://127.0.0.1:5555",
        "tcp://127.0.0.1:*",
        "tcp://127.1.2.3:80",
        "tcp://localhost:1",
        "tcp://[::1]:5555",
        "tcp://0.0.0.0:5555",
        "tcp://*:5555",
        "tcp://10.1.2.3:5555",
        "tcp://192.168.0.1:*",
        "tcp://[::]:5555",
        "tcp://eth0:5555",
        "tcp://example.com:5555",
    ],
)
def test_check_bind_refuses_plain_tcp_loopback_included_unless_insecure(endpoint: str) -> None:
    with pytest.raises(EndpointError, match="--insecure"):
        endpoints.check_bind(endpoint)
    endpoints.check_bind(endpoint, insecure=True)
    endpoints.check_bind(endpoint, curve=True)


@pytest.mark.parametrize("endpoint", ["udp://127.0.0.1:5", "pgm://eth0;239.1.1.1:5", "x"])
def test_check_bind_refuses_other_transports(endpoint: str) -> None:
    with pytest.raises(EndpointError, match="unsupported"):
        endpoints.check_bind(endpoint, insecure=True)


def test_client_endpoints_from_the_environment() -> None:
    env = {
        "BUSD_PUB_ENDPOINT": "tcp://127.0.0.1:7001",
        "BUSD_CTL_ENDPOINT": "tcp://127.0.0.1:7000",
        "BUSD_RUNTIME_DIR": "/r",
    }

    assert endpoints.client_endpoints(env=env) == Endpoints(
        pub="tcp://127.0.0.1:7001", ctl="tcp://127.0.0.1:7000"
    )


def test_client_endpoints_each_variable_on_its_own() -> None:
    env = {"BUSD_CTL_ENDPOINT": "ipc:///elsewhere/ctl", "BUSD_RUNTIME_DIR": "/r"}

    assert endpoints.client_endpoints(env=env) == Endpoints(
        pub="ipc:///r/pub.sock", ctl="ipc:///elsewhere/ctl"
    )


def test_client_endpoints_explicit_name_or_dir_beats_the_environment() -> None:
    env = {
        "BUSD_PUB_ENDPOINT": "tcp://127.0.0.1:7001",
        "BUSD_CTL_ENDPOINT": "tcp://127.0.0.1:7000",
        "XDG_RUNTIME_DIR": "/x",
    }

    by_dir = endpoints.client_endpoints(runtime="/d", env=env)
    by_name = endpoints.client_endpoints(name="web", env=env)

    assert by_dir == Endpoints(pub="ipc:///d/pub.sock", ctl="ipc:///d/ctl.sock")
    assert by_name == Endpoints(pub="ipc:///x/busd/web/pub.sock", ctl="ipc:///x/busd/web/ctl.sock")


def test_client_endpoints_default_to_the_runtime_dir() -> None:
    env = {"XDG_RUNTIME_DIR": "/x", "BUSD_NAME": "n"}

    assert endpoints.client_endpoints(env=env) == Endpoints(
        pub="ipc:///x/busd/n/pub.sock", ctl="ipc:///x/busd/n/ctl.sock"
    )


def test_secure_ipc_makes_the_socket_file_private(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_bytes(b"")
    path.chmod(0o666)

    endpoints.secure_ipc(f"ipc://{path}")
    endpoints.secure_ipc(f"ipc://{tmp_path / 'absent'}")
    endpoints.secure_ipc("tcp://127.0.0.1:1")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_configure_sets_linger_hwm_and_size_cap() -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    inside = ctx.socket(zmq.DEALER)
    outside = ctx.socket(zmq.DEALER)
    try:
        endpoints.configure(outside, 123)
        endpoints.configure(inside, 77, outside=False)

        assert outside.getsockopt(zmq.LINGER) == 0
        assert outside.getsockopt(zmq.SNDHWM) == 123
        assert outside.getsockopt(zmq.RCVHWM) == 123
        assert outside.getsockopt(zmq.MAXMSGSIZE) == wire.MAX_MESSAGE_SIZE
        assert inside.getsockopt(zmq.MAXMSGSIZE) == -1
        assert inside.getsockopt(zmq.SNDHWM) == 77
    finally:
        inside.close(linger=0)
        outside.close(linger=0)
        ctx.term()


# -- the outbox ---------------------------------------------------------------------------


@pytest.fixture
def outbox() -> Iterator[Outbox]:
    box = Outbox()
    yield box
    box.close()


def test_outbox_coalesces_wake_ups(outbox: Outbox) -> None:
    assert not outbox.wait_readable(0)

    outbox.put(("pub", b"1"))
    outbox.put(("pub", b"2"))
    outbox.put(("to", b"id", b"3"))

    assert outbox.wait_readable(0)
    assert os.read(outbox.fileno, 100) == b"\0"  # one byte for three puts
    assert outbox.drain() == [("pub", b"1"), ("pub", b"2"), ("to", b"id", b"3")]
    assert not outbox.wait_readable(0)


def test_outbox_wakes_again_after_a_drain(outbox: Outbox) -> None:
    outbox.put(("a",))
    assert outbox.drain() == [("a",)]
    assert not outbox.wait_readable(0)

    outbox.put(("b",))

    assert outbox.wait_readable(0)
    assert outbox.drain() == [("b",)]
    assert outbox.drain() == []
    assert not outbox.wait_readable(0)


def test_outbox_put_after_close_is_dropped_quietly() -> None:
    # A thread may still hand a frame to an I/O thread that has just closed:
    # that must neither raise nor write to a closed (maybe reused) descriptor.
    box = Outbox()
    box.put(("early",))
    box.close()

    box.put(("late",))
    box.close()


def test_a_statistics_snapshot_travels_as_its_map_and_other_objects_are_refused() -> None:
    from dataclasses import dataclass

    from busd.core.stats import Stats

    @dataclass(frozen=True, eq=False)
    class Counts(Stats):
        sent: int
        nested: Stats | None = None

    frame = wire.encode(wire.Kind.REPLY, 7, True, {"stats": Counts(2, Counts(1))})
    assert wire.decode(frame).items[2] == {
        "stats": {"sent": 2, "nested": {"sent": 1, "nested": None}}
    }
    with pytest.raises(ProtocolError, match="cannot encode REPLY"):
        wire.encode(wire.Kind.REPLY, 7, True, {"stats": object()})
