"""The hub's live table of its clients and of their acknowledgements.

::

    [busd-hub] (the only thread that touches a Registry)
      HELLO, PONG, ACK, BYE, losses, replay losses --> Registry --snapshot()--> ClientTable
      Outbox: ExcusePid, ForgetPid, WatchAcks ------->    |        (published by the hub,
                                                          |         read by any thread)
                                 each ack, departure -----+--> a watch's inbox --> the
                                 of an expected client         waiting thread (AckNews)

The registry belongs to the hub: only the hub thread registers clients,
records what they say and answers other threads' requests about them, so
it takes no lock.  Other threads read the :class:`ClientTable` snapshots the
hub publishes after each change, and wait for acks on an inbox a watch
fills (:mod:`busd.master.acks`).  ``changed`` tells the hub a new snapshot
is due before anything leaves it; ``stale``, by the end of its wake-up.

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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from busd.core.wire import ERRORS_LIMIT, Ack, ErrorCode, wire_error
from busd.master.acks import (
    Acked,
    AckNews,
    AckReport,
    AckSink,
    Settled,
    Watching,
    bounded_error,
    bounded_result,
)
from busd.master.clients import (
    NOT_JOINED,
    READONLY_ROLE,
    STATE_NAMES,
    ClientInfo,
    ClientTable,
    bye_reason,
    hello_fields,
)

#: How many sequence numbers' acks are kept; older ones are forgotten.
ACK_MEMORY = 4096
#: How long an ack's result is kept for a thread that watches its seq only later (s),
#: and how many encoded bytes of results are kept at most: past either, the oldest
#: results are forgotten (their acks, ok and errors, stay).  A waiter watches its seq
#: right after it publishes; a scrape every 15 s of 32 workers' registries would
#: otherwise keep 4096 scrapes' worth (about 1 GB) and make every collection longer.
RESULT_KEEP = 30.0
RESULT_BYTES = 16 << 20


@dataclass(frozen=True)
class _Watch:
    """A thread waiting for the acks of ``seqs`` from ``expected``, through ``sink``."""

    seqs: frozenset[int]
    expected: frozenset[int]
    sink: AckSink


class Registry:
    """Clients by routing identity, and the acks they sent (the hub thread's alone)."""

    def __init__(self) -> None:
        self._by_identity: dict[bytes, ClientInfo] = {}
        self._next_id = 1
        self._acks: collections.OrderedDict[int, dict[int, Ack]] = collections.OrderedDict()
        #: (when, seq, client id, size) of each result kept, oldest first, and their sum.
        self._results: collections.deque[tuple[float, int, int, int]] = collections.deque()
        self._result_bytes = 0
        self._departed: dict[int, ClientInfo] = {}
        self._watches: list[_Watch] = []
        #: Ids of clients the pool retired (bounded): leaving is not being lost.
        self._excused: collections.OrderedDict[int, None] = collections.OrderedDict()
        #: Pids the pool is retiring, until it reaps them: one that says HELLO
        #: only now (SIGTERMed before it joined) is leaving from the start.
        self._leaving_pids: collections.OrderedDict[int, None] = collections.OrderedDict()
        #: Called (on the hub thread, by :meth:`run_state_hooks`) when a client's
        #: state changes; they must only wake their owner (the pool: a pipe byte).
        self.state_hooks: list[Callable[[ClientInfo], None]] = []
        self._state_changes: list[ClientInfo] = []
        #: Ack news for the watches, held until :meth:`deliver`.
        self._news: list[tuple[AckSink, AckNews]] = []
        #: Set by a change others must see before the hub sends anything more
        #: (a client came, went, joined, acked, changed state or is retired).
        self.changed = True
        #: Set by a change that may wait for the end of the hub's wake-up
        #: (last heard from, last seq applied, messages lost).
        self.stale = False

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
        old = self._by_identity.get(identity)
        client_id = old.id if old else self._next_id
        if not old:
            self._next_id += 1
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
        self.changed = True
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
        info = self._by_identity.get(identity)
        if info:
            self._by_identity[identity] = replace(
                info, joined_seq=joined_seq, last_seen=time.monotonic()
            )
            self.changed = True

    def get(self, identity: bytes) -> ClientInfo | None:
        """The client with this routing identity, if registered."""
        return self._by_identity.get(identity)

    def touch(self, identity: bytes, **fields: Any) -> ClientInfo | None:
        """Note that a client was heard from, updating any given fields."""
        info = self._by_identity.get(identity)
        if info is None:
            return None
        changed = "state" in fields and fields["state"] != info.state
        info = replace(info, last_seen=time.monotonic(), **fields)
        self._by_identity[identity] = info
        if changed:
            self.changed = True
            if self.state_hooks:
                self._state_changes.append(info)
        else:  # a sign of life, a seq applied: the next snapshot of this wake-up will do
            self.stale = True
        return info

    def deliver(self) -> None:
        """Send what was noted since the last call: ack news, then state changes to the hooks.

        The hub calls this once the snapshot holding those changes is
        published, so whoever the news wakes finds them there.
        """
        news, self._news = self._news, []
        for sink, item in news:
            sink.put(item)
        changes, self._state_changes = self._state_changes, []
        for info in changes:
            for hook in self.state_hooks:
                hook(info)

    def add_lost(self, identity: bytes, count: int) -> None:
        """Count messages a client lost (it fell further behind than the replay window)."""
        info = self._by_identity.get(identity)
        if info is not None:
            self._by_identity[identity] = replace(info, lost=info.lost + count)
            self.stale = True

    def snapshot(self) -> ClientTable:
        """Every registered client now, by id, as an immutable table."""
        # In id order already: ids only grow, a new client is added last, and
        # replacing a client keeps its place.
        return ClientTable(tuple(self._by_identity.values()))

    def by_pid(self) -> dict[int, ClientInfo]:
        """Registered clients by process id (read-only clients have none)."""
        return {c.pid: c for c in self._by_identity.values() if not c.readonly}

    def remove(self, identity: bytes) -> ClientInfo | None:
        """Forget a client (it said BYE or was lost); settles it in every watch."""
        info = self._by_identity.pop(identity, None)
        if info is not None:
            self.changed = True
            self._departed[info.id] = info
            if len(self._departed) > ACK_MEMORY:
                self._departed.pop(next(iter(self._departed)))
            lost = None if info.id in self._excused else info
            self._tell(info.id, None, Settled(info.id, lost))
        return info

    def excuse_pid(self, pid: int) -> ClientInfo | None:
        """The pool is retiring process ``pid``: no ack wait waits for its client.

        Waits in progress stop waiting for it, later ones do not expect it,
        and its leaving (before it answered) is not counted as lost.
        """
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
        self.changed = True
        self._excused[info.id] = None
        while len(self._excused) > ACK_MEMORY:
            self._excused.popitem(last=False)
        self._tell(info.id, None, Settled(info.id))
        return info

    def remove_pid(self, pid: int) -> ClientInfo | None:
        """Forget the client of a process that ended (the pool saw it go)."""
        self._leaving_pids.pop(pid, None)  # the number may name another process now
        identity = next(
            (i for i, c in self._by_identity.items() if c.pid == pid and not c.readonly), None
        )
        return None if identity is None else self.remove(identity)

    def clients(self) -> list[ClientInfo]:
        """Every registered client, by id."""
        return list(self.snapshot().clients)

    def expired(
        self, older_than: float, by_role: Mapping[str, float] | None = None
    ) -> list[ClientInfo]:
        """Clients not heard from since the monotonic time ``older_than``.

        ``by_role`` gives some roles their own time instead (a joined host is
        held to the master's heartbeat x liveness, as it holds the master).
        """
        limits = by_role or {}
        # A client still waiting for its snapshot is the join timeout's business.
        return [
            c
            for c in self._by_identity.values()
            if c.last_seen < limits.get(c.role, older_than) and c.joined_seq != NOT_JOINED
        ]

    def record_ack(self, identity: bytes, body: dict[str, Any], frame_size: int = 0) -> Ack | None:
        """Store an ack from a registered client; None if unknown or read-only.

        ``frame_size``: the size of the frame it came in, if known.
        """
        seq = body.get("seq")
        if type(seq) is not int or seq < 1:
            raise wire_error(ErrorCode.BAD_ARGUMENTS, "ACK: 'seq' must be an integer >= 1")
        errors = body.get("errors") or ()
        if not isinstance(errors, list | tuple):
            raise wire_error(ErrorCode.BAD_ARGUMENTS, "ACK: 'errors' must be a list")
        info = self._by_identity.get(identity)
        if info is None or info.readonly:
            return None
        result, size = bounded_result(body.get("result"), frame_size)
        ack = Ack(
            client=info.id,
            seq=seq,
            ok=body.get("ok") is True,
            result=result,
            errors=tuple(bounded_error(e) for e in errors[:ERRORS_LIMIT] if isinstance(e, dict)),
        )
        self._acks.setdefault(seq, {})[info.id] = ack
        while len(self._acks) > ACK_MEMORY:
            self._acks.popitem(last=False)
        now = time.monotonic()
        if size:
            self._results.append((now, seq, info.id, size))
            self._result_bytes += size
        self._forget_results(now)
        self._by_identity[identity] = replace(
            info, last_seen=now, last_ack_seq=max(info.last_ack_seq, seq)
        )
        self.changed = True
        self._tell(info.id, seq, Acked(ack, info.label()))
        return ack

    def _forget_results(self, now: float) -> None:
        """Drop the results kept longer than RESULT_KEEP, or past RESULT_BYTES."""
        results = self._results
        while results and (self._result_bytes > RESULT_BYTES or now - results[0][0] > RESULT_KEEP):
            _, seq, cid, size = results.popleft()
            self._result_bytes -= size
            held = self._acks.get(seq, {}).get(cid)
            if held is not None and held.result is not None:
                self._acks[seq][cid] = held._replace(result=None)

    def expected(self, seq: int) -> set[int]:
        """Ids of the clients that will receive ``seq``: joined before it."""
        return self.snapshot().expected(seq)

    def behind(self, seq: int) -> list[ClientInfo]:
        """Clients (not busctl's) that have not reported receiving ``seq`` yet, by id.

        A client still waiting for its snapshot counts as behind: its
        snapshot will hold ``seq`` once it comes.
        """
        return sorted(
            (
                c
                for c in self._by_identity.values()
                if c.role != "control" and (c.last_seq < seq or c.joined_seq == NOT_JOINED)
            ),
            key=lambda c: c.id,
        )

    # -- ack watches: the news a waiting thread needs, as messages --------------------

    @property
    def watching(self) -> bool:
        """True while some thread waits for acks (a graceful --wait, a broadcast with wait)."""
        return bool(self._watches)

    def watch(self, seqs: tuple[int, ...], expected: frozenset[int], sink: AckSink) -> None:
        """Send ``sink`` what is known of ``expected``'s acks of ``seqs``, then each change.

        What is known: every recorded ack, and every client already gone
        (lost unless the pool retired it) or being retired; then
        :class:`Watching`.  Each later ack or departure of an expected
        client follows, until :meth:`unwatch`.  All of it is held until
        :meth:`deliver`.
        """
        present = {c.id for c in self._by_identity.values()}
        for cid in sorted(expected):
            for seq in seqs:
                ack = self._acks.get(seq, {}).get(cid)
                if ack is not None:
                    known = self._departed.get(cid) or self._find(cid)
                    label = known.label() if known else f"client {cid}"
                    self._news.append((sink, Acked(ack, label)))
            if cid in self._excused:
                self._news.append((sink, Settled(cid)))
            elif cid not in present:
                self._news.append((sink, Settled(cid, self._departed.get(cid))))
        self._news.append((sink, Watching()))
        self._watches.append(_Watch(frozenset(seqs), expected, sink))

    def unwatch(self, sink: AckSink) -> None:
        """Stop sending ``sink`` news (by identity: two sinks may compare equal)."""
        self._watches = [w for w in self._watches if w.sink is not sink]
        self._news = [n for n in self._news if n[0] is not sink]

    def _find(self, client: int) -> ClientInfo | None:
        return next((c for c in self._by_identity.values() if c.id == client), None)

    def _tell(self, client: int, seq: int | None, news: Acked | Settled) -> None:
        """Send news of ``client`` (an ack of ``seq``, or a departure) to the watches of it."""
        for watch in self._watches:
            if client in watch.expected and (seq is None or seq in watch.seqs):
                self._news.append((watch.sink, news))


__all__ = [
    "ACK_MEMORY",
    "NOT_JOINED",
    "RESULT_BYTES",
    "RESULT_KEEP",
    "AckReport",
    "ClientInfo",
    "ClientTable",
    "Registry",
    "bye_reason",
    "hello_fields",
]
