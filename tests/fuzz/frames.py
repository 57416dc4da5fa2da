"""Hypothesis strategies for hostile frames: random bytes, random msgpack, mutated messages."""

from __future__ import annotations

import random
from typing import Any

import msgpack
from hypothesis import strategies as st

from busd.core.wire import VERSION, Kind

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


def frames(kinds: list[Kind]) -> st.SearchStrategy[bytes]:
    """Everything a hostile peer might send on a socket that expects ``kinds``."""
    well_formed = messages(kinds)
    return st.one_of(
        st.binary(max_size=300),
        values.map(_pack),
        well_formed,
        mutated(well_formed),
        mutated(values.map(_pack)),
    )


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
