"""Recycling: replacing a worker that is old, big, or asks for it, without losing capacity.

::

    the pool, on the command thread, each Tick:
      due()      worker older than max-age (+ jitter), or above max-rss -> wanted
      starting() up to ``at_once`` wanted workers at a time -> the pool spawns the
                 replacement in the same slot; the old one keeps serving
      finished() the slot's new worker is STARTED -> the pool retires the old one

A recycle is a respawn of one slot: the replacement reaches STARTED before
the old worker is sent SIGTERM, so the number of STARTED workers never drops.
If the replacement crashes, the slot restarts it with its usual backoff and
the old worker serves on until one is STARTED.  ``bus.recycle()`` in a
worker (the application's own rule, say "after N requests") queues it the
same way.  RSS is measured by the master (psutil), every ``rss_interval``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol

import psutil

from busd.core.stats import Stats


@dataclass(frozen=True)
class RecycleConfig:
    """When workers are replaced; every field has a ``busd`` flag."""

    max_age: float | None = None
    max_rss: int | None = None  # bytes
    jitter: float = 0.0
    at_once: int = 1
    rss_interval: float = 1.0


class Recyclable(Protocol):
    """What the recycler needs to know of a worker."""

    pid: int
    slot: int
    started: float
    proc: psutil.Process | None


@dataclass
class Recycler:
    """Wanted and running recycles (the pool's command thread owns them)."""

    config: RecycleConfig
    rng: random.Random = field(default_factory=random.Random)
    #: pid -> why, in the order asked.
    wanted: dict[int, str] = field(default_factory=dict)
    #: slot -> the old worker's pid, while its replacement starts.
    running: dict[int, int] = field(default_factory=dict)
    next_rss_check: float = 0.0
    done: int = 0

    @property
    def active(self) -> bool:
        """Whether anything is configured that the supervisor must watch for."""
        return self.config.max_age is not None or self.config.max_rss is not None

    def deadline(self, started: float) -> float | None:
        """When a worker started at ``started`` is due by age (jitter drawn once)."""
        if self.config.max_age is None:
            return None
        return started + self.config.max_age + self.rng.uniform(0, self.config.jitter)

    def want(self, pid: int, why: str) -> None:
        """Queue the worker ``pid`` for a recycle (once)."""
        self.wanted.setdefault(pid, why)

    def check(self, workers: list[Recyclable], ages: dict[int, float | None], now: float) -> None:
        """Queue workers past their age deadline, and, when due, above the RSS limit."""
        for worker in workers:
            deadline = ages.get(worker.pid)
            if deadline is not None and deadline <= now:
                self.want(worker.pid, "max-age")
        limit = self.config.max_rss
        if limit is None or now < self.next_rss_check:
            return
        self.next_rss_check = now + self.config.rss_interval
        for worker in workers:
            rss = _rss(worker.proc)
            if rss is not None and rss > limit:
                self.want(worker.pid, f"max-rss {rss // (1 << 20)} MiB")

    def next_time(self, ages: list[float]) -> float | None:
        """The next moment the supervisor must look (None: nothing to watch)."""
        times = list(ages)
        if self.config.max_rss is not None:
            times.append(self.next_rss_check)
        return min(times) if times else None

    def take(self, current: dict[int, Recyclable]) -> list[tuple[int, int, str]]:
        """Wanted recycles that may start now: ``(slot, old pid, why)``.

        ``current`` maps each slot's current worker pid to it; a wanted worker
        that is no longer a slot's current one (reloaded, scaled away, gone)
        is dropped.
        """
        started = []
        for pid in list(self.wanted):
            if pid not in current:
                del self.wanted[pid]
                continue
            slot = current[pid].slot
            if len(self.running) >= self.config.at_once:
                break
            if slot in self.running:
                continue
            why = self.wanted.pop(pid)
            self.running[slot] = pid
            started.append((slot, pid, why))
        return started

    def finish(self, slot: int) -> int | None:
        """The slot's replacement is STARTED: the old pid to retire."""
        pid = self.running.pop(slot, None)
        if pid is not None:
            self.done += 1
        return pid

    def cancel_all(self) -> list[int]:
        """A reload or an exit replaces everyone: the old pids still running."""
        pids = list(self.running.values())
        self.running.clear()
        self.wanted.clear()
        return pids

    def statistics(self) -> RecyclerStats:
        """Counters for ``status``."""
        return RecyclerStats(self.done, len(self.running), len(self.wanted))


@dataclass(frozen=True, eq=False)
class RecyclerStats(Stats):
    """What :meth:`Recycler.statistics` returns."""

    #: Workers replaced by a recycle so far.
    recycled: int
    #: Recycles whose replacement is starting now.
    running: int
    #: Recycles asked for and not started yet.
    wanted: int


def _rss(proc: psutil.Process | None) -> int | None:
    if proc is None:
        return None
    try:
        return int(proc.memory_info().rss)
    except psutil.Error:
        return None
