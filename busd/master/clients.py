"""What the master knows of one client, the immutable table of them all, and a HELLO's checks.

::

    HELLO body --hello_fields()--> checked, cut fields --> ClientInfo (frozen)
    [busd-hub] Registry (live) --snapshot()--> ClientTable (frozen, by id) --> other threads
                                                  .by_pid()  .expected(seq)  .clients

A :class:`ClientInfo` is never changed: the hub's registry replaces it
whole.  A :class:`ClientTable` is a snapshot of every registered client at
one moment; the hub publishes a new one after each change, and any thread
reads it without a lock.

A field of the wrong type in a HELLO is ``bad_arguments``; text is cut to
the limits of :mod:`busd.core.wire`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

from busd.core.wire import NAME_LIMIT, REASON_LIMIT, TOKEN_LIMIT, ErrorCode, clip, wire_error

#: ``joined_seq`` of a client whose snapshot is not sent yet: it expects nothing.
NOT_JOINED = sys.maxsize
#: The role a client with a read-only key gets, whatever its HELLO says.
READONLY_ROLE = "readonly"
#: What a PONG's ``state`` may be (busd.core.bus.State's names); anything else is ignored.
STATE_NAMES = frozenset({"STOPPED", "STARTING", "STARTED", "STOPPING", "EXITING"})
_LARGEST_ID = 2**31 - 1


@dataclass(frozen=True)
class ClientInfo:
    """One connected client, as the master sees it."""

    id: int
    identity: bytes
    pid: int
    host: str
    name: str
    role: str
    worker: int | None
    joined_seq: int
    connected_at: float
    last_seen: float
    state: str = "STOPPED"
    last_ack_seq: int = 0
    last_seq: int = 0
    #: Messages this client asked to replay after they had left the window.
    lost: int = 0
    token: bytes = b""
    #: Its key is read-only: never a worker, never waited for, its acks ignored.
    readonly: bool = False
    #: Its process is being retired by the pool: no ack wait waits for it.
    leaving: bool = False
    #: The pool it says it belongs to (its HELLO's ``pool``; "" for none).
    pool: str = ""

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        """A plain map for status replies (ages in seconds, no identity bytes)."""
        now = time.monotonic() if now is None else now
        return {
            "id": self.id,
            "pid": self.pid,
            "host": self.host,
            "name": self.name,
            "role": self.role,
            "worker": self.worker,
            "state": self.state,
            "last_heartbeat": round(now - self.last_seen, 3),
            "connected_for": round(now - self.connected_at, 3),
            "last_ack_seq": self.last_ack_seq,
            "last_seq": self.last_seq,
            "lost": self.lost,
            "readonly": self.readonly,
            "leaving": self.leaving,
            "pool": self.pool,
        }

    def label(self) -> str:
        """How a message names this client."""
        worker = f" worker {self.worker}" if self.worker is not None else ""
        return f"client {self.id} (pid {self.pid}{worker})"

    def awaited(self) -> bool:
        """True when an ack wait counts on this client (not busctl, read-only or leaving)."""
        return self.role != "control" and not self.readonly and not self.leaving


@dataclass(frozen=True)
class ClientTable:
    """Every registered client at one moment, by id (a snapshot: never changes)."""

    clients: tuple[ClientInfo, ...] = ()

    def by_pid(self) -> dict[int, ClientInfo]:
        """The clients by process id (read-only clients have none)."""
        return {c.pid: c for c in self.clients if not c.readonly}

    def expected(self, seq: int, pools: frozenset[str] | None = None) -> set[int]:
        """Ids of the clients that will receive ``seq`` (joined before it) and must ack it
        (with ``pools``: only those of these pools)."""
        return {
            c.id
            for c in self.clients
            if c.joined_seq < seq and c.awaited() and (pools is None or c.pool in pools)
        }


# -- what a client may say ------------------------------------------------------


def _text(hello: dict[str, Any], key: str, default: str) -> str:
    value = hello.get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise wire_error(ErrorCode.BAD_ARGUMENTS, f"HELLO: {key!r} must be a string")
    return clip(value, NAME_LIMIT)


def _number(hello: dict[str, Any], key: str) -> int | None:
    value = hello.get(key)
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= _LARGEST_ID:
        raise wire_error(
            ErrorCode.BAD_ARGUMENTS, f"HELLO: {key!r} must be an integer from 0 to {_LARGEST_ID}"
        )
    return value


def hello_fields(hello: dict[str, Any]) -> dict[str, Any]:
    """A HELLO's fields as ClientInfo takes them: checked (``bad_arguments``) and cut."""
    token = hello.get("token") or b""
    if not isinstance(token, bytes) or len(token) > TOKEN_LIMIT:
        raise wire_error(
            ErrorCode.BAD_ARGUMENTS, f"HELLO: 'token' must be bytes, at most {TOKEN_LIMIT} of them"
        )
    return {
        "pid": _number(hello, "pid") or 0,
        "worker": _number(hello, "worker"),
        "host": _text(hello, "host", ""),
        "name": _text(hello, "name", ""),
        "role": _text(hello, "role", "client"),
        "pool": _text(hello, "pool", ""),
        "token": token,
    }


def bye_reason(body: dict[str, Any]) -> str:
    """A BYE's ``reason``, cut to ``REASON_LIMIT`` characters."""
    reason = body.get("reason")
    return (
        ""
        if reason is None
        else clip(reason if isinstance(reason, str) else repr(reason), REASON_LIMIT)
    )
