"""busd.pool.recycle.Recycler: which workers are due, and one slot at a time."""

from __future__ import annotations

import random
from dataclasses import dataclass

import psutil

from busd.pool.recycle import RecycleConfig, Recycler


@dataclass
class W:
    pid: int
    slot: int
    started: float = 0.0
    proc: psutil.Process | None = None


def test_age_deadline_has_jitter_within_bounds() -> None:
    recycler = Recycler(RecycleConfig(max_age=10, jitter=2), rng=random.Random(1))
    deadlines = [recycler.deadline(100.0) for _ in range(50)]
    assert all(d is not None and 110 <= d <= 112 for d in deadlines)
    assert len(set(deadlines)) > 1
    assert Recycler(RecycleConfig()).deadline(100.0) is None


def test_one_slot_at_a_time_in_the_order_asked() -> None:
    recycler = Recycler(RecycleConfig(max_age=1))
    workers = {1: W(1, 0), 2: W(2, 1), 3: W(3, 2)}
    recycler.check(list(workers.values()), {1: 5.0, 2: 4.0, 3: 99.0}, now=6.0)
    assert recycler.wanted == {1: "max-age", 2: "max-age"}
    assert recycler.take(dict(workers)) == [(0, 1, "max-age")]
    assert recycler.take(dict(workers)) == []  # slot 0's replacement is still starting
    assert recycler.finish(0) == 1
    assert recycler.take(dict(workers)) == [(1, 2, "max-age")]
    assert recycler.statistics() == {"recycled": 1, "running": 1, "wanted": 0}


def test_a_worker_no_longer_current_is_dropped_and_cancel_returns_the_old() -> None:
    recycler = Recycler(RecycleConfig(max_age=1))
    recycler.want(7, "asked")
    recycler.want(8, "asked")
    recycler.want(8, "again")  # once, with the first reason
    assert recycler.take({8: W(8, 3)}) == [(3, 8, "asked")]
    assert recycler.wanted == {}
    assert recycler.cancel_all() == [8]
    assert recycler.running == {}


def test_rss_is_checked_every_interval_only() -> None:
    me = psutil.Process()
    recycler = Recycler(RecycleConfig(max_rss=1, rss_interval=5))
    recycler.check([W(me.pid, 0, proc=me)], {}, now=10.0)
    assert recycler.wanted[me.pid].startswith("max-rss ")
    recycler.wanted.clear()
    recycler.check([W(me.pid, 0, proc=me)], {}, now=12.0)
    assert recycler.wanted == {}
    assert recycler.next_time([20.0]) == 15.0
