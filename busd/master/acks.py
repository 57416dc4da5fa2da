"""Waiting for acks: the hub forwards them as messages, the waiting thread tallies them.

::

    [busd-commands] seq sent; expected = the hub's ClientTable.expected(seq)
         |  (its own listeners run: acks and departures meanwhile are kept by the hub)
         +--WatchAcks(seqs, expected, inbox)--> Outbox --> [busd-hub] Registry
         |                                                   | acks already recorded,
         |  inbox (SimpleQueue[AckNews]) <-- Acked ------------+ departures already seen,
         |                                <-- Settled           | then Watching; then each new
         |                                <-- Watching          | ack or leave/loss/retirement
         |  AckTally: who still owes which seq                  | of an expected client
         +--Unwatch(inbox)-------------------> Outbox ------> (stops forwarding)
         v
    AckReport (built here), or timeout_error(silent clients, partial report)

The hub never waits and the waiting thread never reads the hub's table: it
learns everything from its inbox, bounded by the ack timeout.  Who must ack
is decided when the seq is sent, so a client that acks and leaves while the
master's own listeners still run is in the report, its failures included.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from busd.core import wire
from busd.core.wire import DESCRIBE_LIMIT, NAME_LIMIT, RESULT_LIMIT, Ack, clip
from busd.master.clients import ClientInfo, ClientTable

#: Seconds a timed-out wait still gives the hub to confirm it has sent what it knew.
CONFIRM_WAIT = 1.0

#: How often a wait for acks lets its thread do its other work (``meanwhile``).
MEANWHILE_EVERY = 0.05


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


# -- what the hub sends a waiting thread -------------------------------------------


@dataclass(frozen=True)
class Acked:
    """An expected client acked one of the watched seqs."""

    ack: Ack
    #: How a failure names the client.
    label: str


@dataclass(frozen=True)
class Settled:
    """An expected client owes nothing more: it left, was lost or is being retired.

    ``lost`` is the client as it was when it went, unless the pool retired
    it on purpose (then None): only then does its silence count as a loss.
    """

    client: int
    lost: ClientInfo | None = None


@dataclass(frozen=True)
class Watching:
    """Everything the hub knew before the watch has been sent; news follows."""


AckNews = Acked | Settled | Watching


class AckSink(Protocol):
    """Where the hub puts the news of a watch (a ``queue.SimpleQueue``)."""

    def put(self, item: AckNews) -> None:
        """Queue one item (never blocks)."""


class AckSource(Protocol):
    """What a waiting thread asks of the hub."""

    def watch_acks(self, seqs: tuple[int, ...], expected: frozenset[int], sink: AckSink) -> None:
        """Send ``sink`` what is known of these seqs and clients, then each change."""

    def unwatch_acks(self, sink: AckSink) -> None:
        """Stop sending ``sink`` anything."""

    def client_table(self) -> ClientTable:
        """The newest snapshot of the clients."""


class AckTally:
    """Who still owes which seq, and what each expected client said (one thread's)."""

    def __init__(self, seqs: tuple[int, ...], expected: Iterable[int]) -> None:
        self.seqs = seqs
        self.expected = frozenset(expected)
        self._owed = {cid: set(seqs) for cid in self.expected}
        self._acks: dict[int, dict[int, Ack]] = {}
        self._labels: dict[int, str] = {}
        self._lost: dict[int, ClientInfo] = {}
        self.confirmed = False

    @property
    def missing(self) -> set[int]:
        """Ids of the expected clients that still owe an ack and have not gone."""
        return set(self._owed)

    def take(self, news: AckNews) -> None:
        """Count one message from the hub."""
        if type(news) is Acked:
            ack = news.ack
            self._acks.setdefault(ack.client, {})[ack.seq] = ack
            self._labels[ack.client] = news.label
            owed = self._owed.get(ack.client)
            if owed is not None:
                owed.discard(ack.seq)
                if not owed:
                    del self._owed[ack.client]
        elif type(news) is Settled:
            self._owed.pop(news.client, None)
            if news.lost is not None:
                self._lost[news.client] = news.lost
        else:
            self.confirmed = True

    def report(self, leave_out: Iterable[int] = ()) -> AckReport:
        """The acks of every expected client (but ``leave_out``) that answered every seq."""
        seqs = self.seqs
        counted = self.expected - set(leave_out)
        acks: list[Ack] = []
        for cid in sorted(counted):
            got = self._acks.get(cid, {})
            per_seq = [got[s] for s in seqs if s in got]
            if len(per_seq) == len(seqs):
                acks.append(
                    Ack(
                        client=cid,
                        seq=seqs[-1],
                        ok=all(a.ok for a in per_seq),
                        result=per_seq[-1].result,
                        errors=tuple(e for a in per_seq for e in a.errors),
                    )
                )
        answered = {a.client for a in acks}
        lost = tuple(self._lost[cid] for cid in sorted(counted - answered) if cid in self._lost)
        labels = tuple(
            (a.client, self._labels[a.client])
            for a in acks
            if not a.ok and a.client in self._labels
        )
        return AckReport(seqs=seqs, acks=tuple(acks), lost=lost, labels=labels)


def wait_acks(
    source: AckSource,
    seqs: Iterable[int],
    expected: set[int],
    timeout: float,
    on_timeout: Callable[[list[ClientInfo], AckReport], Exception],
    meanwhile: Callable[[], None] | None = None,
) -> AckReport:
    """Wait until every expected client acked every seq, or left.

    Raises what ``on_timeout(silent_clients, partial_report)`` returns when
    ``timeout`` passes first.  ``meanwhile()``, if given, is called every
    MEANWHILE_EVERY seconds of the wait (the waiting thread's other work).
    """
    tally = AckTally(tuple(seqs), expected)
    if not tally.missing:
        return tally.report()
    deadline = time.monotonic() + timeout
    step = timeout if meanwhile is None else MEANWHILE_EVERY
    next_meanwhile = time.monotonic() + MEANWHILE_EVERY
    inbox: queue.SimpleQueue[AckNews] = queue.SimpleQueue()
    source.watch_acks(tally.seqs, tally.expected, inbox)
    try:
        while tally.missing:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                _timed_out(source, tally, inbox, on_timeout)
                break
            if meanwhile is not None and now >= next_meanwhile:
                meanwhile()
                next_meanwhile = time.monotonic() + MEANWHILE_EVERY
            try:
                tally.take(inbox.get(timeout=min(remaining, step)))
            except queue.Empty:
                continue
            # Every ack the hub handed over in the same wake-up, without waiting again.
            for _ in range(inbox.qsize()):
                tally.take(inbox.get_nowait())
    finally:
        source.unwatch_acks(inbox)
    return tally.report()


def _timed_out(
    source: AckSource,
    tally: AckTally,
    inbox: queue.SimpleQueue[AckNews],
    on_timeout: Callable[[list[ClientInfo], AckReport], Exception],
) -> None:
    """Raise the timeout, unless what the hub knew before the wait settles it."""
    end = time.monotonic() + CONFIRM_WAIT
    while not tally.confirmed and tally.missing and time.monotonic() < end:
        try:
            tally.take(inbox.get(timeout=max(0.0, end - time.monotonic())))
        except queue.Empty:
            break
    # The table before the news: a client gone from it has its Settled in the inbox.
    table = source.client_table()
    while tally.missing:
        try:
            tally.take(inbox.get_nowait())
        except queue.Empty:
            break
    missing = tally.missing
    if missing:
        silent = [c for c in table.clients if c.id in missing]
        raise on_timeout(silent, tally.report(leave_out=missing))


# -- what an ACK may say ------------------------------------------------------------


def bounded_result(result: Any, frame_size: int = 0) -> tuple[Any, int]:
    """An ACK's ``result`` (or a note in its place when it encodes to over
    ``RESULT_LIMIT``) and its encoded size (0 for none, a scalar or a note).

    ``frame_size``: the size of the ACK frame it came in, if known; a frame
    within the limit holds a result within it, which is not encoded again to
    be measured (the frame's size stands for its size).
    """
    if result is None or isinstance(result, bool | int | float):
        return result, 0
    if 0 < frame_size <= RESULT_LIMIT:
        return result, frame_size
    try:
        size = len(wire.pack(result))
    except (TypeError, ValueError, OverflowError):
        return "(a result that cannot be encoded)", 0
    if size <= RESULT_LIMIT:
        return result, size
    return f"(a result of {size} bytes, over the {RESULT_LIMIT}-byte limit)", 0


def bounded_error(error: dict[str, Any]) -> dict[str, str]:
    """One listener failure of an ACK as ``{type, message}``, each cut to its limit."""
    return {
        "type": clip(error.get("type", ""), NAME_LIMIT),
        "message": clip(error.get("message", ""), DESCRIBE_LIMIT),
    }
