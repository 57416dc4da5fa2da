"""What a worker reports of its own prometheus_client metrics, as plain data.

The master gathers every worker's registry when it is scraped: it relays a
publish on ``busd.metrics`` with ack, and each worker answers with
:func:`report`, msgpack data only::

    {"families": [
        {"name": "hits", "type": "counter", "help": "Hits.", "mode": "all",
         "samples": [["hits_total", {"path": "/"}, 5.0]]},
        ...
     ],
     "digest": "5c0f4e9d1a2b3c4d"}

``digest`` names these families' values (a hash of their msgpack encoding).
The scrape's ``have`` argument maps each worker's pid (a string) to the digest
of the report the master holds from it; a worker whose report has not changed
since answers ``{"same": digest}`` instead, and the master keeps using what it
holds.  An idle pool's scrape then carries, decodes and merges no family.

``mode`` is prometheus_client's ``multiprocess_mode`` of a Gauge (``"all"``
for every other family, and for a gauge whose mode cannot be read); the
master merges gauges per pool as it says (busd.metrics.merge).

prometheus_client is looked up in ``sys.modules``, never imported: a worker
whose application does not use it pays nothing and reports no family.  Left
out: the default collectors' families (``process_*``, ``python_*``: per-worker
CPU and memory are busd's own series), every ``*_created`` sample (a
timestamp, meaningless summed), timestamps and exemplars.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from busd.core.wire import pack

_log = logging.getLogger(__name__)

#: Families of prometheus_client's default collectors, left out of a report.
DEFAULT_PREFIXES = ("process_", "python_")


def report(have: Any = None) -> dict[str, Any]:
    """This process's ``prometheus_client.REGISTRY`` as plain data; never raises.

    ``{"families": []}`` when the application has not imported
    prometheus_client; a collector that fails is left out (and logged), the
    rest are reported.  ``have``: the scrape's map of pid to the digest the
    master holds; ``{"same": digest}`` when it holds this report already.
    """
    module = sys.modules.get("prometheus_client")
    if module is None:
        return {"families": []}
    families = _families(module)
    digest = _digest(families)
    if digest and isinstance(have, Mapping) and have.get(str(os.getpid())) == digest:
        return {"same": digest}
    return {"families": families, "digest": digest} if digest else {"families": families}


def _families(module: Any) -> list[dict[str, Any]]:
    """The registry's families, each collector read apart (one failing spares the rest)."""
    families: list[dict[str, Any]] = []
    try:
        for collect, mode in _sources(module.REGISTRY, getattr(module, "Gauge", None)):
            families.extend(_collect(collect, mode))
    except Exception:  # noqa: BLE001 - a report never fails the ack: logged, what was read goes
        _log.warning("metrics: cannot read prometheus_client's registry", exc_info=True)
    return families


def _digest(families: list[dict[str, Any]]) -> str:
    """A short hash of the families' encoding ("" if they do not encode)."""
    try:
        data = pack(families)
    except (TypeError, ValueError, OverflowError):
        return ""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


Source = tuple[Callable[[], Iterable[Any]], str]


def _sources(registry: Any, gauge: Any) -> list[Source]:
    """Each collector's ``collect`` with its gauge mode, collected apart (one failing
    spares the rest).

    prometheus_client keeps the collectors in ``_collector_to_names`` (under
    its lock), and the ``target_info`` family apart; without them, the
    registry is one collector.
    """
    by_collector = getattr(registry, "_collector_to_names", None)
    if not isinstance(by_collector, dict):
        return [(registry.collect, "all")]
    lock = getattr(registry, "_lock", None)
    if lock is None:
        collectors = list(by_collector)
    else:
        with lock:
            collectors = list(by_collector)
    sources = [(collector.collect, _mode(collector, gauge)) for collector in collectors]
    target_info = getattr(registry, "_target_info_metric", None)
    if getattr(registry, "_target_info", None) and callable(target_info):
        sources.insert(0, (lambda: [target_info()], "all"))
    return sources


def _mode(collector: Any, gauge: Any) -> str:
    """A Gauge's ``multiprocess_mode`` (prometheus_client keeps it on the collector)."""
    if not (isinstance(gauge, type) and isinstance(collector, gauge)):
        return "all"
    mode = getattr(collector, "_multiprocess_mode", "all")
    return mode if isinstance(mode, str) else "all"


def _collect(collect: Callable[[], Iterable[Any]], mode: str) -> list[dict[str, Any]]:
    """The families of one collector, as plain data; none if it fails."""
    try:
        return [
            _family(metric, mode)
            for metric in collect()
            if not str(getattr(metric, "name", "")).startswith(DEFAULT_PREFIXES)
        ]
    except Exception:  # noqa: BLE001 - a collector is user code: the others are still reported
        _log.warning("metrics: collector %r failed; its families left out", collect, exc_info=True)
        return []


def _family(metric: Any, mode: str) -> dict[str, Any]:
    name = str(metric.name)
    kind = str(metric.type)
    family: dict[str, Any] = {
        "name": name,
        "type": kind,
        "help": str(metric.documentation),
        "samples": list(_samples(name, metric.samples)),
    }
    if kind == "gauge":
        family["mode"] = mode
    return family


def _samples(family: str, samples: Iterable[Any]) -> Iterable[list[Any]]:
    created = f"{family}_created"
    for sample in samples:
        name = str(sample.name)
        if name == created:
            continue
        try:
            value = float(sample.value)
        except (TypeError, ValueError):
            continue
        yield [name, {str(k): str(v) for k, v in dict(sample.labels).items()}, value]


__all__ = ["DEFAULT_PREFIXES", "report"]
