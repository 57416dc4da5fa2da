"""Every worker's prometheus_client registry, merged into one view per pool.

Pure: no sockets, no threads, no prometheus_client.  The metrics endpoint's
thread owns one :class:`Merger` for the life of the master and feeds it, at
each scrape, the reports of the workers that answered (what
``busd.client.metrics.report()`` returned) and the workers that are alive
but did not answer in time::

    reports ──┐                        ┌─ counter, histogram, summary: summed per pool,
    missing ──┼─> Merger.merge() ──────┤  {pool}, never going down
    (state) ──┘   (workers' last       └─ gauge, info, stateset, gaugehistogram, unknown:
                   reports, bases)        per worker {pool, slot}, or per pool {pool} as
                                          a gauge's multiprocess_mode says

A worker whose registry did not change since the report the Merger holds
says only so (a report with ``same`` and that report's digest): it is heard
again, and nothing of it is checked or copied.

A family is plain data: ``{"name", "type", "help", "mode" (gauges),
"samples": [[sample_name, {label: value}, value], ...]}``; the merged view
is a list of families in the same form, by name, each one's samples sorted
by (pool, slot, labels) (a histogram's buckets by the number of ``le``).

A pool's counter never goes down: a worker that answered before and is now
neither answering nor missing has left (exited, replaced), and its last
counter-like values are folded into that pool's base, kept for the life of
the Merger; so is a sample whose value goes down in a worker (a counter
reset in place: prometheus_client's ``Counter.reset()``, or a pid reused for
the same slot).  A sample a worker stops reporting (a collector that failed
this once, a labelled child removed) is carried with its last value until
the worker leaves: never counted twice.  A worker that is only missing
counts with its last values, gauges included; a worker's gauges drop out
when it leaves.  A worker is its (pool, slot, pid): a pid seen again in
another pool or slot is a new worker.

A family name keeps the first type it was seen with while any worker or a
base holds it; a family of another type under that name is dropped, and so
is anything malformed (a family that is not a dict, a sample whose value is
not a number...): counted in :meth:`Merger.statistics`, never raised.  A
worker's own ``pool`` or ``slot`` label is renamed ``exported_pool`` or
``exported_slot`` (Prometheus's habit), a summary's ``quantile`` samples are
left out (a quantile cannot be summed), and so are ``*_created`` samples.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from busd.core.stats import Stats

#: One family of a worker's report, as plain data (see the module docstring).
Family = Mapping[str, Any]

#: Families whose samples only grow: summed per pool, never going down.
COUNTER_LIKE = frozenset({"counter", "histogram", "summary"})
#: Families kept per worker (or, for a gauge, aggregated per pool as its mode says).
PER_WORKER = frozenset({"gauge", "info", "stateset", "gaugehistogram", "unknown"})
#: A gauge's multiprocess_mode -> how a pool's values are aggregated ("" : per worker).
AGGREGATES: Mapping[str, str] = {
    "all": "",
    "liveall": "",
    "sum": "sum",
    "livesum": "sum",
    "min": "min",
    "livemin": "min",
    "max": "max",
    "livemax": "max",
    "mostrecent": "mostrecent",
    "livemostrecent": "mostrecent",
}
#: The labels busd adds; a worker's own label of that name is renamed ``exported_<name>``.
ADDED_LABELS = ("pool", "slot")

Labels = tuple[tuple[str, str], ...]
#: A sample of one worker: (sample name, its labels, sorted).
SampleKey = tuple[str, Labels]
#: A worker: (pool, slot, pid).
WorkerKey = tuple[str, int, int]
#: A merged sample: (pool, slot or None, sample name, labels).
OutKey = tuple[str, int | None, str, Labels]


@dataclass(frozen=True)
class WorkerReport:
    """What one worker answered to a scrape: its families, and who it is.

    ``digest`` names the families' values ("" if the worker gave none);
    ``same``: the worker said only that its report is the one of that digest,
    which the Merger holds (:meth:`Merger.digests`).
    """

    pool: str
    slot: int
    pid: int
    families: tuple[Family, ...]
    digest: str = ""
    same: bool = False


@dataclass(frozen=True, eq=False)
class MergerStats(Stats):
    """A snapshot of a :class:`Merger`."""

    #: Workers whose last report counts (answered or missing at the last merge).
    workers: int
    #: Workers that left and were folded into their pool's bases, over the Merger's life.
    departed: int
    #: Families in the last merged view.
    families: int
    #: Families and samples skipped (malformed, or of a conflicting type), over its life.
    skipped: int


@dataclass(frozen=True)
class _Kind:
    """What a family name is: its type, help and (gauges) mode, as first seen."""

    name: str
    type: str
    help: str
    mode: str


@dataclass(frozen=True)
class _Family:
    """One family of one worker's last report, checked."""

    type: str
    samples: Mapping[SampleKey, float]


