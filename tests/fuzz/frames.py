"""Hypothesis strategies for hostile frames: random bytes, random msgpack, mutated messages.

BATCH frames are drawn too (:func:`batches`), built with the real encoder
(``encode_batch`` over really encoded messages): good ones, and ones a
client must refuse whole (a message numbered wrong or of another epoch, a
HEARTBEAT, a BATCH or a message of another version inside, an item that is
no message, an array header claiming far more messages than follow).
"""

from __future__ import annotations

import random
from typing import Any

import msgpack
from hypothesis import strategies as st

from busd.core.wire import VERSION, Kind, encode, encode_batch

#: Commands a fuzzed request may name: none of them ends or stops the master.
SAFE_COMMANDS = [
    "ping",
    "status",
    "clients",
    "workers",
    "snapshot",
    "broadcast",
    "graceful",
    "nonsense",
    "",
    "scale",
    "signal",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=5)
    ),
    max_leaves=12,
)


def _pack(obj: Any) -> bytes:
    try:
        return bytes(msgpack.packb(obj, use_bin_type=True))
    except (OverflowError, ValueError, TypeError):
        return b"\xc1"  # a byte msgpack never uses


def _body(kind: Kind) -> st.SearchStrategy[Any]:
    if kind is Kind.REQUEST:
        return st.fixed_dictionaries(
            {"cmd": st.sampled_from(SAFE_COMMANDS)},
            optional={
                "wait": values,
                "timeout": values,
                "n": values,
                "channel": values,
                "args": values,
                "kwargs": values,
                "signal": values,
            },
        )
    if kind is Kind.HELLO:
        return st.fixed_dictionaries(
            {},
            optional={
                "token": st.binary(max_size=12) | values,
                "subscribe": st.just(False) | values,
                "pid": values,
                "host": values,
                "name": values,
                "role": values,
                "worker": values,
            },
        )
    return st.dictionaries(
        st.sampled_from(["epoch", "seq", "state", "ok", "result", "errors", "reason"]),
        values,
        max_size=5,
    )


