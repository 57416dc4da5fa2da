"""``--wait`` means done, timeouts name their flags, and the pool's per-slot counters.

Real busd pools and busctl as a real command.  What a command waited for
is checked the moment it returns: processes with psutil, files its
workers' listeners wrote, the master's status.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from busd.client.bus import ClientBus
from busd.testing import Processes, Sink
from busd.testing.pool import BusdPool
from busd.testing.probe import Probe
from tests.integration.test_busctl_wait import busctl, slow_stop, status_of


def generation(bus: ClientBus) -> None:
    """Report this worker's slot and generation when it starts."""
    probe = Probe()
    slot, gen = int(os.environ["BUSD_WORKER"]), int(os.environ["BUSD_WORKER_GENERATION"])
    bus.subscribe("start", lambda: probe.report("start", worker=slot, generation=gen))
    bus.subscribe("exit", probe.close, priority=100)


def recycle_first(bus: ClientBus) -> None:
    """Slot 0's first worker asks to be recycled once started; every start is reported."""
    generation(bus)
    if os.environ["BUSD_WORKER"] == "0" and os.environ["BUSD_WORKER_GENERATION"] == "1":
        bus.subscribe("start", lambda: bus.recycle("one job done"), priority=60)


def slow_exit(bus: ClientBus) -> None:
    """Stop and exit listeners that take 0.3 s each, then write a file in $MARKS."""
    import threading

    marks = Path(os.environ["MARKS"])
    for channel in ("stop", "exit"):

        def listener(channel: str = channel) -> None:
            threading.Event().wait(0.3)
            (marks / f"{channel}-{os.getpid()}").write_text("done")

        bus.subscribe(channel, listener)


