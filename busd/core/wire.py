"""The busd wire protocol: message kinds, the msgpack codec, limits and errors.

Every message is one ZeroMQ frame holding one msgpack array whose first two
items are the protocol version and the message kind::

    master -> clients, PUB (one frame; clients subscribe to everything):
      [2, STATE,     epoch, seq, state]
      [2, PUBLISH,   epoch, seq, channel, args, kwargs, ack]
      [2, EVENT,     epoch, seq, event, data]
      [2, BATCH,     epoch, first, [message, ...]]   (consecutive PUBLISH messages)
      [2, HEARTBEAT, epoch, seq, state, interval]     (seq: the last one used)
      [2, EVENT, epoch, seq, "closing", {reason, drain}]   (the last of an epoch)

    client -> master, DEALER -> ROUTER (the ROUTER adds the routing id):
      [2, HELLO,   req_id, {token, pid, host, name, role, worker, subscribe}]
      [2, REQUEST, req_id, {cmd, ...arguments}]
      [2, ACK,     0,      {epoch, seq, ok, result, errors}]
      [2, PONG,    0,      {epoch, seq, state}]
      [2, BYE,     0,      {reason}]

    master -> one client, ROUTER -> DEALER:
      [2, REPLY, req_id, true,  result]
      [2, REPLY, req_id, false, {code, message, details}]

``epoch`` names one master incarnation; ``seq`` counts the STATE, PUBLISH
and EVENT messages of an epoch from 1 without gaps.  A BATCH carries
messages ``first``, ``first + 1``, ... each exactly as it would travel
alone (the master builds it by concatenating their frames after a header).
docs/PROTOCOL.md is the full description.
"""

from __future__ import annotations

import enum
import os
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgpack

from busd.core.errors import BusError, ProtocolError
from busd.core.wireerrors import DESCRIBE_LIMIT as DESCRIBE_LIMIT
from busd.core.wireerrors import ErrorCode as ErrorCode
from busd.core.wireerrors import describe as describe
from busd.core.wireerrors import error_from_wire as error_from_wire
from busd.core.wireerrors import error_to_wire as error_to_wire
from busd.core.wireerrors import wire_error as wire_error

VERSION = 2
#: Versions older peers speak: a refusal of their message is written in their version,
#: so that they can read it (docs/PROTOCOL.md, section 15).
OLDER_VERSIONS = frozenset({1})
#: The largest frame a busd socket accepts from outside (ZMQ_MAXMSGSIZE).
MAX_MESSAGE_SIZE = 1 << 20
#: Default seconds between heartbeats, and how many missed ones mean "lost".
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_LIVENESS = 3
#: Most messages, and most bytes of their frames, in one BATCH.
BATCH_COUNT = 1000
BATCH_BYTES = 256 << 10
#: The first byte of a SUB topic that no message starts with; see join_topic().
JOIN_PREFIX = b"\xffjoin:"
#: The EVENT a master sends last, when it closes on purpose (docs/PROTOCOL.md, section 9).
CLOSING_EVENT = "closing"
#: The channel a metrics scrape relays with ack: a client answers it with its
#: prometheus_client registry in the ACK's result (docs/PROTOCOL.md, section 10).
METRICS_CHANNEL = "busd.metrics"

# What the master keeps of the fields a client sends (docs/PROTOCOL.md section 14):
# longer text is cut, so nothing a peer says can make an event or a reply too large.
#: Characters kept of a HELLO's ``name``, ``host`` and ``role`` and of an error's ``type``.
NAME_LIMIT = 256
#: Characters kept of a BYE's ``reason``.
REASON_LIMIT = 1024
#: Bytes a HELLO's ``token`` may have (busd's clients send 12).
TOKEN_LIMIT = 64
#: Encoded bytes an ACK's ``result`` may have; a larger one is replaced by a note.
RESULT_LIMIT = 64 * 1024
#: Listener failures kept of one ACK's ``errors``.
ERRORS_LIMIT = 64


class Kind(enum.IntEnum):
    """The kind of a message, its second item."""

    STATE = 1
    PUBLISH = 2
    EVENT = 3
    HEARTBEAT = 4
    BATCH = 5
    HELLO = 10
    REQUEST = 11
    ACK = 12
    PONG = 13
    BYE = 14
    REPLY = 20