@dataclass(frozen=True)
class _Worker:
    """A worker's last report, and when it was heard (for ``mostrecent``)."""

    families: Mapping[str, _Family]
    heard: int
    #: The digest its worker gave that report ("": none, it is always sent whole).
    digest: str = ""


#: The workers, least recently heard first (made once per merge).
_ByHeard = list[tuple[WorkerKey, _Worker]]


class Merger:
    """The merged view of every worker's registry, kept between scrapes (one thread's)."""

    def __init__(self) -> None:
        self._workers: dict[WorkerKey, _Worker] = {}
        self._kinds: dict[str, _Kind] = {}
        #: Family name -> (pool, sample name, labels) -> what departed workers counted.
        self._bases: dict[str, dict[tuple[str, str, Labels], float]] = {}
        self._heard = 0
        self._departed = 0
        self._skipped = 0
        self._merged = 0
        #: The last merged view, returned again while nothing changes.
        self._last: list[dict[str, Any]] | None = None

    def merge(
        self,
        reports: Sequence[WorkerReport],
        missing: Sequence[tuple[str, int, int]],
    ) -> list[dict[str, Any]]:
        """The merged families after a scrape, by name.

        ``reports``: the workers that answered this scrape (a later report of
        the same worker wins); ``missing``: (pool, slot, pid) of the workers
        alive that did not answer.  Every other worker heard before has left.
        When none left and every answer was ``same``, the last view is
        returned again, the same list: read it, never change it.
        """
        answered: dict[WorkerKey, WorkerReport] = {}
        for report in reports:
            answered[(report.pool, report.slot, report.pid)] = report
        alive = set(answered) | {(pool, slot, pid) for pool, slot, pid in missing}
        left = [key for key in self._workers if key not in alive]
        changed = bool(left) or any(not r.same for r in answered.values())
        for key in left:
            self._leave(key)
        if left:
            self._forget_unheld_names()
        for key, report in answered.items():
            if report.same:
                self._hear_same(key, report.digest)
            else:
                self._hear(key, report.families, report.digest)
        if not changed and self._last is not None:
            return self._last  # nobody left, every answer the same: the same view
        self._forget_unheld_names()
        by_heard = sorted(self._workers.items(), key=lambda item: item[1].heard)
        merged = [self._family(name, kind, by_heard) for name, kind in sorted(self._kinds.items())]
        self._merged = len(merged)
        self._last = merged
        return merged

    def digests(self) -> dict[int, str]:
        """By pid, the digest of each worker's report held (for the next scrape's ask)."""
        return {pid: w.digest for (_pool, _slot, pid), w in self._workers.items() if w.digest}

    def statistics(self) -> MergerStats:
        """Workers counted, departed and families merged; what was skipped."""
        return MergerStats(
            workers=len(self._workers),
            departed=self._departed,
            families=self._merged,
            skipped=self._skipped,
        )

    # -- the workers' state ---------------------------------------------------

    def _leave(self, key: WorkerKey) -> None:
        worker = self._workers.pop(key)
        self._departed += 1
        for name, family in worker.families.items():
            if family.type in COUNTER_LIKE:
                for (sample, labels), value in family.samples.items():
                    self._fold(name, key[0], sample, labels, value)

    def _hear(self, key: WorkerKey, families: object, digest: str = "") -> None:
        checked = self._check_families(families)
        before = self._workers.get(key)
        if before is not None:
            self._carry_counters(key[0], before, checked)
        self._heard += 1
        self._workers[key] = _Worker(checked, self._heard, digest)

    def _hear_same(self, key: WorkerKey, digest: str) -> None:
        """The worker's report is the one held: heard now, nothing to check.  One whose
        held report has another digest (it was never asked with this one) is only
        missing this time: its last values count, and it is asked in full next."""
        before = self._workers.get(key)
        if before is None or before.digest != digest:
            return
        self._heard += 1
        self._workers[key] = _Worker(before.families, self._heard, digest)

    def _carry_counters(self, pool: str, before: _Worker, now: dict[str, _Family]) -> None:
        """Whatever a worker counted stays counted: a counter-like sample that ``now``
        lacks (a collector failing once, a child removed) is carried with its last
        value; one that went down (reset in place) has its last value folded into
        the base."""
        for name, family in before.families.items():
            if family.type not in COUNTER_LIKE:
                continue
            later = now.get(name)
            if later is None:
                now[name] = family  # carried whole
                continue
            latest = later.samples
            carried: dict[SampleKey, float] | None = None
            for sample_key, value in family.samples.items():
                current = latest.get(sample_key)
                if current is None:
                    if carried is None:
                        carried = dict(latest)
                    carried[sample_key] = value
                elif current < value:
                    self._fold(name, pool, sample_key[0], sample_key[1], value)
            if carried is not None or later.type != family.type:
                now[name] = _Family(family.type, latest if carried is None else carried)

    def _fold(self, name: str, pool: str, sample: str, labels: Labels, value: float) -> None:
        base = self._bases.setdefault(name, {})
        base[(pool, sample, labels)] = base.get((pool, sample, labels), 0.0) + value

    def _forget_unheld_names(self) -> None:
        """A name no worker and no base holds any more may come back as another type."""
        held = set(self._bases)
        for worker in self._workers.values():
            held.update(worker.families)
        self._kinds = {name: kind for name, kind in self._kinds.items() if name in held}

    # -- checking a report -----------------------------------------------------

    def _check_families(self, families: object) -> dict[str, _Family]:
        checked: dict[str, _Family] = {}
        if not isinstance(families, (list, tuple)):
            self._skipped += 1
            return checked
        kinds = self._kinds
        for raw in families:
            # The common case first: a plain map naming a family already known, of its type.
            name = raw.get("name") if type(raw) is dict else None
            known = kinds.get(name) if type(name) is str else None
            if known is None or raw.get("type") != known.type:
                kind = _kind_of(raw)
                if kind is None or not isinstance(raw, Mapping):
                    self._skipped += 1
                    continue
                known = kinds.setdefault(kind.name, kind)
                if known.type != kind.type:
                    self._skipped += 1
                    continue
            if known.name in checked:
                self._skipped += 1
                continue
            samples = self._check_samples(known.name, known.type, raw)
            checked[known.name] = _Family(known.type, samples)
        return checked

    def _check_samples(self, name: str, kind: str, family: Family) -> dict[SampleKey, float]:
        samples: dict[SampleKey, float] = {}
        raw_samples = family.get("samples", ())
        if not isinstance(raw_samples, (list, tuple)):
            self._skipped += 1
            return samples
        created = f"{name}_created"
        counter_like = kind in COUNTER_LIKE
        for raw in raw_samples:
            sample = _sample(raw)
            if sample is None:
                self._skipped += 1
                continue
            key, value = sample
            if key[0] == created:
                self._skipped += 1
                continue
            if counter_like and (
                math.isnan(value) or (kind == "summary" and "quantile" in dict(key[1]))
            ):
                self._skipped += 1
                continue
            samples[key] = value
        return samples

    # -- the merged view -------------------------------------------------------

    def _family(self, name: str, kind: _Kind, by_heard: _ByHeard) -> dict[str, Any]:
        if kind.type in COUNTER_LIKE:
            values = self._summed(name, by_heard)
        else:
            aggregate = AGGREGATES.get(kind.mode, "") if kind.type == "gauge" else ""
            values = self._per_worker(name, aggregate, by_heard)
        family: dict[str, Any] = {"name": name, "type": kind.type, "help": kind.help}
        if kind.type == "gauge":
            family["mode"] = kind.mode
        family["samples"] = [
            [sample, _labels_out(labels, pool, slot), value]
            for (pool, slot, sample, labels), value in sorted(values.items(), key=_order)
        ]
        return family

    def _summed(self, name: str, by_heard: _ByHeard) -> dict[OutKey, float]:
        values: dict[OutKey, float] = {
            (pool, None, sample, labels): value
            for (pool, sample, labels), value in self._bases.get(name, {}).items()
        }
        for (pool, _slot, _pid), family in self._holding(name, by_heard):
            for (sample, labels), value in family.samples.items():
                key = (pool, None, sample, labels)
                values[key] = values.get(key, 0.0) + value
        return values

    def _per_worker(self, name: str, aggregate: str, by_heard: _ByHeard) -> dict[OutKey, float]:
        """Per (pool, slot), the most recently heard worker winning a shared slot;
        or per pool, summed, the least, the greatest or the most recently heard."""
        values: dict[OutKey, float] = {}
        pick = _PICKS.get(aggregate)
        for (pool, slot, _pid), family in self._holding(name, by_heard):
            for (sample, labels), value in family.samples.items():
                key = (pool, None if aggregate else slot, sample, labels)
                earlier = values.get(key)
                values[key] = value if earlier is None or pick is None else pick(earlier, value)
        return values

    def _holding(self, name: str, by_heard: _ByHeard) -> Iterator[tuple[WorkerKey, _Family]]:
        """The workers whose last report has family ``name`` (of its kept type),
        the least recently heard first."""
        kind = self._kinds[name]
        for key, worker in by_heard:
            family = worker.families.get(name)
            if family is not None and family.type == kind.type:
                yield key, family


