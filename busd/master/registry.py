"""The master's record of its clients and of their acknowledgements.

::

    [busd-hub] hellos, pongs, acks, byes, losses, replay losses --> Registry
    [busd-commands] expected(seq), wait_acks(...)  <-- waits on its condition
    [busd-pool] wait_for(...), by_pid(), remove_pid(pid)

The registry belongs to the hub: only the hub thread registers clients and
records what they say.  It is a monitor (one lock, held only inside its
own short methods, never while calling out) so the command thread can wait
on its condition for acks instead of on a socket.

It is also where what a client says is checked and bounded: a field of the
wrong type is ``bad_arguments``; text is cut to the limits of
:mod:`busd.core.wire`; a PONG's state must be a state's name.  A client whose
key is read-only (CURVE, ZAP's User-Id ``ro:``) is registered as a
``readonly`` watcher: its claimed pid, slot and role are not kept, so it is
never taken for a worker, never waited for in an ack, and its ACKs and
PONG states are ignored.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from busd.core.wire import (
    DESCRIBE_LIMIT,
    ERRORS_LIMIT,
    NAME_LIMIT,
    REASON_LIMIT,
    RESULT_LIMIT,
    TOKEN_LIMIT,
    Ack,
    ErrorCode,
    clip,
    wire_error,
)

#: How many sequence numbers' acks are kept; older ones are forgotten.
ACK_MEMORY = 4096
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
        }

    def label(self) -> str:
        """How a message names this client."""
        worker = f" worker {self.worker}" if self.worker is not None else ""
        return f"client {self.id} (pid {self.pid}{worker})"


@dataclass(frozen=True)
class AckReport:
    """Who answered a relayed message, with what; who left before answering."""

    seqs: tuple[int, ...]
    acks: tuple[Ack, ...]
    lost: tuple[ClientInfo, ...]
    #: How failures name each client that acked: ``client 3 (pid 123 worker 1)``.
    labels: tuple[tuple[int, str], ...] = ()

    @property
    def ok(self) -> bool:
        """True when every client answered without error and none was lost."""
        return not self.lost and all(a.ok for a in self.acks)

    def failures(self) -> list[str]:
        """One line per failed ack or lost client."""
        labels = dict(self.labels)
        lines = [
            f"{labels.get(a.client, f'client {a.client}')}: "
            + "; ".join(f"{e.get('type')}: {e.get('message')}" for e in a.errors)
            for a in self.acks
            if not a.ok
        ]
        lines += [f"{c.label()}: lost before it answered" for c in self.lost]
        return lines

    def as_dict(self) -> dict[str, Any]:
        """A plain map for replies."""
        return {
            "seqs": list(self.seqs),
            "ok": self.ok,
            "acks": [a.as_dict() for a in self.acks],
            "lost": [c.id for c in self.lost],
            "failures": self.failures(),
        }


class Registry:
    """Clients by routing identity, and the acks they sent, under one lock."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._by_identity: dict[bytes, ClientInfo] = {}
        self._next_id = 1
        self._acks: collections.OrderedDict[int, dict[int, Ack]] = collections.OrderedDict()
        self._departed: dict[int, ClientInfo] = {}
        self._waits: list[dict[int, set[int]]] = []
        #: Ids of clients the pool retired (bounded): leaving is not being lost.
        self._excused: collections.OrderedDict[int, None] = collections.OrderedDict()
        #: Pids the pool is retiring, until it reaps them: one that says HELLO
        #: only now (SIGTERMed before it joined) is leaving from the start.
        self._leaving_pids: collections.OrderedDict[int, None] = collections.OrderedDict()
        #: Called (by the thread that noted it, outside the lock) when a client's
        #: state changes; they must only wake their owner (the pool: a pipe byte).
        self.state_hooks: list[Callable[[ClientInfo], None]] = []

    def register(
        self, identity: bytes, hello: dict[str, Any], joined_seq: int, readonly: bool = False
    ) -> ClientInfo:
        """Record a client that said HELLO (again: same identity keeps its id).

        Raises ProtocolError (``bad_arguments``) for a field of the wrong type.
        """
        fields = hello_fields(hello)
        if readonly:
            fields.update(pid=0, worker=None, role=READONLY_ROLE)
        now = time.monotonic()
        with self._cond:
            old = self._by_identity.get(identity)
            client_id = old.id if old else self._next_id
            if not old:
                self._next_id += 1
            self._cond.notify_all()
            info = ClientInfo(
                id=client_id,
                identity=identity,
                joined_seq=joined_seq,
                connected_at=now,
                last_seen=now,
                lost=old.lost if old else 0,
                readonly=readonly,
                leaving=client_id in self._excused
                or (not readonly and fields["pid"] in self._leaving_pids),
                **fields,
            )
            if info.leaving:
                self._excused[client_id] = None
            self._by_identity[identity] = info
            return info

    def pong(self, identity: bytes, body: dict[str, Any]) -> ClientInfo | None:
        """Note a PONG: the last seq applied and, from a full client, its state."""
        seq = body.get("seq")
        if seq is not None and (type(seq) is not int or seq < 0):
            raise wire_error(ErrorCode.BAD_ARGUMENTS, "PONG: 'seq' must be an integer >= 0")
        fields: dict[str, Any] = {"last_seq": seq or 0}
        state = body.get("state")
        info = self.get(identity)
        if state in STATE_NAMES and info is not None and not info.readonly:
            fields["state"] = state
        return self.touch(identity, **fields)

    def set_joined(self, identity: bytes, joined_seq: int) -> None:
        """Record the snapshot sequence number a client joined at."""
        with self._cond:
            info = self._by_identity.get(identity)
            if info:
                self._by_identity[identity] = replace(
                    info, joined_seq=joined_seq, last_seen=time.monotonic()
                )

    def get(self, identity: bytes) -> ClientInfo | None:
        """The client with this routing identity, if registered."""
        with self._cond:
            return self._by_identity.get(identity)

    def touch(self, identity: bytes, **fields: Any) -> ClientInfo | None:
        """Note that a client was heard from, updating any given fields."""
        with self._cond:
            info = self._by_identity.get(identity)
            if info is None:
                return None
            changed = "state" in fields and fields["state"] != info.state
            info = replace(info, last_seen=time.monotonic(), **fields)
            self._by_identity[identity] = info
            if fields:
                self._cond.notify_all()
        if changed:
            for hook in self.state_hooks:
                hook(info)
        return info

    def add_lost(self, identity: bytes, count: int) -> None:
        """Count messages a client lost (it fell further behind than the replay window)."""
        with self._cond:
            info = self._by_identity.get(identity)
            if info is not None:
                self._by_identity[identity] = replace(info, lost=info.lost + count)

    def wait_for(self, predicate: Callable[[list[ClientInfo]], bool], timeout: float) -> bool:
        """Wait until ``predicate(clients)`` holds; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(self._by_identity.values())):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def by_pid(self) -> dict[int, ClientInfo]:
        """Registered clients by process id (read-only clients have none)."""
        with self._cond:
            return {c.pid: c for c in self._by_identity.values() if not c.readonly}

    def remove(self, identity: bytes) -> ClientInfo | None:
        """Forget a client (it said BYE or was lost); wakes ack waiters."""
        with self._cond:
            info = self._by_identity.pop(identity, None)
            if info is not None:
                self._departed[info.id] = info
                if len(self._departed) > ACK_MEMORY:
                    self._departed.pop(next(iter(self._departed)))
                self._settle(info.id, None)
                self._cond.notify_all()
            return info

    def excuse_pid(self, pid: int) -> ClientInfo | None:
        """The pool is retiring process ``pid``: no ack wait waits for its client.

        Waits in progress stop waiting for it, later ones do not expect it,
        and its leaving (before it answered) is not counted as lost.
        """
        with self._cond:
            self._leaving_pids[pid] = None
            while len(self._leaving_pids) > ACK_MEMORY:
                self._leaving_pids.popitem(last=False)
            found = next(
                (c for c in self._by_identity.values() if c.pid == pid and not c.readonly), None
            )
            if found is None:
                return None
            info = replace(found, leaving=True)
            self._by_identity[info.identity] = info
            self._excused[info.id] = None
            while len(self._excused) > ACK_MEMORY:
                self._excused.popitem(last=False)
            self._settle(info.id, None)
            return info

    def remove_pid(self, pid: int) -> ClientInfo | None:
        """Forget the client of a process that ended (the pool saw it go)."""
        with self._cond:
            self._leaving_pids.pop(pid, None)  # the number may name another process now
            identity = next(
                (i for i, c in self._by_identity.items() if c.pid == pid and not c.readonly), None
            )
        return None if identity is None else self.remove(identity)

    def clients(self) -> list[ClientInfo]:
        """Every registered client, by id."""
        with self._cond:
            return sorted(self._by_identity.values(), key=lambda c: c.id)

    def expired(
        self, older_than: float, by_role: Mapping[str, float] | None = None
    ) -> list[ClientInfo]:
        """Clients not heard from since the monotonic time ``older_than``.

        ``by_role`` gives some roles their own time instead (a joined host is
        held to the master's heartbeat x liveness, as it holds the master).
        """
        limits = by_role or {}
        with self._cond:
            # A client still waiting for its snapshot is the join timeout's business.
            return [
                c
                for c in self._by_identity.values()
                if c.last_seen < limits.get(c.role, older_than) and c.joined_seq != NOT_JOINED
            ]

    def record_ack(self, identity: bytes, body: dict[str, Any]) -> Ack | None:
        """Store an ack from a registered client; None if unknown or read-only."""
        seq = body.get("seq")
        if type(seq) is not int or seq < 1:
            raise wire_error(ErrorCode.BAD_ARGUMENTS, "ACK: 'seq' must be an integer >= 1")
        errors = body.get("errors") or ()
        if not isinstance(errors, list | tuple):
            raise wire_error(ErrorCode.BAD_ARGUMENTS, "ACK: 'errors' must be a list")
        with self._cond:
            info = self._by_identity.get(identity)
            if info is None or info.readonly:
                return None
            ack = Ack(
                client=info.id,
                seq=seq,
                ok=body.get("ok") is True,
                result=bounded_result(body.get("result")),
                errors=tuple(
                    bounded_error(e) for e in errors[:ERRORS_LIMIT] if isinstance(e, dict)
                ),
            )
            self._acks.setdefault(seq, {})[info.id] = ack
            while len(self._acks) > ACK_MEMORY:
                self._acks.popitem(last=False)
            self._by_identity[identity] = replace(
                info, last_seen=time.monotonic(), last_ack_seq=max(info.last_ack_seq, seq)
            )
            self._settle(info.id, seq)
            return ack

    def expected(self, seq: int) -> set[int]:
        """Ids of the clients that will receive ``seq``: joined before it."""
        with self._cond:
            return {
                c.id
                for c in self._by_identity.values()
                if c.joined_seq < seq and c.role != "control" and not c.readonly and not c.leaving
            }

    def behind(self, seq: int) -> list[ClientInfo]:
        """Clients (not busctl's) that have not reported receiving ``seq`` yet, by id.

        A client still waiting for its snapshot counts as behind: its
        snapshot will hold ``seq`` once it comes.
        """
        with self._cond:
            return sorted(
                (
                    c
                    for c in self._by_identity.values()
                    if c.role != "control" and (c.last_seq < seq or c.joined_seq == NOT_JOINED)
                ),
                key=lambda c: c.id,
            )

    def wait_acks(
        self,
        seqs: Iterable[int],
        expected: set[int],
        timeout: float,
        on_timeout: Callable[[list[ClientInfo], AckReport], Exception],
    ) -> AckReport:
        """Wait until every expected client acked every seq, or left.

        Raises what ``on_timeout(silent_clients, partial_report)`` returns when
        ``timeout`` passes first.
        """
        seqs = tuple(seqs)
        deadline = time.monotonic() + timeout
        with self._cond:
            present = {c.id for c in self._by_identity.values()}
            # Who still owes which seq; record_ack and remove shrink it, and
            # wake this thread only when it empties (one wake-up per wait).
            missing = {
                cid: {s for s in seqs if cid not in self._acks.get(s, {})}
                for cid in expected & present
                if cid not in self._excused
            }
            missing = {cid: owed for cid, owed in missing.items() if owed}
            self._waits.append(missing)
            try:
                while missing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        silent = [c for c in self._by_identity.values() if c.id in missing]
                        present = {c.id for c in self._by_identity.values()}
                        raise on_timeout(
                            sorted(silent, key=lambda c: c.id),
                            self._report(seqs, expected - set(missing), present),
                        )
                    self._cond.wait(remaining)
            finally:
                # By identity: another wait may hold an equal dict.
                self._waits[:] = [w for w in self._waits if w is not missing]
            present = {c.id for c in self._by_identity.values()}
            return self._report(seqs, expected, present)

    def _settle(self, client: int, seq: int | None) -> None:
        """An ack (or, with seq None, a departure) of ``client``: update the waits."""
        for missing in self._waits:
            owed = missing.get(client)
            if owed is None:
                continue
            if seq is None:
                owed.clear()
            else:
                owed.discard(seq)
            if not owed:
                del missing[client]
                if not missing:
                    self._cond.notify_all()

    def _report(self, seqs: tuple[int, ...], expected: set[int], present: set[int]) -> AckReport:
        acks: list[Ack] = []
        answered: set[int] = set()
        for cid in sorted(expected):
            per_seq = [self._acks.get(s, {}).get(cid) for s in seqs]
            got = [a for a in per_seq if a is not None]
            if len(got) == len(seqs):
                answered.add(cid)
                acks.append(
                    Ack(
                        client=cid,
                        seq=seqs[-1],
                        ok=all(a.ok for a in got),
                        result=got[-1].result,
                        errors=tuple(e for a in got for e in a.errors),
                    )
                )
        lost = tuple(
            self._departed[cid]
            for cid in sorted(expected - answered - present)
            if cid in self._departed and cid not in self._excused
        )
        known = {c.id: c for c in (*self._departed.values(), *self._by_identity.values())}
        labels = tuple(
            (a.client, known[a.client].label()) for a in acks if not a.ok and a.client in known
        )
        return AckReport(seqs=seqs, acks=tuple(acks), lost=lost, labels=labels)


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


def bounded_result(result: Any) -> Any:
    """An ACK's ``result``, or a note in its place when it encodes to over ``RESULT_LIMIT``."""
    if result is None or isinstance(result, bool | int | float):
        return result
    try:
        size = len(msgpack.packb(result, use_bin_type=True))
    except (TypeError, ValueError, OverflowError):
        return "(a result that cannot be encoded)"
    if size <= RESULT_LIMIT:
        return result
    return f"(a result of {size} bytes, over the {RESULT_LIMIT}-byte limit)"


def bounded_error(error: dict[str, Any]) -> dict[str, str]:
    """One listener failure of an ACK as ``{type, message}``, each cut to its limit."""
    return {
        "type": clip(error.get("type", ""), NAME_LIMIT),
        "message": clip(error.get("message", ""), DESCRIBE_LIMIT),
    }