_KINDS = {kind.value: kind for kind in Kind}
_INT_SETS: dict[frozenset[Kind], frozenset[int]] = {}
_PUBLISH = Kind.PUBLISH.value
_BATCH = Kind.BATCH.value
#: Kinds sent on PUB, which carry an epoch and a sequence number.
BROADCAST_KINDS = frozenset({Kind.STATE, Kind.PUBLISH, Kind.EVENT, Kind.HEARTBEAT, Kind.BATCH})
#: Kinds a client sends to the master.
CLIENT_KINDS = frozenset({Kind.HELLO, Kind.REQUEST, Kind.ACK, Kind.PONG, Kind.BYE})
_BROADCAST_INTS = frozenset(int(k) for k in BROADCAST_KINDS)
_CLIENT_INTS = frozenset(int(k) for k in CLIENT_KINDS)
#: How many items each kind has, version and kind included.
ARITY = {
    Kind.STATE: 5,
    Kind.PUBLISH: 8,
    Kind.EVENT: 6,
    Kind.HEARTBEAT: 6,
    Kind.BATCH: 5,
    Kind.HELLO: 4,
    Kind.REQUEST: 4,
    Kind.ACK: 4,
    Kind.PONG: 4,
    Kind.BYE: 4,
    Kind.REPLY: 5,
}
_ARITY = {int(kind): n for kind, n in ARITY.items()}


class Message(NamedTuple):
    """A decoded message: its kind and the items after version and kind."""

    kind: Kind
    items: tuple[Any, ...]

    @property
    def epoch(self) -> int:
        """The epoch of a PUB message."""
        return int(self.items[0])

    @property
    def seq(self) -> int:
        """The sequence number of a PUB message."""
        return int(self.items[1])

    @property
    def req_id(self) -> int:
        """The request id of a DEALER/ROUTER message."""
        return int(self.items[0])

    @property
    def body(self) -> Any:
        """The last item (the body of a client message)."""
        return self.items[-1]


def encode(kind: Kind, *items: Any) -> bytes:
    """Encode one message; raises ProtocolError if an item is not msgpack data."""
    return _pack(kind.name, [VERSION, int(kind), *items])


def encode_publish(
    epoch: int, seq: int, channel: str, args: Any, kwargs: dict[str, Any], ack: Any
) -> bytes:
    """Encode a PUBLISH (the master's hot path: one call, no enum)."""
    return _pack("PUBLISH", [VERSION, _PUBLISH, epoch, seq, channel, args, kwargs, ack])


def encode_batch(epoch: int, first: int, frames: Sequence[bytes]) -> bytes:
    """One BATCH of frames already encoded, numbered ``first``, ``first + 1``, ...

    The frames are not decoded again: a BATCH is a header, ``[VERSION,
    BATCH, epoch, first, ``, followed by the frames as they are (each one
    msgpack array), which together make the one array of the message.
    """
    packer = _packer()
    header: bytes = b"\x95%c\x05" % VERSION + packer.pack(epoch) + packer.pack(first)
    count: bytes = packer.pack_array_header(len(frames))
    return header + count + b"".join(frames)


def batch_runs(
    first: int, frames: Sequence[bytes], mixed: bool = False
) -> list[tuple[int, Sequence[bytes]]]:
    """``frames`` (numbered from ``first``) cut into runs within BATCH_COUNT and BATCH_BYTES.

    ``mixed``: the frames may hold STATE and EVENT messages, which go alone
    (in runs of one) since a BATCH holds PUBLISH messages only.
    """
    out: list[tuple[int, Sequence[bytes]]] = []
    if mixed:
        start = 0
        for index, frame in enumerate(frames):
            if frame[2] != _PUBLISH:  # [VERSION, kind, ...]: fixarray, fixint, fixint
                if index > start:
                    out += batch_runs(first + start, frames[start:index])
                out.append((first + index, frames[index : index + 1]))
                start = index + 1
        if start < len(frames):
            out += batch_runs(first + start, frames[start:])
        return out
    for at in range(0, len(frames), BATCH_COUNT):
        run = frames[at : at + BATCH_COUNT]
        if sum(map(len, run)) <= BATCH_BYTES:
            out.append((first + at, run))
            continue
        start = size = 0
        for index, frame in enumerate(run):
            if index > start and size + len(frame) > BATCH_BYTES:
                out.append((first + at + start, run[start:index]))
                start, size = index, 0
            size += len(frame)
        out.append((first + at + start, run[start:]))
    return out


def batch_frames(
    epoch: int, first: int, frames: Sequence[bytes], mixed: bool = False
) -> list[bytes]:
    """Frames numbered from ``first`` as they travel: runs of PUBLISHes as BATCH frames."""
    return [
        run[0] if len(run) == 1 else encode_batch(epoch, at, run)
        for at, run in batch_runs(first, frames, mixed)
    ]


def _plain(obj: object) -> object:
    """msgpack's fallback: a statistics snapshot travels as the map it reads as."""
    from busd.core.stats import Stats  # here: dataclasses is too slow an import for busctl

    if isinstance(obj, Stats):
        return obj.as_dict()
    raise TypeError(f"can not serialize {type(obj).__name__!r} object")


