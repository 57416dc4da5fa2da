"""``busctl wait``: for a master that does not exist yet, for a state, and past --timeout.

busctl runs as a real command; busd is a real pool.  Readiness is what
busctl wait itself reports, checked against the master's status the moment
it returns; nothing here sleeps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from busd.client.bus import ClientBus
from busd.testing import Processes
from busd.testing.pool import BusdPool

TIMEOUT = 30.0


def slow_stop(bus: ClientBus) -> None:
    """A worker whose stop listener takes 0.5 s, then writes ``stop-<pid>`` in $MARKS."""
    import threading

    marks = Path(os.environ["MARKS"])

    def stop() -> None:
        threading.Event().wait(0.5)
        (marks / f"stop-{os.getpid()}").write_text("done")

    bus.subscribe("stop", stop)


def busctl(
    runtime: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """busctl as a real command, for the busd of ``runtime``."""
    return subprocess.run(
        [sys.executable, "-m", "busd.client.ctl.busctl", "--runtime-dir", str(runtime), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def status_of(runtime: Path) -> dict[str, Any]:
    done = busctl(runtime, "--json", "status")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def test_wait_started_before_busd_returns_once_every_worker_is_started(
    busd_procs: Processes, busd_dir: Path
) -> None:
    runtime = busd_dir / "late"
    waiter = busd_procs.spawn(
        [
            sys.executable,
            "-m",
            "busd.client.ctl.busctl",
            "--runtime-dir",
            str(runtime),
            "--timeout",
            str(TIMEOUT),
            "wait",
        ],
        name="wait",
    )
    assert not runtime.exists()
    busd = busd_procs.spawn(
        [
            sys.executable,
            "-m",
            "busd",
            "--runtime-dir",
            str(runtime),
            "-w",
            "2",
            "--log-level",
            "WARNING",
            "busd.examples.hello:main",
        ],
        name="busd",
    )

    assert waiter.wait(TIMEOUT + 5) == 0, busd_procs.output(waiter)
    doc = status_of(runtime)  # asked after wait returned: nothing may be missing
    assert doc["state"] == "STARTED"
    assert [w["state"] for w in doc["workers"]] == ["STARTED", "STARTED"]
    line = busd_procs.output(waiter)
    assert line.startswith(f"wait: busd pid {busd.pid} STARTED with 2 workers STARTED"), line
    assert len(line.splitlines()) == 1
    assert busctl(runtime, "exit").returncode == 0
    assert busd.wait(15) == 0


def test_wait_for_nothing_gives_up_at_its_timeout_with_one_line(busd_dir: Path) -> None:
    runtime = busd_dir / "nobody"
    best = float("inf")
    for _ in range(2):  # a loaded machine may delay an interpreter's start: best of two
        began = time.monotonic()
        done = busctl(runtime, "--timeout", "1", "wait")
        best = min(best, time.monotonic() - began)
        assert done.returncode == 3
        assert done.stdout == ""
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith("busctl: wait: busd at ")
        assert "within --timeout 1s" in done.stderr
        assert "does not exist" in done.stderr
    assert 1.0 <= best < 1.5, f"gave up after {best:.2f}s"

    done = busctl(runtime, "--json", "--timeout", "0.3", "wait", "--for", "stopped")
    assert done.returncode == 3
    doc = json.loads(done.stdout)  # exactly one document
    assert doc["error"]["code"] == "no_master"
    assert "was not STOPPED" in doc["error"]["message"]


def test_wait_for_stopped_after_a_stop(busd_pool: Any, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    pool: BusdPool = busd_pool(slow_stop, "--env", f"MARKS={marks}", workers=2)
    pids = pool.pids
    runtime = pool.runtime_dir

    stop = busctl(runtime, "stop")  # no --wait: the master's own state only
    assert (stop.returncode, stop.stdout) == (0, "stop: state STOPPED\n")
    done = busctl(runtime, "--json", "wait", "--for", "STOPPED")

    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["state"] == "STOPPED"
    assert sorted(w["pid"] for w in doc["workers"]) == sorted(pids)
    assert {w["state"] for w in doc["workers"]} == {"STOPPED"}
    # A worker is STOPPED only once its stop listeners ran.
    assert sorted(p.name for p in marks.iterdir()) == sorted(f"stop-{pid}" for pid in pids)
    assert [w["state"] for w in status_of(runtime)["workers"]] == ["STOPPED", "STOPPED"]


def test_wait_bad_state_is_a_usage_error(busd_dir: Path) -> None:
    done = busctl(busd_dir / "x", "wait", "--for", "RUNNING")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "busctl wait: --for: not a state: 'RUNNING' (one of STOPPED, STARTING, STARTED, "
        "STOPPING, EXITING) (see busctl wait --help)"
    ]
