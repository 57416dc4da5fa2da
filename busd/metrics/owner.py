"""The metrics thread: it alone gathers, merges and renders a scrape.

::

    HTTP thread (GET /metrics) --Scrape(accept, reply)--+
    command thread (busctl metrics) --Scrape----------+-+--> [busd-metrics] inbox
                                                             (blocks: no wake-up of its own)
        status <- the hub, at once (its own DEALER on the master's ipc endpoint)
        the workers' registries <- gather (busd.metrics.gather), bounded; a worker
            whose registry did not change since the last scrape says only so
        Merger (busd.metrics.merge): counters per pool, never going down
        render: Prometheus text, or OpenMetrics when the scraper asks
      reply.set_result((body, content type)) ------------------> the asker

The Merger (what every worker last said, and what departed workers leave to
their pool) belongs to this thread alone; other threads send it a Scrape and
wait for the answer, each wait bounded.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from busd import __version__
from busd.core.control import Control
from busd.core.errors import BusError
from busd.master.bus import MasterBus
from busd.master.osthread import name_os_thread
from busd.metrics.gather import gather
from busd.metrics.merge import Merger
from busd.metrics.series import (
    OWN,
    Families,
    master_families,
    missing_family,
    pool_families,
)

#: How long a scrape waits for the workers' registries.
GATHER_TIMEOUT = 0.15
#: How long an asker waits for the metrics thread's answer.
ANSWER_TIMEOUT = 5.0
TEXT = "text/plain"


@dataclass(frozen=True)
class Scrape:
    """Render every series for a scraper that accepts ``accept``."""

    accept: str
    reply: Future[tuple[bytes, str, list[dict[str, Any]]]]


class MetricsOwner:
    """The metrics thread and its inbox; see the module docstring."""

    def __init__(self, master: MasterBus, gather_timeout: float = GATHER_TIMEOUT) -> None:
        self.master = master
        self.gather_timeout = gather_timeout
        self._inbox: queue.SimpleQueue[Scrape | None] = queue.SimpleQueue()
        self._merger = Merger()
        self._thread = threading.Thread(target=self._run, name="busd-metrics", daemon=True)
        self._thread.start()

    def scrape(self, accept: str = TEXT) -> tuple[bytes, str, list[dict[str, Any]]]:
        """The body, its content type and the families as data (any thread but this one's)."""
        ask = Scrape(accept, Future())
        self._inbox.put(ask)
        try:
            return ask.reply.result(ANSWER_TIMEOUT)
        except FutureTimeout:
            raise BusError(f"the metrics were not ready within {ANSWER_TIMEOUT:g}s") from None

    def close(self) -> None:
        """End the thread (what it is doing finishes first, bounded)."""
        self._inbox.put(None)
        self._thread.join(ANSWER_TIMEOUT + 1.0)

    # -- the metrics thread ----------------------------------------------------------------

    def _run(self) -> None:
        name_os_thread("busd-metrics")
        control = Control(self.master.hub.ctl_endpoints[0], timeout=2.0)
        process = ProcessCollector(registry=None)
        try:
            while (item := self._inbox.get()) is not None:
                try:
                    item.reply.set_result(self._render(control, process, item.accept))
                except Exception as exc:  # noqa: BLE001 - the asker is told; the thread goes on
                    item.reply.set_exception(exc)
        finally:
            control.close()

    def _render(
        self, control: Control, process: ProcessCollector, accept: str
    ) -> tuple[bytes, str, list[dict[str, Any]]]:
        status = control.request("status")
        if not isinstance(status, Mapping):
            raise BusError("the master's status was not a map")
        door, have = self.master.hub.door, self._merger.digests()
        gathered = gather(self.master, door, self.gather_timeout, have)
        merged = self._merger.merge(gathered.reports, gathered.missing)
        families = [
            *master_families(status, __version__),
            *process.collect(),
            *pool_families(status),
            missing_family(len(gathered.missing)),
            *(to_metric(f) for f in merged if f.get("name") not in OWN),
        ]
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Families(families))
        encoder, content_type = choose_encoder(accept)
        return encoder(registry), content_type, [as_data(f) for f in families]


def to_metric(family: Mapping[str, Any]) -> Metric:
    """A merged family (plain data) as prometheus_client's Metric."""
    metric = Metric(str(family["name"]), str(family.get("help", "")), str(family["type"]))
    for name, labels, value in family.get("samples") or []:
        metric.add_sample(str(name), {str(k): str(v) for k, v in labels.items()}, float(value))
    return metric


def as_data(metric: Metric) -> dict[str, Any]:
    """A family as JSON data (``busctl --json metrics``)."""
    return {
        "name": metric.name,
        "type": metric.type,
        "help": metric.documentation,
        "samples": [
            {"name": s.name, "labels": dict(s.labels), "value": s.value} for s in metric.samples
        ],
    }


__all__ = ["GATHER_TIMEOUT", "MetricsOwner", "Scrape", "as_data", "to_metric"]
