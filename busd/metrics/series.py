"""busd's own series, read from one status document (what ``busctl --json status`` prints).

Every figure comes from the status the hub answers at once: the master's
state and counters, each pool's entry and every worker's row.  Nothing here
asks a thread for anything; :mod:`busd.metrics.owner` fetches the document.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

STATES = ("STOPPED", "STARTING", "STARTED", "STOPPING", "EXITING")
#: The names of busd's own families (an application's of the same name is left out).
OWN = frozenset(
    {
        "busd_state",
        "busd",
        "busd_info",
        "busd_commands",
        "busd_reload_duration_seconds",
        "busd_relay_messages",
        "busd_relay_replayed",
        "busd_relay_lost",
        "busd_clients",
        "busd_workers",
        "busd_worker_restarts",
        "busd_worker_cpu_seconds",
        "busd_worker_resident_memory_bytes",
        "busd_worker_open_fds",
        "busd_worker_uptime_seconds",
        "busd_scrape_missing_workers",
    }
)


def master_families(status: Mapping[str, Any], version: str) -> list[Metric]:
    """The master's state, identity, commands, reloads, relay and clients."""
    state = GaugeMetricFamily(
        "busd_state", "1 for the master's current lifecycle state", labels=["state"]
    )
    for name in STATES:
        state.add_metric([name], 1.0 if status.get("state") == name else 0.0)
    info = InfoMetricFamily("busd", "This busd master")
    info.add_metric(
        [],
        {
            "version": version,
            "name": str(status.get("name", "")),
            "epoch": str(status.get("epoch", "")),
        },
    )
    commands = CounterMetricFamily(
        "busd_commands", "Commands run by the master", labels=["command", "result"]
    )
    for command, counts in sorted(_mapping(status.get("commands")).items()):
        for result, count in sorted(_mapping(counts).items()):
            commands.add_metric([str(command), str(result)], float(count))
    counters = _mapping(status.get("counters"))
    relay = [
        CounterMetricFamily(
            "busd_relay_messages",
            "Messages relayed to the clients in this master's epoch (states, publishes, events)",
            value=float(status.get("seq") or 0),
        ),
        CounterMetricFamily(
            "busd_relay_replayed",
            "Messages sent again to clients that missed them",
            value=float(counters.get("replayed", 0)),
        ),
        CounterMetricFamily(
            "busd_relay_lost",
            "Messages clients asked for after they had left the replay window",
            value=float(counters.get("replay_lost", 0)),
        ),
    ]
    clients = GaugeMetricFamily("busd_clients", "Connected clients by role", labels=["role"])
    roles = Counter(str(c.get("role")) for c in _rows(status.get("clients")))
    for role, count in sorted(roles.items()):
        clients.add_metric([role], float(count))
    return [state, info, commands, reload_histogram(status), *relay, clients]


def reload_histogram(status: Mapping[str, Any]) -> HistogramMetricFamily:
    """How long each graceful with every ack took."""
    reloads = _mapping(status.get("reloads"))
    count = float(reloads.get("count") or 0)
    buckets = [
        (_le(bound), float(n))
        for bound, n in (b for b in reloads.get("buckets") or [] if isinstance(b, list))
    ]
    return HistogramMetricFamily(
        "busd_reload_duration_seconds",
        "graceful --wait, from the command to every ack (and every old worker gone)",
        buckets=[*buckets, ("+Inf", count)],
        sum_value=float(reloads.get("sum") or 0.0),
    )


def pool_families(status: Mapping[str, Any]) -> list[Metric]:
    """Workers by pool and state, exits by reason, and each worker's resources."""
    workers = GaugeMetricFamily(
        "busd_workers",
        "Workers by pool and state (as busctl status shows it)",
        labels=["pool", "state"],
    )
    rows = _rows(status.get("workers"))
    by_state = Counter((str(r.get("pool", "main")), str(r.get("state"))) for r in rows)
    for (pool, state), count in sorted(by_state.items()):
        workers.add_metric([pool, state], float(count))
    restarts = CounterMetricFamily(
        "busd_worker_restarts",
        "Workers that ended other than by a stop, by pool and reason",
        labels=["pool", "reason"],
    )
    for entry in _rows(status.get("pools")):
        for reason, count in sorted(_mapping(entry.get("exits")).items()):
            restarts.add_metric([str(entry.get("name")), str(reason)], float(count))
    labels = ["pool", "slot"]
    cpu = CounterMetricFamily("busd_worker_cpu_seconds", "CPU time of each worker", labels=labels)
    rss = GaugeMetricFamily(
        "busd_worker_resident_memory_bytes", "Resident memory of each worker", labels=labels
    )
    fds = GaugeMetricFamily(
        "busd_worker_open_fds", "Open descriptors of each worker", labels=labels
    )
    uptime = GaugeMetricFamily(
        "busd_worker_uptime_seconds", "Seconds since each worker started", labels=labels
    )
    for row in rows:
        if row.get("pid") is None:
            continue
        key = [str(row.get("pool", "main")), str(row.get("id"))]
        for family, field in ((cpu, "cpu_seconds"), (rss, "rss"), (fds, "fds"), (uptime, "uptime")):
            value = row.get(field)
            if isinstance(value, int | float) and not isinstance(value, bool):
                family.add_metric(key, float(value))
    return [workers, restarts, cpu, rss, fds, uptime]


def missing_family(missing: int) -> GaugeMetricFamily:
    """``busd_scrape_missing_workers``."""
    return GaugeMetricFamily(
        "busd_scrape_missing_workers",
        "Workers that did not send their metrics within the scrape's bound (their last "
        "values were used)",
        value=float(missing),
    )


class Families(Collector):
    """A collector that yields the families it was given (for one exposition)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        """The families."""
        return self.families


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _rows(value: Any) -> list[Mapping[str, Any]]:
    return [r for r in value if isinstance(r, Mapping)] if isinstance(value, list) else []


def _le(bound: Any) -> str:
    return str(float(bound)) if isinstance(bound, int | float) else str(bound)


__all__ = ["OWN", "STATES", "Families", "master_families", "missing_family", "pool_families"]