#: How a pool's gauge values are aggregated, two at a time ("mostrecent": the later wins).
_PICKS: Mapping[str, Callable[[float, float], float]] = {
    "sum": operator.add,
    "min": min,
    "max": max,
}


def _kind_of(raw: object) -> _Kind | None:
    """The name's kind a family claims, or None if it is not a family."""
    if not isinstance(raw, Mapping):
        return None
    name, kind, text, mode = (raw.get(k) for k in ("name", "type", "help", "mode"))
    if not isinstance(name, str) or not name or kind not in COUNTER_LIKE | PER_WORKER:
        return None
    help_text = text if isinstance(text, str) else ""
    gauge_mode = mode if kind == "gauge" and isinstance(mode, str) and mode in AGGREGATES else "all"
    return _Kind(name, str(kind), help_text, gauge_mode)


def _sample(raw: object) -> tuple[SampleKey, float] | None:
    """``[name, {label: value}, number]`` checked, or None."""
    if type(raw) is list and len(raw) == 3:  # the common case: no labels, a float
        name, labels, value = raw
        if type(name) is str and name and labels == {} and type(value) in (float, int):
            return (name, ()), float(value)
    if not isinstance(raw, (list, tuple)) or len(raw) != 3:
        return None
    name, labels, value = raw
    if not isinstance(name, str) or not name or not isinstance(labels, Mapping):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        return None
    own = {f"exported_{k}" if k in ADDED_LABELS else k: v for k, v in labels.items()}
    return (name, tuple(sorted(own.items()))), float(value)


def _labels_out(labels: Labels, pool: str, slot: int | None) -> dict[str, str]:
    out = {"pool": pool}
    if slot is not None:
        out["slot"] = str(slot)
    out.update(labels)
    return out


#: Labels whose values are numbers, sorted as numbers (a histogram's buckets in order).
_BOUNDS = ("le", "quantile")


def _order(item: tuple[OutKey, float]) -> tuple[Any, ...]:
    (pool, slot, sample, labels), _value = item
    others = tuple(pair for pair in labels if pair[0] not in _BOUNDS)
    bounds = tuple(_number_first(value) for key, value in labels if key in _BOUNDS)
    return (pool, -1 if slot is None else slot, others, sample, bounds)


def _number_first(text: str) -> tuple[int, float, str]:
    try:
        number = float(text)
    except ValueError:
        return (1, 0.0, text)
    return (1, 0.0, text) if math.isnan(number) else (0, number, "")


__all__ = [
    "AGGREGATES",
    "COUNTER_LIKE",
    "PER_WORKER",
    "Family",
    "Merger",
    "MergerStats",
    "WorkerReport",
]
