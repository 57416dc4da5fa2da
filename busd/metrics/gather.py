"""The workers' registries, gathered over the bus for one scrape, each with a bound.

::

    [busd-metrics] relay_asking("busd.metrics", have) --PUBLISH, ack--> every worker: its
        dispatcher answers with its registry (busd.client.metrics.report) in the ACK,
        or that it is the same as the one the master has (its digest in ``have``)
    wait_acks(hub.door, seq, the pools' workers, bound) <--Acked news-- [busd-hub]
        answered -> WorkerReport(pool, slot, pid, families)
        silent past the bound -> missing (counted; its last values stand in)

Only the pools' workers are asked (their HELLO names a pool); busctl,
read-only clients, joined hosts and workers being retired are not waited for.
The command thread is never involved: a long command does not hold a scrape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from busd.core.wire import METRICS_CHANNEL
from busd.master.acks import AckReport, AckSource, wait_acks
from busd.master.clients import ClientInfo, ClientTable
from busd.metrics.merge import WorkerReport

#: The channel a scrape relays; a worker acks it with its registry.
CHANNEL = METRICS_CHANNEL


class Asking(Protocol):
    """The master, as a scrape sees it."""

    def relay_asking(
        self, channel: str, kwargs: dict[str, Any] | None = None
    ) -> tuple[int, ClientTable]:
        """Relay ``channel`` with ack; its seq and the clients then."""


@dataclass(frozen=True)
class Gathered:
    """One scrape's answers, and the workers that did not answer in time."""

    reports: tuple[WorkerReport, ...]
    missing: tuple[tuple[str, int, int], ...]


class _Partial(Exception):
    def __init__(self, report: AckReport) -> None:
        super().__init__("some workers did not answer")
        self.report = report


def gather(
    master: Asking, door: AckSource, timeout: float, have: Mapping[int, str] | None = None
) -> Gathered:
    """Ask every pool worker for its registry; wait at most ``timeout`` seconds.

    ``have``: by pid, the digest of the report the master holds from that
    worker; one whose report has not changed answers only that it is the same.
    """
    asked = {"have": {str(pid): digest for pid, digest in have.items()}} if have else None
    seq, table = master.relay_asking(CHANNEL, asked)
    workers = {c.id: c for c in table.clients if _asked(c, seq)}
    if not workers:
        return Gathered((), ())
    try:
        report = wait_acks(
            door, [seq], set(workers), timeout, lambda silent, partial: _Partial(partial)
        )
    except _Partial as exc:
        report = exc.report
    reports, answered = [], set()
    for ack in report.acks:
        client = workers.get(ack.client)
        answer = _answer(ack.result)
        if client is None or answer is None:
            continue
        answered.add(ack.client)
        families, digest, same = answer
        reports.append(
            WorkerReport(client.pool, client.worker or 0, client.pid, families, digest, same)
        )
    gone = {c.id for c in report.lost}
    missing = tuple(
        (c.pool, c.worker or 0, c.pid)
        for cid, c in sorted(workers.items())
        if cid not in answered and cid not in gone
    )
    return Gathered(tuple(reports), missing)


def _asked(client: ClientInfo, seq: int) -> bool:
    return bool(
        client.pool and client.role == "worker" and client.joined_seq < seq and client.awaited()
    )


def _answer(result: Any) -> tuple[tuple[Mapping[str, Any], ...], str, bool] | None:
    """An ACK's result as (families, digest, same); None: not a report (e.g. cut for
    its size).  ``{"same": digest}`` is (no families, digest, True)."""
    if not isinstance(result, Mapping):
        return None
    digest = result.get("digest", "")
    same = result.get("same")
    if isinstance(same, str) and same:
        return (), same, True
    families = result.get("families")
    if not isinstance(families, list):
        return None
    kept = tuple(f for f in families if isinstance(f, Mapping))
    return kept, digest if isinstance(digest, str) else "", False


__all__ = ["CHANNEL", "Gathered", "gather"]
