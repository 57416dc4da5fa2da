"""Several pools on one bus, from one config file: order, one publish, per-pool commands,
a program that does not speak the bus, and the exit in reverse order."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from busd.core.errors import BusError
from busd.testing import PoolFactory
from busd.testing.pool import BusdPool
from busd.testing.sink import Sink

TARGET = "tests.integration.pool_targets:reporter"
PROGRAM = [sys.executable, "-m", "tests.integration.pool_targets"]


def three_pools(sock: Path, web: int = 2, jobs: int = 2) -> str:
    """web, jobs after web, and a program (ready once its unix socket accepts)."""
    return f"""
[busd]
graceful_timeout = 5

[pools.web]
target = "{TARGET}"
workers = {web}

[pools.jobs]
target = "{TARGET}"
workers = {jobs}
after = ["web"]

[pools.prog]
command = {json.dumps([*PROGRAM, str(sock)])}
bus = false
ready = "unix:{sock}"
reload_signal = "HUP"
"""


def started(busd_pool: PoolFactory, tmp_path: Path, **sizes: int) -> BusdPool:
    return busd_pool(None, config=three_pools(tmp_path / "prog.sock", **sizes))


def by_pool(reports: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for report in reports:
        found.setdefault(report["pool"], []).append(report)
    return found


def test_pools_start_from_one_file_in_after_order_and_a_publish_reaches_every_one(
    busd_pool: PoolFactory, busd_sink: Sink, tmp_path: Path
) -> None:
    pool = started(busd_pool, tmp_path)
    starts = by_pool(busd_sink.collect("start", 4, timeout=30))
    program = busd_sink.expect("program_start", timeout=30)
    # jobs comes after web: each of its workers started once every web worker had.
    assert len(starts["web"]) == 2, starts
    assert len(starts["jobs"]) == 2, starts
    assert max(r["at"] for r in starts["web"]) < min(r["at"] for r in starts["jobs"])
    assert program["pool"] == "prog"
    status = pool.status()
    pools = {p["name"]: p for p in status["pools"]}
    assert list(pools) == ["web", "prog", "jobs"]  # start order
    assert pools["prog"]["command"][-1] == str(tmp_path / "prog.sock")
    assert pools["web"]["target"] == TARGET
    assert pools["jobs"]["after"] == ["web"]
    # Each pool that forks has a fork server of its own; the program has none.
    assert pools["prog"]["forkserver"] is None
    forkservers = {pools[name]["forkserver"]["pid"] for name in ("web", "jobs")}
    assert len(forkservers) == 2, pools
    assert None not in forkservers, pools
    assert status["forkserver"]["pid"] == pools["web"]["forkserver"]["pid"]
    assert {(w["pool"], w["state"]) for w in status["workers"]} == {
        ("web", "STARTED"),
        ("jobs", "STARTED"),
        ("prog", "STARTED"),
    }
    assert sorted(w["pool"] for w in status["workers"]) == ["jobs", "jobs", "prog", "web", "web"]
    # One publish reaches every bus worker of every pool.
    pool.broadcast("hello", 42)
    hellos = busd_sink.collect("hello", 4, timeout=30)
    assert sorted(r["pool"] for r in hellos) == ["jobs", "jobs", "web", "web"]
    assert all(r["args"] == [42] for r in hellos)
    assert len({r["pid"] for r in hellos}) == 4


def test_graceful_and_scale_of_one_pool_touch_only_that_pool(
    busd_pool: PoolFactory, busd_sink: Sink, tmp_path: Path
) -> None:
    pool = started(busd_pool, tmp_path)
    before = pool.pids
    # Several pools: a command must say which (and name one there is).
    for cmd, args in (("scale", {"n": "3"}), ("signal", {"signal": "HUP"})):
        with pytest.raises(BusError, match="several pools: say which with --pool"):
            pool.request(cmd, None, **args)
    with pytest.raises(BusError, match="no pool named 'nope' \\(pools: web, prog, jobs\\)"):
        pool.request("scale", None, n="1", pool="nope")
    assert pool.pids == before

    web_pids = pool.pool_pids("web")
    result = pool.graceful(pool="jobs")
    assert result["acks"]["ok"] is True
    assert len(result["acks"]["acks"]) == 2, result  # jobs' two workers, no one else
    reloaded = busd_sink.collect("graceful", 2, timeout=30)
    assert {r["pool"] for r in reloaded} == {"jobs"}
    # The program's reload_signal only with its own pool (or a graceful of all).
    pool.graceful(pool="prog")
    busd_sink.expect("program_hup", timeout=30)
    # Everything the workers ran before this publish was reported before it.
    pool.broadcast("hello", "marker")
    busd_sink.collect("hello", 4, timeout=30)
    assert busd_sink.get("graceful", 0.2) is None  # web ran no graceful listener

    jobs_pids = pool.pool_pids("jobs")
    pool.scale(3, pool="web")
    status = pool.wait_for("STARTED")
    assert len([w for w in status["workers"] if w["pool"] == "web"]) == 3
    assert set(web_pids) < set(pool.pool_pids("web"))
    assert pool.pool_pids("jobs") == jobs_pids
    assert len(pool.pool_pids("prog")) == 1


def test_a_killed_program_is_replaced(
    busd_pool: PoolFactory, busd_sink: Sink, tmp_path: Path
) -> None:
    pool = started(busd_pool, tmp_path)
    first = busd_sink.expect("program_start", timeout=30)
    [pid] = pool.pool_pids("prog")
    assert first["pid"] == pid
    os.kill(pid, signal.SIGKILL)
    again = busd_sink.expect("program_start", timeout=30)
    assert again["pid"] != pid

    def replaced(status: dict[str, Any]) -> bool:
        rows = [w for w in status["workers"] if w["pool"] == "prog"]
        return len(rows) == 1 and rows[0]["pid"] == again["pid"] and rows[0]["state"] == "STARTED"

    status = pool.wait_for(replaced)
    assert next(w for w in status["workers"] if w["pool"] == "prog")["restarts"] == 1


def test_exit_stops_the_pools_in_reverse_order(
    busd_pool: PoolFactory, busd_sink: Sink, tmp_path: Path
) -> None:
    pool = started(busd_pool, tmp_path)
    busd_sink.collect("start", 4, timeout=30)
    assert pool.exit() == 0
    stops = by_pool(busd_sink.collect("stop", 4, timeout=30))
    exits = by_pool(busd_sink.collect("exit", 4, timeout=30))
    # jobs comes after web: its workers ran stop, then exit, before web's stop.
    assert max(r["at"] for r in exits["jobs"]) < min(r["at"] for r in stops["web"])
    assert max(r["at"] for r in stops["jobs"]) < min(r["at"] for r in stops["web"])
    busd_sink.expect("program_stop", timeout=30)


def test_hook_events_name_the_pool(busd_pool: PoolFactory, tmp_path: Path) -> None:
    pool = started(busd_pool, tmp_path)
    with pool.events() as events:
        pid = pool.kill_worker(0, pool="jobs")
        exited = events.expect(kind="event", event="worker_exited")
        spawned = events.expect(kind="event", event="worker_restarted")
        up = events.expect(kind="event", event="worker_started")
    assert exited["data"]["pid"] == pid
    assert exited["data"]["pool"] == "jobs"
    assert spawned["data"]["pool"] == "jobs"
    assert up["data"]["pool"] == "jobs"
    assert up["data"]["pid"] == spawned["data"]["pid"] != pid


def test_log_dir_files_are_named_by_pool_and_slot(busd_pool: PoolFactory, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    pool = busd_pool(
        None,
        "--name",
        "shop",
        "--log-dir",
        str(logs),
        config=three_pools(tmp_path / "prog.sock", web=2, jobs=1),
    )
    pool.wait_for("STARTED")
    names = sorted(p.name for p in logs.iterdir())
    assert names == [
        "shop-jobs-0.log",
        "shop-prog-0.log",
        "shop-web-0.log",
        "shop-web-1.log",
        "shop.log",
    ]
    assert pool.exit() == 0


def test_no_bus_runs_any_program_from_the_command_line(
    busd_pool: PoolFactory, busd_sink: Sink, tmp_path: Path
) -> None:
    sock = tmp_path / "one.sock"
    pool = busd_pool(None, "--no-bus", "--", *PROGRAM, str(sock), workers=1)
    started_report = busd_sink.expect("program_start", timeout=30)
    [row] = pool.workers
    assert row["pid"] == started_report["pid"]
    assert row["pool"] == "main"
    assert row["state"] == "STARTED"  # alive for a second: nothing else says STARTED
    result = pool.request("signal", None, signal="HUP")
    assert result["pids"] == [row["pid"]]
    busd_sink.expect("program_hup", timeout=30)
    assert pool.exit() == 0
    busd_sink.expect("program_stop", timeout=30)


def test_a_program_dies_with_a_killed_master(
    busd_pool: PoolFactory, busd_sink: Sink, tmp_path: Path
) -> None:
    pool = busd_pool(None, "--no-bus", "--", *PROGRAM, str(tmp_path / "p.sock"), workers=1)
    started_report = busd_sink.expect("program_start", timeout=30)
    program = psutil.Process(started_report["pid"])
    assert program.cmdline()[-1] == str(tmp_path / "p.sock")  # the program, not a wrapper
    os.kill(pool.proc.pid, signal.SIGKILL)
    _, alive = psutil.wait_procs([program], timeout=15)
    assert alive == [], "the program outlived its SIGKILLed master"


def test_graceful_of_a_respawn_pool_replaces_only_its_workers(
    busd_pool: PoolFactory, tmp_path: Path
) -> None:
    config = three_pools(tmp_path / "prog.sock").replace(
        "[pools.web]\n", '[pools.web]\nreload = "respawn"\n'
    )
    assert 'reload = "respawn"' in config
    pool = busd_pool(None, config=config)
    web, jobs, prog = (pool.pool_pids(name) for name in ("web", "jobs", "prog"))
    result = pool.graceful(pool="web")
    assert sorted(result["reload"]["exited"]) == sorted(web)
    assert set(result["reload"]["started"]) == set(pool.pool_pids("web"))
    assert not set(web) & set(pool.pool_pids("web"))
    assert pool.pool_pids("jobs") == jobs
    assert pool.pool_pids("prog") == prog
    # A graceful of all: web respawns, jobs reloads in place (acks), prog gets HUP.
    result = pool.graceful()
    assert len(result["acks"]["acks"]) == 2, result  # jobs' two workers
    assert len(result["reload"]["started"]) == 2
    assert pool.pool_pids("jobs") == jobs


def test_a_stop_and_start_stage_the_pools_again(
    busd_pool: PoolFactory, busd_sink: Sink, tmp_path: Path
) -> None:
    pool = started(busd_pool, tmp_path)
    busd_sink.collect("start", 4, timeout=30)
    web = pool.pool_pids("web")
    pool.stop()
    # jobs comes after web: its workers left (stop, exit); web's only stopped.
    exits = busd_sink.collect("exit", 2, timeout=30)
    assert {r["pool"] for r in exits} == {"jobs"}
    pool.start()
    starts = by_pool(busd_sink.collect("start", 4, timeout=30))
    assert max(r["at"] for r in starts["web"]) < min(r["at"] for r in starts["jobs"])
    status = pool.wait_for("STARTED")
    assert pool.pool_pids("web") == web
    assert len([w for w in status["workers"] if w["pool"] == "jobs"]) == 2