@st.composite
def messages(draw: st.DrawFn, kinds: list[Kind]) -> bytes:
    """A message of one of ``kinds`` with fuzzed fields (often well-formed, often not)."""
    kind = draw(st.sampled_from(kinds))
    version = draw(st.sampled_from([VERSION, VERSION, VERSION, 0, 2, -1, "1", None]))
    head: list[Any] = [version, draw(st.sampled_from([int(kind), int(kind), 99, "x"]))]
    if kind in (Kind.HELLO, Kind.REQUEST, Kind.ACK, Kind.PONG, Kind.BYE):
        items = [draw(st.integers(min_value=-5, max_value=2**63) | values), draw(_body(kind))]
    elif kind is Kind.REPLY:
        items = [
            draw(st.integers(min_value=0, max_value=100)),
            draw(st.booleans() | values),
            draw(values),
        ]
    else:
        items = [
            draw(st.integers(min_value=0, max_value=2**48) | values),
            draw(st.integers(min_value=0, max_value=1000) | values),
            *draw(st.lists(values, max_size=4)),
        ]
    if draw(st.booleans()):
        items = items[: draw(st.integers(0, len(items)))] + draw(st.lists(values, max_size=2))
    return _pack(head + items)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """A frame with bytes flipped, cut or inserted."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


#: How a drawn BATCH is spoiled ("good": not at all).
BATCH_FLAWS = [
    "good",
    "good",
    "good",
    "wrong_seq",
    "wrong_epoch",
    "heartbeat_inside",
    "state_inside",
    "batch_inside",
    "version_inside",
    "not_a_message",
    "huge_count",
]


def _sequenced(draw: st.DrawFn, epoch: Any, seq: Any, publish: bool = True) -> bytes:
    """One PUBLISH (or, not ``publish``, a STATE, PUBLISH or EVENT), encoded as the master
    encodes it (fields fuzzed)."""
    kinds = [Kind.PUBLISH] if publish else [Kind.STATE, Kind.PUBLISH, Kind.PUBLISH, Kind.EVENT]
    kind = draw(st.sampled_from(kinds))
    if kind is Kind.STATE:
        items: list[Any] = [draw(st.sampled_from(["STARTED", "STOPPED", "STARTING"]) | values)]
    elif kind is Kind.PUBLISH:
        channel = draw(st.sampled_from(["fuzz", "graceful", "busd.event"]) | st.text(max_size=8))
        args = draw(st.lists(values, max_size=3))
        items = [channel, args, draw(st.dictionaries(st.text(max_size=5), values, max_size=2))]
        items.append(draw(st.booleans() | values))
    else:
        items = [draw(st.sampled_from(["client_joined", "client_left"])), draw(values)]
    return _pack([VERSION, int(kind), epoch, seq, *items])


@st.composite
def batches(draw: st.DrawFn) -> bytes:
    """A BATCH frame from the real encoder: good, or with one flaw (see BATCH_FLAWS)."""
    epoch = draw(st.integers(min_value=0, max_value=2**48))
    first = draw(st.integers(min_value=0, max_value=1000))
    count = draw(st.integers(min_value=1, max_value=6))
    items = [_sequenced(draw, epoch, first + at) for at in range(count)]
    flaw = draw(st.sampled_from(BATCH_FLAWS))
    at = draw(st.integers(0, count - 1))
    if flaw == "wrong_seq":
        items[at] = _sequenced(draw, epoch, first + at + draw(st.sampled_from([-1, 1, 2, 100])))
    elif flaw == "wrong_epoch":
        items[at] = _sequenced(draw, epoch + 1, first + at)
    elif flaw == "heartbeat_inside":
        items[at] = encode(Kind.HEARTBEAT, epoch, first + at, "STARTED", 1.0)
    elif flaw == "state_inside":  # a STATE (or an EVENT) travels alone, never in a BATCH
        items[at] = _sequenced(draw, epoch, first + at, publish=False)
    elif flaw == "batch_inside":
        items[at] = encode_batch(epoch, first + at, [_sequenced(draw, epoch, first + at)])
    elif flaw == "version_inside":
        inner = bytearray(items[at])
        if len(inner) > 1:  # the version byte, after the array header
            inner[1] = draw(st.sampled_from([0, 1, 3]))
        items[at] = bytes(inner)
    elif flaw == "not_a_message":
        items[at] = _pack(draw(values))
    frame = encode_batch(epoch, first, items)
    if flaw == "huge_count":  # claims 2**32 - 1 messages where ``count`` follow
        header = len(encode_batch(epoch, first, []))
        frame = frame[: header - 1] + b"\xdd\xff\xff\xff\xff" + frame[header:]
    return frame


def frames(kinds: list[Kind]) -> st.SearchStrategy[bytes]:
    """Everything a hostile peer might send on a socket that expects ``kinds``."""
    well_formed = messages(kinds)
    drawn = [
        st.binary(max_size=300),
        values.map(_pack),
        well_formed,
        mutated(well_formed),
        mutated(values.map(_pack)),
    ]
    if Kind.BATCH in kinds:
        drawn += [batches(), mutated(batches())]
    return st.one_of(*drawn)


def expand(base: list[bytes], rng: random.Random, count: int) -> list[bytes]:
    """``count`` frames: ``base`` (drawn by hypothesis) and mutations of it by ``rng``.

    Drawing every frame from hypothesis costs about 2 ms each; mutating drawn
    frames with the Random hypothesis hands over costs microseconds, so CI
    can afford thousands.
    """
    out = list(base)
    while len(out) < count:
        data = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(5)
            at = rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(at, len(data) - 1)] ^= rng.randint(1, 255)
            elif op == 1:
                del data[at:]
            elif op == 2:
                data[at:at] = rng.randbytes(rng.randint(1, 8))
            elif op == 3:
                data += rng.choice(base)  # two messages glued together
            else:
                data = bytearray(rng.randbytes(rng.randint(0, 64)))
        out.append(bytes(data))
    return out
