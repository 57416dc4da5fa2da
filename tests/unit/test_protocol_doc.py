"""docs/PROTOCOL.md agrees with busd.core.wire.

Every fenced block tagged ``msgpack-example`` holds one line of JSON (the
decoded message; bytes as ``{"$bin": "<hex>"}``) and a ``hex:`` line (its
msgpack encoding): the hex must decode to exactly that value, types
included, and ``busd.core.wire.decode`` must accept it.  A block tagged
``msgpack-example-invalid`` has an ``error: <code>`` line, and its JSON line
is optional (a frame that is not msgpack has none): ``decode`` must refuse
it with a ProtocolError of that code.  There must be at least one valid
example per message kind, and the doc must name every kind (with its value,
in the kinds table) and every error code.

A valid PUB example is also decoded as a client does (``views.decode_frames``):
a BATCH gives its messages' views, each the items of the message it holds,
and is byte for byte ``encode_batch`` over those messages' own frames.  The
refusal a version-1 peer gets is checked against ``wire.older_refusal``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest

from busd.core import views, wire
from busd.core.endpoints import CTL_HWM, PUB_HWM
from busd.core.errors import ProtocolError

DOC = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"
FENCE = re.compile(
    r"^```(msgpack-example(?:-invalid)?)[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE
)


@dataclass(frozen=True)
class Example:
    """One example block of the doc."""

    line: int
    valid: bool
    value: Any
    has_value: bool
    data: bytes
    error: str | None

    def __str__(self) -> str:
        return f"PROTOCOL.md:{self.line}"


def from_json(value: Any) -> Any:
    """The JSON of an example as the Python value msgpack decodes to ($bin -> bytes)."""
    if isinstance(value, dict):
        if set(value) == {"$bin"}:
            return bytes.fromhex(value["$bin"])
        return {key: from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_json(item) for item in value]
    return value


def parse_block(tag: str, body: str, line: int) -> Example:
    valid = tag == "msgpack-example"
    value: Any = None
    has_value = False
    data: bytes | None = None
    error: str | None = None
    for text in body.splitlines():
        text = text.strip()
        if not text:
            continue
        if text.startswith("hex:"):
            assert data is None, f"PROTOCOL.md:{line}: two hex lines"
            data = bytes.fromhex(text[4:].strip())
        elif text.startswith("error:"):
            assert not valid, f"PROTOCOL.md:{line}: an error line in a valid example"
            error = text[6:].strip()
        else:
            assert not has_value, f"PROTOCOL.md:{line}: more than one JSON line"
            value = from_json(json.loads(text))
            has_value = True
    assert data is not None, f"PROTOCOL.md:{line}: no hex line"
    assert valid == (error is None), f"PROTOCOL.md:{line}: an invalid example needs 'error:'"
    assert valid <= has_value, f"PROTOCOL.md:{line}: a valid example needs its JSON line"
    return Example(line, valid, value, has_value, data, error)


def load_examples(text: str) -> list[Example]:
    examples = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        examples.append(parse_block(match.group(1), match.group(2), line))
    return examples


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (so 1 != 1.0 != True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def head(example: Example) -> list[Any]:
    """The version and kind of an example (empty if it shows no array)."""
    value = example.value
    return list(value[:2]) if example.has_value and isinstance(value, list) else []


DOC_TEXT = DOC.read_text(encoding="utf-8")
EXAMPLES = load_examples(DOC_TEXT)
VALID = [e for e in EXAMPLES if e.valid]
INVALID = [e for e in EXAMPLES if not e.valid]


def test_the_doc_has_enough_examples() -> None:
    assert len(VALID) >= len(wire.Kind), f"{len(VALID)} valid examples for {len(wire.Kind)} kinds"
    assert len(INVALID) >= 3
    documented = {e.value[1] for e in VALID}

    missing = sorted(k.name for k in wire.Kind if k.value not in documented)

    assert not missing, f"no valid example of {missing}"


def test_the_doc_has_a_batch_example_of_several_publishes_and_bad_ones() -> None:
    batches = [e for e in VALID if e.value[1] == wire.Kind.BATCH]
    bad = [e for e in INVALID if head(e)[1:] == [wire.Kind.BATCH]]

    assert any(len(e.value[4]) >= 2 for e in batches), batches
    assert all(item[1] == wire.Kind.PUBLISH for e in batches for item in e.value[4])
    assert any(e.error == "malformed" for e in bad), bad
    # One refused for a STATE inside: a BATCH holds PUBLISH messages only.
    assert any(
        any(item[1] == wire.Kind.STATE for item in e.value[4]) for e in bad if e.has_value
    ), bad


@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_hex_decodes_to_the_json(example: Example) -> None:
    if not example.has_value:
        with pytest.raises(Exception):  # noqa: B017, PT011 - whatever msgpack raises
            msgpack.unpackb(example.data, raw=False)
        return

    decoded = msgpack.unpackb(example.data, raw=False, strict_map_key=False)

    assert same(decoded, example.value), f"{example}: hex decodes to {decoded!r}"
    assert msgpack.packb(example.value, use_bin_type=True) == example.data, (
        f"{example}: the JSON encodes to {msgpack.packb(example.value, use_bin_type=True).hex()}"
    )


@pytest.mark.parametrize("example", VALID, ids=str)
def test_valid_example_is_accepted_by_wire_decode(example: Example) -> None:
    msg = wire.decode(example.data)

    assert msg.kind == example.value[1]
    assert list(msg.items) == example.value[2:]
    assert wire.encode(msg.kind, *msg.items) == example.data
    if msg.kind not in wire.BROADCAST_KINDS:
        return
    # As a client reads it: one view per message, a BATCH's messages in order.
    got = views.decode_frames(example.data)
    if msg.kind is not wire.Kind.BATCH:
        assert [list(v) for v in got] == [example.value[2:]]
        return
    epoch, first, items = example.value[2:]
    assert [list(v) for v in got] == [item[2:] for item in items]
    assert [v.seq for v in got] == list(range(first, first + len(items)))
    assert all(v.epoch == epoch for v in got)
    assert [type(v).__name__ for v in got] == [
        {1: "StateMsg", 2: "PublishMsg", 3: "EventMsg"}[item[1]] for item in items
    ]
    alone = [wire.pack(item) for item in items]
    assert wire.encode_batch(epoch, first, alone) == example.data


@pytest.mark.parametrize("example", INVALID, ids=str)
def test_invalid_example_is_refused_with_its_code(example: Example) -> None:
    assert example.error in {c.value for c in wire.ErrorCode}, f"{example}: unknown code"

    with pytest.raises(ProtocolError) as info:
        wire.decode(example.data)

    assert getattr(info.value, "code", None) == example.error
    if head(example)[1:] == [wire.Kind.BATCH]:
        with pytest.raises(ProtocolError) as client:
            views.decode_frames(example.data)
        assert getattr(client.value, "code", None) == example.error


def test_the_refusal_a_version_1_peer_gets_is_the_codes() -> None:
    older = [e for e in INVALID if head(e) == [1, wire.Kind.REPLY]]
    asked = {e.value[2]: e for e in INVALID if head(e) == [1, wire.Kind.REQUEST]}

    assert older, "no example of the refusal a version-1 peer gets"
    for refusal in older:
        request = asked[refusal.value[2]]  # the version-1 request it answers, by req_id
        with pytest.raises(ProtocolError) as info:
            wire.decode(request.data)
        assert wire.older_refusal(request.data, wire.error_to_wire(info.value)) == refusal.data
        assert refusal.value[4]["details"] == {"got": 1, "supported": [wire.VERSION]}


@pytest.mark.parametrize("kind", list(wire.Kind), ids=lambda k: k.name)
def test_every_kind_is_in_the_kinds_table_with_its_value(kind: wire.Kind) -> None:
    cells = rf"\|\s*`{kind.name}`\s*\|\s*{kind.value}\s*\|.*\|\s*{wire.ARITY[kind]}\s*\|"
    row = re.compile(rf"^{cells}$", re.MULTILINE)

    assert row.search(DOC_TEXT), f"no row '| `{kind.name}` | {kind.value} | ... |' in the doc"


@pytest.mark.parametrize("code", list(wire.ErrorCode), ids=lambda c: c.value)
def test_every_error_code_is_in_the_errors_table(code: wire.ErrorCode) -> None:
    assert re.search(rf"^\|\s*`{code.value}`\s*\|", DOC_TEXT, re.MULTILINE), (
        f"error code {code.value!r} has no row in the doc's errors table"
    )


@pytest.mark.parametrize(
    "fact",
    [
        f"`{wire.VERSION}`",
        f"# The busd wire protocol, version {wire.VERSION}\n",
        f"`BATCH_COUNT` = {wire.BATCH_COUNT:,} messages",
        f"`BATCH_BYTES` = {wire.BATCH_BYTES >> 10} KiB = {wire.BATCH_BYTES:,} bytes",
        str(wire.MAX_MESSAGE_SIZE),
        f"{PUB_HWM:,}",
        f"{CTL_HWM:,}",
        'b"\\xffjoin:" + token',
        "`pub.sock`",
        "`ctl.sock`",
        "0700",
        "0600",
        "BUSD_RUNTIME_DIR",
        "BUSD_NAME",
        "BUSD_PUB_ENDPOINT",
        "BUSD_CTL_ENDPOINT",
        "XDG_RUNTIME_DIR",
        "ZMQ_MAXMSGSIZE",
    ],
)
def test_the_doc_states_the_constants_of_the_code(fact: str) -> None:
    assert fact in DOC_TEXT


def test_join_prefix_in_the_doc_is_the_code_s() -> None:
    assert wire.JOIN_PREFIX == b"\xffjoin:"
    assert wire.join_topic(b"t") == b"\xffjoin:t"


def test_parser_rejects_a_bad_example() -> None:
    # The checks above would pass vacuously if the parser ignored what it cannot read.
    bad = '```msgpack-example\n[2, 11, 2, {"cmd": "ping"}]\n```\n'

    with pytest.raises(AssertionError, match="no hex line"):
        load_examples(bad)
    assert same([1, {"a": 1.0}], [1, {"a": 1.0}])
    assert not same([1, {"a": 1.0}], [1, {"a": 1}])
    assert not same([True], [1])
