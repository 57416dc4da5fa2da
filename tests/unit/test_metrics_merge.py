"""The merge of the workers' registries, with no sockets and no threads.

Each rule in a plain test (counters summed per pool, gauges per worker or
aggregated as their mode says, departed workers folded into a base, missing
ones counted with their last values, pids reused, conflicting and malformed
input, the order of the output), the issue's example, then a hypothesis
state machine: workers come, go, miss scrapes, answer without their counter
and count; every pool's summed counter never goes down and is exactly what
its live workers last reported plus everything departed workers had
reported.

Deterministic in CI (``derandomize``); ``BUSD_MODEL_EXAMPLES`` asks for more.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from busd.core.stats import Stats
from busd.metrics.merge import Merger, WorkerReport

EXAMPLES = int(os.environ.get("BUSD_MODEL_EXAMPLES", "100"))


def counter(name: str, *samples: tuple[dict[str, str], float]) -> dict[str, Any]:
    return {
        "name": name,
        "type": "counter",
        "help": f"{name} help",
        "samples": [[f"{name}_total", labels, value] for labels, value in samples],
    }


def gauge(name: str, value: float, mode: str = "all", **labels: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "gauge",
        "help": f"{name} help",
        "mode": mode,
        "samples": [[name, labels, value]],
    }


def worker(pool: str, slot: int, pid: int, *families: dict[str, Any]) -> WorkerReport:
    return WorkerReport(pool=pool, slot=slot, pid=pid, families=tuple(families))


def by_name(merged: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {family["name"]: family for family in merged}


def samples_of(merged: list[dict[str, Any]], name: str) -> list[list[Any]]:
    return by_name(merged)[name]["samples"]


def total(merged: list[dict[str, Any]], name: str, pool: str) -> float:
    return sum(
        value
        for sample, labels, value in samples_of(merged, name)
        if sample == f"{name}_total" and labels["pool"] == pool
    )


# -- counter-like families: summed per pool -----------------------------------


def test_counters_are_summed_per_pool_with_their_own_labels_kept() -> None:
    merged = Merger().merge(
        [
            worker("web", 0, 10, counter("hits", ({"path": "/"}, 3), ({"path": "/a"}, 1))),
            worker("web", 1, 11, counter("hits", ({"path": "/"}, 4))),
            worker("jobs", 0, 20, counter("hits", ({"path": "/"}, 5))),
        ],
        [],
    )

    assert merged == [
        {
            "name": "hits",
            "type": "counter",
            "help": "hits help",
            "samples": [
                ["hits_total", {"pool": "jobs", "path": "/"}, 5.0],
                ["hits_total", {"pool": "web", "path": "/"}, 7.0],
                ["hits_total", {"pool": "web", "path": "/a"}, 1.0],
            ],
        }
    ]


def histogram(name: str, buckets: dict[str, float], count: float, total: float) -> dict[str, Any]:
    samples: list[list[Any]] = [[f"{name}_bucket", {"le": le}, n] for le, n in buckets.items()]
    samples += [[f"{name}_count", {}, count], [f"{name}_sum", {}, total]]
    samples.append([f"{name}_created", {}, 1700000000.0])
    return {"name": name, "type": "histogram", "help": "", "samples": samples}


def test_histograms_and_summaries_are_summed_bucket_by_bucket_in_order() -> None:
    summary = {
        "name": "size",
        "type": "summary",
        "help": "",
        "samples": [
            ["size_count", {}, 2],
            ["size_sum", {}, 10.0],
            ["size", {"quantile": "0.5"}, 4.0],
        ],
    }
    merged = Merger().merge(
        [
            worker("web", 0, 10, histogram("lat", {"+Inf": 2, "10.0": 2, "2.5": 1}, 2, 3.0)),
            worker(
                "web", 1, 11, histogram("lat", {"2.5": 0, "+Inf": 1, "10.0": 1}, 1, 4.0), summary
            ),
        ],
        [],
    )

    assert samples_of(merged, "lat") == [
        ["lat_bucket", {"pool": "web", "le": "2.5"}, 1.0],
        ["lat_bucket", {"pool": "web", "le": "10.0"}, 3.0],
        ["lat_bucket", {"pool": "web", "le": "+Inf"}, 3.0],
        ["lat_count", {"pool": "web"}, 3.0],
        ["lat_sum", {"pool": "web"}, 7.0],
    ]
    # A quantile cannot be summed: left out.
    assert samples_of(merged, "size") == [
        ["size_count", {"pool": "web"}, 2.0],
        ["size_sum", {"pool": "web"}, 10.0],
    ]


# -- gauges and the other per-worker families ---------------------------------


@pytest.mark.parametrize("mode", ["all", "liveall", "no-such-mode"])
def test_gauges_of_mode_all_stay_per_worker(mode: str) -> None:
    merged = Merger().merge(
        [
            worker("web", 1, 11, gauge("temp", 2.0, mode, room="a")),
            worker("web", 0, 10, gauge("temp", 1.0, mode, room="a")),
            worker("jobs", 0, 20, gauge("temp", 3.0, mode, room="a")),
        ],
        [],
    )

    assert by_name(merged)["temp"]["mode"] == ("all" if mode == "no-such-mode" else mode)
    assert samples_of(merged, "temp") == [
        ["temp", {"pool": "jobs", "slot": "0", "room": "a"}, 3.0],
        ["temp", {"pool": "web", "slot": "0", "room": "a"}, 1.0],
        ["temp", {"pool": "web", "slot": "1", "room": "a"}, 2.0],
    ]


@pytest.mark.parametrize(
    ("mode", "web", "jobs"),
    [
        ("sum", 6.0, 7.0),
        ("livesum", 6.0, 7.0),
        ("min", 1.0, 7.0),
        ("livemin", 1.0, 7.0),
        ("max", 3.0, 7.0),
        ("livemax", 3.0, 7.0),
        ("mostrecent", 2.0, 7.0),
        ("livemostrecent", 2.0, 7.0),
    ],
)
def test_gauges_are_aggregated_per_pool_as_their_mode_says(
    mode: str, web: float, jobs: float
) -> None:
    merger = Merger()
    merger.merge([worker("web", 2, 12, gauge("q", 3.0, mode))], [])

    # 12 is missing (its 3.0 counts, heard earliest); 11 answered last: the most recent.
    merged = merger.merge(
        [
            worker("web", 0, 10, gauge("q", 1.0, mode)),
            worker("jobs", 0, 20, gauge("q", 7.0, mode)),
            worker("web", 1, 11, gauge("q", 2.0, mode)),
        ],
        [("web", 2, 12)],
    )

    assert samples_of(merged, "q") == [["q", {"pool": "jobs"}, jobs], ["q", {"pool": "web"}, web]]


def test_info_stateset_and_unknown_families_stay_per_worker() -> None:
    families = (
        {"name": "build", "type": "info", "help": "", "samples": [["build_info", {"v": "1"}, 1]]},
        {"name": "st", "type": "stateset", "help": "", "samples": [["st", {"st": "a"}, 1]]},
        {"name": "raw", "type": "unknown", "help": "", "samples": [["raw", {}, 5]]},
    )
    merged = Merger().merge([worker("web", 0, 10, *families), worker("web", 1, 11, *families)], [])

    assert [f["name"] for f in merged] == ["build", "raw", "st"]
    assert samples_of(merged, "build") == [
        ["build_info", {"pool": "web", "slot": "0", "v": "1"}, 1.0],
        ["build_info", {"pool": "web", "slot": "1", "v": "1"}, 1.0],
    ]
    assert [labels["slot"] for _, labels, _ in samples_of(merged, "raw")] == ["0", "1"]
    assert [labels["slot"] for _, labels, _ in samples_of(merged, "st")] == ["0", "1"]


def test_a_workers_own_pool_and_slot_labels_are_renamed() -> None:
    merged = Merger().merge(
        [worker("web", 0, 10, counter("c", ({"pool": "db", "slot": "x"}, 1.0)))], []
    )

    assert samples_of(merged, "c") == [
        ["c_total", {"pool": "web", "exported_pool": "db", "exported_slot": "x"}, 1.0]
    ]


# -- workers that leave, miss a scrape, reset or come back --------------------


def test_the_issues_example_three_workers_one_replaced() -> None:
    merger = Merger()
    pids = [101, 102, 103]
    counts = dict.fromkeys(pids, 0)

    def scrape() -> float:
        reports = [
            worker("main", slot, pid, counter("channel_messages", ({"channel": "x"}, counts[pid])))
            for slot, pid in enumerate(pids)
        ]
        return total(merger.merge(reports, []), "channel_messages", "main")

    for _ in range(5):
        for pid in pids:
            counts[pid] += 1
    assert scrape() == 15

    pids[1] = 104  # slot 1 replaced: 102 (at 5) exits, 104 starts at 0
    counts[104] = 0
    assert scrape() == 15

    for pid in pids:
        counts[pid] += 1
    assert scrape() == 18
    assert merger.statistics() == {"workers": 3, "departed": 1, "families": 1, "skipped": 0}


def test_a_worker_that_says_its_report_is_the_same_counts_with_the_one_held() -> None:
    merger = Merger()
    hits = counter("hits", ({}, 5))
    first = [
        WorkerReport("web", slot, pid, (hits,), digest=f"d{pid}")
        for slot, pid in enumerate((10, 11))
    ]
    assert total(merger.merge(first, []), "hits", "web") == 10
    assert merger.digests() == {10: "d10", 11: "d11"}
    same = [
        WorkerReport("web", 0, 10, (), digest="d10", same=True),
        WorkerReport("web", 1, 11, (), digest="d11", same=True),
    ]
    assert total(merger.merge(same, []), "hits", "web") == 10
    assert merger.merge(same, []) is merger.merge(same, [])  # nothing changed: not made again
    # A digest the Merger does not hold is not taken for the report it holds.
    wrong = [WorkerReport("web", 0, 10, (), digest="other", same=True), same[1]]
    assert total(merger.merge(wrong, []), "hits", "web") == 10
    assert merger.statistics()["workers"] == 2
    # A worker that left (not answering, not missing) still leaves its counts behind.
    assert total(merger.merge([same[1]], []), "hits", "web") == 10
    assert merger.digests() == {11: "d11"}
    assert merger.statistics()["departed"] == 1


def test_a_missing_worker_counts_with_its_last_values_a_departed_one_with_its_counters() -> None:
    merger = Merger()
    merger.merge(
        [
            worker("web", 0, 10, counter("c", ({}, 5)), gauge("g", 1.0)),
            worker("web", 1, 11, counter("c", ({}, 2)), gauge("g", 2.0)),
        ],
        [],
    )

    missing = merger.merge(
        [worker("web", 1, 11, counter("c", ({}, 3)), gauge("g", 4.0))], [("web", 0, 10)]
    )
    assert samples_of(missing, "c") == [["c_total", {"pool": "web"}, 8.0]]
    assert [v for _, _, v in samples_of(missing, "g")] == [1.0, 4.0]

    departed = merger.merge([worker("web", 1, 11, counter("c", ({}, 3)), gauge("g", 4.0))], [])
    assert samples_of(departed, "c") == [["c_total", {"pool": "web"}, 8.0]]
    assert samples_of(departed, "g") == [["g", {"pool": "web", "slot": "1"}, 4.0]]

    # Everyone gone: the counter stays at what was counted, the gauge is gone.
    assert Merger().merge([], []) == []
    gone = merger.merge([], [])
    assert [f["name"] for f in gone] == ["c"]
    assert samples_of(gone, "c") == [["c_total", {"pool": "web"}, 8.0]]


def test_a_pid_seen_in_another_slot_or_pool_is_a_new_worker() -> None:
    merger = Merger()
    merger.merge([worker("web", 0, 7, counter("c", ({}, 5)), gauge("g", 1.0))], [])

    moved = merger.merge([worker("web", 1, 7, counter("c", ({}, 6)), gauge("g", 2.0))], [])
    assert samples_of(moved, "c") == [["c_total", {"pool": "web"}, 11.0]]
    assert samples_of(moved, "g") == [["g", {"pool": "web", "slot": "1"}, 2.0]]

    other_pool = merger.merge([worker("jobs", 1, 7, counter("c", ({}, 7)))], [])
    assert samples_of(other_pool, "c") == [
        ["c_total", {"pool": "jobs"}, 7.0],
        ["c_total", {"pool": "web"}, 11.0],
    ]
    assert merger.statistics().departed == 2


def test_a_counter_that_goes_down_in_a_worker_stays_counted() -> None:
    merger = Merger()
    merger.merge([worker("web", 0, 10, counter("c", ({"k": "a"}, 5)))], [])

    merged = merger.merge([worker("web", 0, 10, counter("c", ({"k": "a"}, 1)))], [])

    assert samples_of(merged, "c") == [["c_total", {"pool": "web", "k": "a"}, 6.0]]


def test_a_sample_a_worker_stops_reporting_is_carried_never_counted_twice() -> None:
    merger = Merger()
    merger.merge([worker("web", 0, 10, counter("c", ({"k": "a"}, 5), ({"k": "b"}, 2)))], [])

    lacking = merger.merge([worker("web", 0, 10, counter("c", ({"k": "a"}, 6)))], [])
    assert samples_of(lacking, "c") == [
        ["c_total", {"pool": "web", "k": "a"}, 6.0],
        ["c_total", {"pool": "web", "k": "b"}, 2.0],
    ]

    garbled = merger.merge([WorkerReport("web", 0, 10, families="nope")], [])  # type: ignore[arg-type]
    assert garbled == lacking

    back = merger.merge([worker("web", 0, 10, counter("c", ({"k": "a"}, 7), ({"k": "b"}, 3)))], [])
    assert samples_of(back, "c") == [
        ["c_total", {"pool": "web", "k": "a"}, 7.0],
        ["c_total", {"pool": "web", "k": "b"}, 3.0],
    ]

    gone = merger.merge([], [])
    assert samples_of(gone, "c") == samples_of(back, "c")


# -- conflicting and malformed input ------------------------------------------


def test_the_first_type_of_a_name_is_kept_until_nothing_holds_it() -> None:
    merger = Merger()
    first = merger.merge(
        [
            worker("web", 0, 10, gauge("x", 1.0)),
            worker("web", 1, 11, counter("x", ({}, 4))),
        ],
        [],
    )
    assert by_name(first)["x"]["type"] == "gauge"
    assert samples_of(first, "x") == [["x", {"pool": "web", "slot": "0"}, 1.0]]

    # Every worker holding the gauge gone: the name may be a counter now.
    second = merger.merge([worker("web", 1, 11, counter("x", ({}, 4)))], [])
    assert by_name(second)["x"]["type"] == "counter"

    # A counter with a base holds its name for good.
    merger.merge([], [])
    third = merger.merge([worker("web", 2, 12, gauge("x", 9.0))], [])
    assert by_name(third)["x"]["type"] == "counter"
    assert samples_of(third, "x") == [["x_total", {"pool": "web"}, 4.0]]
    assert merger.statistics().skipped == 2


def test_malformed_input_is_skipped_and_counted_never_raised() -> None:
    odd: list[Any] = [
        "not a dict",
        {"type": "counter", "samples": []},
        {"name": "n", "type": "histogramz", "samples": []},
        {"name": "s", "type": "counter", "samples": "nope"},
        counter("c", ({}, 1)),
        counter("c", ({}, 100)),  # the same name twice in one report
    ]
    odd[4]["samples"] += [
        ["c_total", {"k": "v"}, "12"],
        ["c_total", {"k": "t"}, True],
        ["c_total", {"k": 1}, 1],
        ["c_total", {"k": "nan"}, float("nan")],
        ["c_total", [], 1],
        ["c_total", {}],
        [None, {}, 1],
        "sample",
    ]
    merger = Merger()

    merged = merger.merge([worker("web", 0, 10, *odd)], [])
    also = merger.merge([WorkerReport("web", 1, 11, families="nope")], [("web", 0, 10)])  # type: ignore[arg-type]

    assert merged == also
    assert [f["name"] for f in merged] == ["c", "s"]
    assert samples_of(merged, "c") == [["c_total", {"pool": "web"}, 1.0]]
    assert samples_of(merged, "s") == []
    stats = merger.statistics()
    assert isinstance(stats, Stats)
    assert stats == {"workers": 2, "departed": 0, "families": 2, "skipped": 14}


def test_the_output_is_stable_whatever_the_order_of_the_reports() -> None:
    reports = [
        worker("web", 1, 11, counter("b", ({"x": "2"}, 1)), gauge("a", 1.0)),
        worker("jobs", 0, 20, counter("b", ({"x": "1"}, 1)), gauge("a", 2.0)),
        worker("web", 0, 10, counter("b", ({"x": "1"}, 1)), gauge("a", 3.0)),
    ]

    merged = Merger().merge(reports, [])

    assert merged == Merger().merge(list(reversed(reports)), [])
    assert [f["name"] for f in merged] == ["a", "b"]
    assert [(labels["pool"], labels["slot"]) for _, labels, _ in samples_of(merged, "a")] == [
        ("jobs", "0"),
        ("web", "0"),
        ("web", "1"),
    ]
    assert [(labels["pool"], labels["x"]) for _, labels, _ in samples_of(merged, "b")] == [
        ("jobs", "1"),
        ("web", "1"),
        ("web", "2"),
    ]


def test_the_merge_imports_nothing_but_the_stdlib_and_busd_core() -> None:
    source = Path(__file__).resolve().parents[2] / "busd" / "metrics" / "merge.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}

    outside = {
        name
        for name in imported
        if name.split(".")[0] not in sys.stdlib_module_names and not name.startswith("busd.core")
    }
    assert outside == set()


# -- the property: a pool's counter never goes down ---------------------------

POOLS = ("main", "jobs")
#: What a worker does at a scrape.
ANSWERS = ("answers", "misses", "without its counter")


class Scrapes(RuleBasedStateMachine):
    """Workers of two pools count, miss scrapes, answer without their counter, leave and
    are replaced (pids reused)."""

    def __init__(self) -> None:
        super().__init__()
        self.merger = Merger()
        #: pid -> [pool, slot, its counter now, what it last reported, reported at all]
        self.alive: dict[int, list[Any]] = {}
        self.departed = dict.fromkeys(POOLS, 0)
        self.last = dict.fromkeys(POOLS, 0.0)
        #: (pool, slot, pid) of the workers that left since the last scrape.
        self.left: set[tuple[str, int, int]] = set()

    @rule(pool=st.sampled_from(POOLS), slot=st.integers(0, 2), pid=st.integers(1, 6))
    def spawn(self, pool: str, slot: int, pid: int) -> None:
        # The same pid back in the same slot before any scrape saw it go cannot be told
        # from the worker it replaces (it is, to the master): pids do not cycle that fast.
        if pid not in self.alive and (pool, slot, pid) not in self.left:
            self.alive[pid] = [pool, slot, 0, 0, False]

    @rule(pid=st.integers(1, 6), n=st.integers(1, 5))
    def count(self, pid: int, n: int) -> None:
        if pid in self.alive:
            self.alive[pid][2] += n

    @rule(pid=st.integers(1, 6))
    def leave(self, pid: int) -> None:
        gone = self.alive.pop(pid, None)
        if gone is not None:
            self.departed[gone[0]] += gone[3]
            self.left.add((gone[0], gone[1], pid))

    @rule(answers=st.lists(st.sampled_from(ANSWERS), min_size=6, max_size=6))
    def scrape(self, answers: list[str]) -> None:
        reports, missing = [], []
        for pid, state in sorted(self.alive.items()):
            pool, slot, now, _, _ = state
            if answers[pid - 1] == "without its counter":  # its collector failed
                state[4] = True
                reports.append(worker(pool, slot, pid))
            elif answers[pid - 1] == "answers":
                state[3:] = [now, True]
                reports.append(worker(pool, slot, pid, counter("c", ({"ch": "x"}, now))))
            else:
                missing.append((pool, slot, pid))
        merged = self.merger.merge(reports, missing)
        self.left.clear()
        assert self.merger.statistics().workers == sum(s[4] for s in self.alive.values())
        for pool in POOLS:
            expected = self.departed[pool] + sum(s[3] for s in self.alive.values() if s[0] == pool)
            got = total(merged, "c", pool) if merged else 0.0
            assert got == expected, (pool, got, expected)
            assert got >= self.last[pool]
            self.last[pool] = got


TestScrapes = Scrapes.TestCase
TestScrapes.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