def exited(pid: int) -> bool:
    """The process has ended (a zombie has: only its parent's reaping is left)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def marks_dir(tmp_path: Path) -> Path:
    marks = tmp_path / "marks"
    marks.mkdir()
    return marks


# -- --wait means done --------------------------------------------------------------


def test_respawn_graceful_wait_returns_after_every_old_worker_exited(
    busd_pool: Any, tmp_path: Path
) -> None:
    marks = marks_dir(tmp_path)
    pool: BusdPool = busd_pool(
        slow_stop, "--reload", "respawn", "--env", f"MARKS={marks}", workers=2
    )
    old = pool.pids

    done = busctl(pool.runtime_dir, "graceful", "--wait")

    still = [pid for pid in old if not exited(pid)]  # right away: nothing may be left
    assert done.returncode == 0, done.stderr
    assert still == [], f"graceful --wait returned while old workers {still} ran"
    assert done.stdout == "graceful: state STARTED; 2 new workers STARTED, 2 old workers exited\n"
    # They left the slow way (stop listeners ran), not killed.
    assert sorted(p.name for p in marks.iterdir()) == sorted(f"stop-{pid}" for pid in old)
    doc = status_of(pool.runtime_dir)
    assert [w["state"] for w in doc["workers"]] == ["STARTED", "STARTED"]
    assert not {w["pid"] for w in doc["workers"]} & set(old)

    done = busctl(pool.runtime_dir, "--json", "graceful", "--wait")
    reload = json.loads(done.stdout)["reload"]
    assert reload["mode"] == "respawn"
    assert all(exited(pid) for pid in reload["exited"])


def test_respawn_graceful_wait_of_an_asgi_pool_leaves_no_old_server(
    busd_pool: Any, busd_dir: Path
) -> None:
    listen = busd_dir / "http.sock"
    pool: BusdPool = busd_pool(
        "asgi:tests.integration.apps:asgi_app",
        "--reload",
        "respawn",
        "--listen",
        f"unix:{listen}",
        workers=2,
    )
    old = pool.pids

    done = busctl(pool.runtime_dir, "--timeout", "30", "graceful", "--wait")

    still = [pid for pid in old if not exited(pid)]
    assert done.returncode == 0, done.stderr
    assert still == [], f"graceful --wait returned while old uvicorn workers {still} ran"
    assert done.stdout.endswith("2 new workers STARTED, 2 old workers exited\n")


def test_stop_and_exit_wait_return_after_every_listener_finished(
    busd_pool: Any, tmp_path: Path
) -> None:
    marks = marks_dir(tmp_path)
    pool: BusdPool = busd_pool(slow_exit, "--env", f"MARKS={marks}", workers=2)
    pids = pool.pids

    done = busctl(pool.runtime_dir, "stop", "--wait")

    stops = sorted(p.name for p in marks.iterdir())
    assert (done.returncode, done.stdout) == (0, "stop: state STOPPED; 2 clients acked\n")
    assert stops == sorted(f"stop-{pid}" for pid in pids)
    assert [w["state"] for w in status_of(pool.runtime_dir)["workers"]] == ["STOPPED"] * 2

    done = busctl(pool.runtime_dir, "start", "--wait")
    assert (done.returncode, done.stdout) == (0, "start: state STARTED; 2 clients acked\n")

    done = busctl(pool.runtime_dir, "exit", "--wait")

    names = {p.name for p in marks.iterdir()}
    assert (done.returncode, done.stdout) == (0, "exit: state EXITING; 2 clients acked\n")
    assert {f"exit-{pid}" for pid in pids} <= names
    assert pool.proc.wait(15) == 0


# -- timeouts name their flags -------------------------------------------------------


def run_busd(procs: Processes, *args: str) -> subprocess.Popen[bytes]:
    return procs.spawn([sys.executable, "-m", "busd", "--log-format", "plain", *args], name="busd")


def test_a_command_that_never_joins_fails_at_the_startup_timeout(busd_procs: Processes) -> None:
    began = time.monotonic()
    busd = run_busd(busd_procs, "-w", "2", "--startup-timeout", "2", "--", "sleep", "1000")
    assert busd.wait(30) == 3
    took = time.monotonic() - began
    out = busd_procs.output(busd)
    assert 2.0 <= took < 10, f"busd gave up after {took:.1f}s:\n{out}"
    fatal = [line for line in out.splitlines() if "CRITICAL busd.main" in line]
    # Both workers time out in the same tick; whichever is reaped first is named.
    assert fatal in (
        [
            f"busd [{busd.pid}] CRITICAL busd.main: worker failed to boot: worker {index} "
            "did not join the bus within --startup-timeout 2s (a command run by busd "
            "must call busd.client.connect() to join, or run with --no-bus (bus = false "
            "in a config file) if it does not speak the bus; a slow start needs a longer "
            "--startup-timeout); no worker ever started"
        ]
        for index in (0, 1)
    ), out
    assert "--worker-timeout" not in out
    assert "Traceback" not in out


def test_a_worker_that_never_joins_is_not_blamed_on_worker_timeout(busd_procs: Processes) -> None:
    busd = run_busd(
        busd_procs,
        "-w",
        "1",
        "--startup-timeout",
        "1",
        "--worker-timeout",
        "7",
        "--",
        "sleep",
        "1000",
    )
    assert busd.wait(30) == 3
    out = busd_procs.output(busd)
    assert "did not join the bus within --startup-timeout 1s: killing it (SIGKILL)" in out, out
    assert "--worker-timeout" not in out


def test_a_silent_worker_is_killed_naming_worker_timeout(busd_pool: Any) -> None:
    pool: BusdPool = busd_pool(
        generation, "--worker-timeout", "1", "--heartbeat", "0.2", "--backoff", "0.05"
    )
    victim = psutil.Process(pool.pids[0])
    victim.suspend()
    try:
        pool.wait_for(
            lambda d: (
                d["workers"][0]["pid"] not in (None, victim.pid)
                and d["workers"][0]["state"] == "STARTED"
            )
        )
    finally:
        if victim.is_running():
            victim.resume()
    line = f"worker 0 (pid {victim.pid}) did not answer within --worker-timeout 1s: killing it"
    assert line in pool.log.text


def test_a_worker_slow_to_stop_is_killed_naming_graceful_timeout(
    busd_pool: Any, busd_sink: Sink
) -> None:
    pool: BusdPool = busd_pool(
        "tests.integration.targets:slow_stop", "--graceful-timeout", "1", workers=2
    )
    victim = pool.pids[1]
    pool.scale(1, wait=False)
    busd_sink.expect("stopping", where=lambda r: r["pid"] == victim)
    pool.wait_for(lambda d: exited(victim) and len(d["workers"]) == 1)
    assert (
        f"worker 1 (pid {victim}) did not stop within --graceful-timeout 1s of SIGTERM: killing it"
    ) in pool.log.text


# -- per-slot counters ---------------------------------------------------------------


def test_worker_generation_counts_the_starts_of_its_slot(busd_pool: Any, busd_sink: Sink) -> None:
    pool: BusdPool = busd_pool(generation, "--backoff", "0.05", workers=2)
    first = sorted((r["worker"], r["generation"]) for r in busd_sink.collect("start", 2))
    assert first == [(0, 1), (1, 1)]
    victim = pool.kill_worker(1)
    again = busd_sink.expect("start", where=lambda r: r["pid"] != victim)
    assert (again["worker"], again["generation"]) == (1, 2)
    doc = pool.wait_for("STARTED")
    assert [w["generation"] for w in doc["workers"]] == [1, 2]


def test_restarts_count_crashes_not_recycles(busd_pool: Any, busd_sink: Sink) -> None:
    pool: BusdPool = busd_pool(recycle_first, "--backoff", "0.05", workers=2)
    replaced = busd_sink.expect("start", where=lambda r: r["worker"] == 0 and r["generation"] == 2)
    doc = pool.wait_for(
        lambda d: (
            d["workers"][0]["pid"] == replaced["pid"] and d["workers"][0]["state"] == "STARTED"
        )
    )
    assert [(w["restarts"], w["recycles"]) for w in doc["workers"]] == [(0, 1), (0, 0)]
    table = busctl(pool.runtime_dir, "workers").stdout.splitlines()
    assert [row.split()[3] for row in table[2:]] == ["0", "0"]  # RESTARTS

    os.kill(pool.pids[1], signal.SIGKILL)
    doc = pool.wait_for(
        lambda d: d["workers"][1]["restarts"] == 1 and d["workers"][1]["state"] == "STARTED"
    )
    assert [(w["restarts"], w["recycles"]) for w in doc["workers"]] == [(0, 1), (1, 0)]
    table = busctl(pool.runtime_dir, "workers").stdout.splitlines()
    assert [row.split()[3] for row in table[2:]] == ["0", "1"]
