"""The master's record of its clients and of their acknowledgements.

::

    [busd-hub] hellos, pongs, acks, byes, losses, replay losses --> Registry
    [busd-commands] expected(seq), wait_acks(...)  <-- waits on its condition
    [busd-pool] wait_for(...), by_pid(), remove_pid(pid)

The registry belongs to the hub: only the hub thread registers clients and
records what they say.  It is a monitor (one lock, held only inside its
own short methods, never while calling out) so the command thread can wait
on its condition for acks instead of on a socket.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from busd.wire import Ack

#: How many sequence numbers' acks are kept; older ones are forgotten.
ACK_MEMORY = 4096
#: ``joined_seq`` of a client whose snapshot is not sent yet: it expects nothing.
NOT_JOINED = sys.maxsize


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

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        """A plain map for status replies (ages in seconds, no identity bytes)."""
        now = time.monotonic() if now is None else now
        return {"id": self.id, "pid": self.pid, "host": self.host, "name": self.name,
                "role": self.role, "worker": self.worker, "state": self.state,
                "last_heartbeat": round(now - self.last_seen, 3),
                "connected_for": round(now - self.connected_at, 3),
                "last_ack_seq": self.last_ack_seq, "last_seq": self.last_seq,
                "lost": self.lost}

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
        lines = [f"{labels.get(a.client, f'client {a.client}')}: " + "; ".join(
            f"{e.get('type')}: {e.get('message')}" for e in a.errors)
            for a in self.acks if not a.ok]
        lines += [f"{c.label()}: lost before it answered" for c in self.lost]
        return lines

    def as_dict(self) -> dict[str, Any]:
        """A plain map for replies."""
        return {"seqs": list(self.seqs), "ok": self.ok,
                "acks": [a.as_dict() for a in self.acks],
                "lost": [c.id for c in self.lost], "failures": self.failures()}


class Registry:
    """Clients by routing identity, and the acks they sent, under one lock."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._by_identity: dict[bytes, ClientInfo] = {}
        self._next_id = 1
        self._acks: collections.OrderedDict[int, dict[int, Ack]] = collections.OrderedDict()
        self._departed: dict[int, ClientInfo] = {}
        self._waits: list[dict[int, set[int]]] = []
        #: Called (by the thread that noted it, outside the lock) when a client's
        #: state changes; they must only wake their owner (the pool: a pipe byte).
        self.state_hooks: list[Callable[[ClientInfo], None]] = []

    def register(self, identity: bytes, hello: dict[str, Any], joined_seq: int) -> ClientInfo:
        """Record a client that said HELLO (again: same identity keeps its id)."""
        now = time.monotonic()
        with self._cond:
            old = self._by_identity.get(identity)
            client_id = old.id if old else self._next_id
            if not old:
                self._next_id += 1
            worker = hello.get("worker")
            token = hello.get("token")
            self._cond.notify_all()
            info = ClientInfo(
                id=client_id, identity=identity, pid=int(hello.get("pid") or 0),
                host=str(hello.get("host") or ""), name=str(hello.get("name") or ""),
                role=str(hello.get("role") or "client"),
                worker=worker if isinstance(worker, int) else None,
                joined_seq=joined_seq, connected_at=now, last_seen=now,
                lost=old.lost if old else 0, token=token if isinstance(token, bytes) else b"")
            self._by_identity[identity] = info
            return info

    def set_joined(self, identity: bytes, joined_seq: int) -> None:
        """Record the snapshot sequence number a client joined at."""
        with self._cond:
            info = self._by_identity.get(identity)
            if info:
                self._by_identity[identity] = replace(info, joined_seq=joined_seq,
                                                      last_seen=time.monotonic())

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
        """Registered clients by process id."""
        with self._cond:
            return {c.pid: c for c in self._by_identity.values()}

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

    def remove_pid(self, pid: int) -> ClientInfo | None:
        """Forget the client of a process that ended (the pool saw it go)."""
        with self._cond:
            identity = next((i for i, c in self._by_identity.items() if c.pid == pid), None)
        return None if identity is None else self.remove(identity)

    def clients(self) -> list[ClientInfo]:
        """Every registered client, by id."""
        with self._cond:
            return sorted(self._by_identity.values(), key=lambda c: c.id)

    def expired(self, older_than: float) -> list[ClientInfo]:
        """Clients not heard from since the monotonic time ``older_than``."""
        with self._cond:
            # A client still waiting for its snapshot is the join timeout's business.
            return [c for c in self._by_identity.values()
                    if c.last_seen < older_than and c.joined_seq != NOT_JOINED]

    def record_ack(self, identity: bytes, body: dict[str, Any]) -> Ack | None:
        """Store an ack from a registered client; None if the client is unknown."""
        with self._cond:
            info = self._by_identity.get(identity)
            if info is None:
                return None
            seq = int(body.get("seq") or 0)
            errors = body.get("errors") or ()
            ack = Ack(client=info.id, seq=seq, ok=bool(body.get("ok")),
                      result=body.get("result"),
                      errors=tuple(e for e in errors if isinstance(e, dict)))
            self._acks.setdefault(seq, {})[info.id] = ack
            while len(self._acks) > ACK_MEMORY:
                self._acks.popitem(last=False)
            self._by_identity[identity] = replace(
                info, last_seen=time.monotonic(), last_ack_seq=max(info.last_ack_seq, seq))
            self._settle(info.id, seq)
            return ack

    def expected(self, seq: int) -> set[int]:
        """Ids of the clients that will receive ``seq``: joined before it."""
        with self._cond:
            return {c.id for c in self._by_identity.values()
                    if c.joined_seq < seq and c.role != "control"}

    def behind(self, seq: int) -> list[ClientInfo]:
        """Clients (not busctl's) that have not reported receiving ``seq`` yet, by id.

        A client still waiting for its snapshot counts as behind: its
        snapshot will hold ``seq`` once it comes.
        """
        with self._cond:
            return sorted((c for c in self._by_identity.values()
                           if c.role != "control" and (c.last_seq < seq
                                                       or c.joined_seq == NOT_JOINED)),
                          key=lambda c: c.id)

    def wait_acks(self, seqs: Iterable[int], expected: set[int], timeout: float,
                  on_timeout: Callable[[list[ClientInfo], AckReport], Exception]) -> AckReport:
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
            missing = {cid: {s for s in seqs if cid not in self._acks.get(s, {})}
                       for cid in expected & present}
            missing = {cid: owed for cid, owed in missing.items() if owed}
            self._waits.append(missing)
            try:
                while missing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        silent = [c for c in self._by_identity.values() if c.id in missing]
                        present = {c.id for c in self._by_identity.values()}
                        raise on_timeout(sorted(silent, key=lambda c: c.id),
                                         self._report(seqs, expected - set(missing), present))
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
                acks.append(Ack(client=cid, seq=seqs[-1], ok=all(a.ok for a in got),
                                result=got[-1].result,
                                errors=tuple(e for a in got for e in a.errors)))
        lost = tuple(self._departed[cid] for cid in sorted(expected - answered - present)
                     if cid in self._departed)
        known = {c.id: c for c in (*self._departed.values(), *self._by_identity.values())}
        labels = tuple((a.client, known[a.client].label()) for a in acks
                       if not a.ok and a.client in known)
        return AckReport(seqs=seqs, acks=tuple(acks), lost=lost, labels=labels)