#: One Packer per thread, reused: ``msgpack.packb`` makes a new one each call, and
#: its buffer is over the mmap threshold the master pins (busd.master.backlog), so
#: each call would map and unmap memory (two system calls and a page fault).
_packers = threading.local()


def new_packer() -> msgpack.Packer:
    """A Packer as the codec uses (one thread at a time may use it)."""
    return msgpack.Packer(use_bin_type=True, default=_plain)


def _packer() -> msgpack.Packer:
    try:
        packer: msgpack.Packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = new_packer()
    return packer


def pack(obj: Any) -> bytes:
    """``obj`` as msgpack bytes, with this thread's reused Packer (msgpack's errors)."""
    data: bytes = _packer().pack(obj)
    return data


def _pack(name: str, message: list[Any]) -> bytes:
    try:
        data = pack(message)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"cannot encode {name} message: {exc}") from exc
    if len(data) > MAX_MESSAGE_SIZE:
        raise too_large(name, len(data))
    return data


def too_large(name: str, size: int) -> BusError:
    """The error for a ``name`` message of ``size`` bytes, over MAX_MESSAGE_SIZE."""
    return wire_error(
        ErrorCode.TOO_LARGE, f"{name} message is {size} bytes, over {MAX_MESSAGE_SIZE}"
    )


def decode(data: bytes, allowed: frozenset[Kind] | None = None) -> Message:
    """Decode and check one frame; raises ProtocolError with a wire ``code``."""
    obj = _decode_checked(data, allowed)
    return Message(_KINDS[obj[1]], tuple(obj[2:]))


def decode_messages(data: bytes) -> list[Message]:
    """Decode and check one PUB frame: its message, or each message of a BATCH, in order.

    For readers of the published stream that take it message by message
    (``busctl watch``, ``busctl top``, the test fixtures' events): a BATCH's
    messages are PUBLISH messages, each as it would travel alone.
    """
    msg = decode(data, allowed=BROADCAST_KINDS)
    if msg.kind is not Kind.BATCH:
        return [msg]
    return [Message(Kind.PUBLISH, tuple(item[2:])) for item in msg.items[2]]


def decode_broadcast(data: bytes) -> list[Any]:
    """Decode and check a PUB frame; return the bare array ``[1, kind, epoch, seq, ...]``.

    The same checks as :func:`decode`, for the client's hot path.
    """
    if len(data) <= MAX_MESSAGE_SIZE:
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception:  # noqa: BLE001 - malformed: the checked path below says how
            obj = None
        # The common case, checked inline: [1, kind, epoch:int, seq:int, ...].
        if (
            type(obj) is list
            and len(obj) > 3
            and obj[0] == VERSION
            and type(obj[0]) is int
            and type(obj[1]) is int
            and _ARITY.get(obj[1]) == len(obj)
            and obj[1] in _BROADCAST_INTS
            and type(obj[2]) is int
            and type(obj[3]) is int
            and (obj[1] != _PUBLISH or _publish_items_ok(obj))
            and obj[1] != _BATCH  # its messages are checked on the path below
        ):
            return obj
    return _decode_checked(data, BROADCAST_KINDS)


def _publish_items_ok(obj: list[Any]) -> bool:
    return (
        type(obj[4]) is str
        and type(obj[5]) is list
        and type(obj[6]) is dict
        and (not obj[6] or all(type(k) is str for k in obj[6]))
    )


def _decode_checked(data: bytes, allowed: frozenset[Kind] | None) -> list[Any]:
    if len(data) > MAX_MESSAGE_SIZE:
        raise wire_error(ErrorCode.TOO_LARGE, f"{len(data)} bytes, over {MAX_MESSAGE_SIZE}")
    try:
        # Length limits inside follow from len(data), already capped above.
        obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)
    except Exception as exc:  # msgpack raises many unrelated types
        raise wire_error(ErrorCode.MALFORMED, f"not msgpack: {exc.__class__.__name__}") from exc
    if type(obj) is not list or len(obj) < 2:
        raise wire_error(ErrorCode.MALFORMED, "a message is an array [version, kind, ...]")
    version, raw = obj[0], obj[1]
    _check_version(version)
    # Plain ints from here on: hashing an IntEnum member runs Python code.
    kind = _KINDS.get(raw) if type(raw) is int else None
    if kind is None:
        raise wire_error(ErrorCode.UNKNOWN_KIND, f"unknown message kind {raw!r}")
    if allowed is not None and raw not in _as_ints(allowed):
        raise wire_error(ErrorCode.UNKNOWN_KIND, f"{kind.name} is not accepted here")
    if len(obj) != _ARITY[raw]:
        raise wire_error(
            ErrorCode.MALFORMED, f"{kind.name} has {_ARITY[raw]} items, got {len(obj)}"
        )
    _check_types(kind, raw, obj)
    return obj


def _check_version(version: Any) -> None:
    if type(version) is not int or version != VERSION:
        raise wire_error(
            ErrorCode.BAD_VERSION,
            f"protocol version {version!r} is not supported: this side speaks version "
            f"{VERSION} (upgrade the side that speaks the older one)",
            {"got": version if isinstance(version, int) else repr(version), "supported": [VERSION]},
        )


def _as_ints(kinds: frozenset[Kind]) -> frozenset[int]:
    found = _INT_SETS.get(kinds)
    if found is None:
        found = _INT_SETS[kinds] = frozenset(int(k) for k in kinds)
    return found


def _check_types(kind: Kind, raw: int, obj: list[Any]) -> None:
    if type(obj[2]) is not int or (raw in _BROADCAST_INTS and type(obj[3]) is not int):
        raise wire_error(ErrorCode.MALFORMED, f"{kind.name}: ids must be integers")
    if raw in _CLIENT_INTS and type(obj[3]) is not dict:
        raise wire_error(ErrorCode.MALFORMED, f"{kind.name}: the body must be a map")
    if raw == _PUBLISH and not _publish_items_ok(obj):
        raise wire_error(ErrorCode.MALFORMED, "PUBLISH: channel, args list, kwargs map")
    if raw == _BATCH:
        if type(obj[4]) is not list:
            raise wire_error(ErrorCode.MALFORMED, "BATCH: its messages are an array")
        batch_items(obj)


def batch_items(obj: list[Any]) -> list[list[Any]]:
    """The messages of a decoded BATCH, each checked as a frame of its own would be.

    Each is a PUBLISH of the batch's epoch, numbered on from its ``first``;
    any other item makes the whole batch ``malformed``.
    """
    epoch, seq, items = obj[2], obj[3], obj[4]
    for index, item in enumerate(items):
        if type(item) is not list or len(item) < 4:
            raise wire_error(ErrorCode.MALFORMED, f"BATCH: item {index} is not a message")
        _check_version(item[0])
        raw = item[1]
        if raw != _PUBLISH or type(raw) is not int:
            raise wire_error(ErrorCode.MALFORMED, f"BATCH: item {index} is not a PUBLISH")
        kind = _KINDS[raw]
        if len(item) != _ARITY[raw]:
            raise wire_error(
                ErrorCode.MALFORMED, f"BATCH: item {index}, a {kind.name}, has {len(item)} items"
            )
        _check_types(kind, raw, item)
        if item[2] != epoch or item[3] != seq + index:
            raise wire_error(
                ErrorCode.MALFORMED,
                f"BATCH: item {index} is epoch {item[2]} seq {item[3]}, "
                f"not epoch {epoch} seq {seq + index}",
            )
    checked: list[list[Any]] = items
    return checked


def older_refusal(data: bytes, error: dict[str, Any]) -> bytes | None:
    """A REPLY refusing ``data``, written in the older version ``data`` is in.

    An older peer can not read this version's REPLY; the layout of a refusal,
    ``[version, REPLY, req_id, false, {code, message, details}]``, is the same
    in every version, so it gets one in its own, answering its own
    ``req_id``.  None when ``data`` is not a message of an older version.
    """
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:  # noqa: BLE001 - not msgpack: no version to answer in
        return None
    if type(obj) is not list or len(obj) < 3 or type(obj[0]) is not int:
        return None
    if obj[0] not in OLDER_VERSIONS:
        return None
    req_id = obj[2] if type(obj[2]) is int else 0
    return pack([obj[0], int(Kind.REPLY), req_id, False, error])


def clip(value: Any, limit: int) -> str:
    """``value`` as text of at most ``limit`` characters (a cut one ends with an ellipsis)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "\u2026"


def pid_namespace() -> str:
    """This kernel boot and pid namespace: equal on two processes means their pids compare.

    Empty where ``/proc`` does not say (then nobody watches anybody's pid).
    """
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot:
            boot_id = boot.read().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return f"{boot_id}:{namespace}"


def join_topic(token: bytes) -> bytes:
    """The SUB topic a joining client adds so the master's XPUB sees it is subscribed."""
    return JOIN_PREFIX + token


# -- acknowledgements ---------------------------------------------------


class Ack(NamedTuple):
    """One client's answer to a relayed message: ran its listeners, with what result."""

    client: int
    seq: int
    ok: bool
    result: Any = None
    errors: Sequence[dict[str, str]] = ()

    def as_dict(self) -> dict[str, Any]:
        """A plain map, for replies and ``--json``."""
        return {
            "client": self.client,
            "seq": self.seq,
            "ok": self.ok,
            "result": self.result,
            "errors": list(self.errors),
        }
