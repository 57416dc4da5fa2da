"""Joining a running master, and signals in a joined process, with real processes.

A joiner (``busd.examples.joiner``: ``connect()``, ``subscribe(...)``,
``block()``) runs its start listeners when the master is already STARTED,
then its stop listeners; SIGINT or SIGTERM ends that process alone; a
``-- CMD`` worker scaled down runs its listeners and leaves; a worker that
is leaving never tries to start again.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from busd.client.bus import ClientBus
from busd.testing import PoolFactory, Processes, Sink
from busd.testing.pool import BusdPool, Status
from busd.testing.probe import Probe

TIMEOUT = 30.0
JOINER = [sys.executable, "-m", "busd.examples.joiner"]
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "GUIDE.md"
EXAMPLE = Path(__file__).resolve().parents[2] / "busd" / "examples" / "joiner.py"


def busctl(pool: BusdPool, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "busd.client.ctl.busctl",
            "--runtime-dir",
            str(pool.runtime_dir),
            "--timeout",
            "20",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def steps(output: str, pid: int) -> list[str]:
    """What joiner ``pid`` said, in order (its ``joined`` line left out)."""
    said = re.findall(rf"^joiner \(pid {pid}\): (.*)$", output, re.M)
    return [s for s in said if not s.startswith("joined")]


def client_started(pid: int) -> Callable[[Status], bool]:
    """A wait_for predicate: the client ``pid`` reports ``STARTED`` to the master."""

    def check(status: Status) -> bool:
        return any(
            c.get("pid") == pid and c.get("state") == "STARTED" for c in status.get("clients", [])
        )

    check.__name__ = f"client {pid} STARTED"
    return check


def join(pool: BusdPool, busd_procs: Processes) -> subprocess.Popen[bytes]:
    """Start a joiner of ``pool``; return once the master counts it STARTED."""
    proc = busd_procs.spawn(JOINER, name="joiner", env={"BUSD_RUNTIME_DIR": str(pool.runtime_dir)})
    pool.wait_for(client_started(proc.pid))
    return proc


def test_a_joiner_of_a_started_master_starts_then_stops_once(
    busd_pool: PoolFactory, busd_procs: Processes
) -> None:
    pool = busd_pool("busd.examples.hello:main", workers=1)
    joiner = join(pool, busd_procs)
    done = busctl(pool, "exit")
    assert done.returncode == 0, done.stderr
    assert joiner.wait(TIMEOUT) == 0
    assert steps(busd_procs.output(joiner), joiner.pid) == ["started", "stopped", "exiting"]


def test_a_cmd_worker_joins_a_started_master_and_starts_then_stops_once(
    busd_pool: PoolFactory,
) -> None:
    pool = busd_pool(None, "--", *JOINER, workers=1)
    # One more once the master is STARTED: it joins a master that is already started.
    pool.scale("+1")
    pids = pool.pids
    assert pool.exit() == 0
    for pid in pids:
        assert steps(pool.log.text, pid) == ["started", "stopped", "exiting"], pool.log.text


def leaves_alone(busd_pool: PoolFactory, busd_procs: Processes, sig: signal.Signals) -> None:
    """``sig`` to a joiner: it alone leaves; the master and its workers carry on."""
    pool = busd_pool("busd.examples.hello:main", workers=2)
    workers = sorted(pool.pids)
    joiner = join(pool, busd_procs)
    joiner.send_signal(sig)
    assert joiner.wait(TIMEOUT) == 0, busd_procs.output(joiner)
    assert steps(busd_procs.output(joiner), joiner.pid) == [
        "started",
        "stopped",
        "exiting",
        f"left on {sig.name}",
    ]
    status = pool.wait_for(lambda s: joiner.pid not in [c["pid"] for c in s["clients"]])
    assert status["state"] == "STARTED"
    assert sorted(w["pid"] for w in status["workers"] if w["state"] == "STARTED") == workers
    shown = busctl(pool, "--json", "status")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["state"] == "STARTED"
    assert "STOPPING" not in pool.log.text, pool.log.text


def test_sigint_ends_the_joined_process_alone(
    busd_pool: PoolFactory, busd_procs: Processes
) -> None:
    leaves_alone(busd_pool, busd_procs, signal.SIGINT)


def test_sigterm_ends_the_joined_process_alone(
    busd_pool: PoolFactory, busd_procs: Processes
) -> None:
    leaves_alone(busd_pool, busd_procs, signal.SIGTERM)


def test_scaling_down_a_cmd_pool_lets_the_worker_leave_as_planned(busd_pool: PoolFactory) -> None:
    pool = busd_pool(None, "--", *JOINER, workers=2)
    before = {w["id"]: w["pid"] for w in pool.workers}
    with pool.events() as events:
        done = busctl(pool, "scale", "-1")
        assert done.returncode == 0, done.stderr
        exited = events.expect(TIMEOUT, kind="event", event="worker_exited")["data"]
    assert (exited["code"], exited["reason"], exited["planned"]) == (0, "scale", True)
    gone = exited["pid"]
    pool.size = 1
    status = pool.wait_for("STARTED")
    [kept] = status["workers"]
    assert kept["pid"] == before[kept["id"]] != gone
    assert kept["restarts"] == 0
    assert steps(pool.log.text, gone) == ["started", "stopped", "exiting", "left on SIGTERM"]
    assert steps(pool.log.text, kept["pid"]) == ["started"]


def slow_leaver(bus: ClientBus) -> None:
    """A worker whose stop, once told to leave, waits for a ``release`` broadcast (a drain)."""
    probe = Probe()
    leaving, released = threading.Event(), threading.Event()
    bus.subscribe("start", lambda: probe.report("start"))
    bus.subscribe("release", released.set)
    leave = signal.getsignal(signal.SIGTERM)
    assert callable(leave)

    def on_term(signum: int, frame: FrameType | None) -> None:
        leaving.set()
        leave(signum, frame)

    signal.signal(signal.SIGTERM, on_term)

    def stop() -> None:
        if leaving.is_set():
            probe.report("stopping")
            released.wait(TIMEOUT)

    bus.subscribe("stop", stop)
    bus.subscribe("exit", lambda: probe.report("exit"))
    bus.subscribe("exit", probe.close, priority=100)


def test_a_worker_leaving_after_a_respawn_reload_never_starts_again(
    busd_pool: PoolFactory, busd_sink: Sink
) -> None:
    pool = busd_pool(slow_leaver, "--reload", "respawn", workers=1)
    [old] = pool.pids
    # A respawn reload: a new worker starts, the old one leaves (slowly; no
    # wait, which would wait for it to have exited).
    pool.graceful(wait=False)
    assert busd_sink.expect("stopping", timeout=TIMEOUT)["pid"] == old
    # While it drains, the master stops and starts again: the leaving worker
    # hears STARTED, and must not go from STOPPING back to STARTING.
    pool.stop()
    pool.start()
    pool.broadcast("release")
    assert busd_sink.expect("exit", timeout=TIMEOUT, where=lambda r: r["pid"] == old)
    starts = [r["pid"] for r in busd_sink.seen if r["event"] == "start"]
    assert starts.count(old) == 1, starts
    assert "cannot go from" not in pool.log.text, pool.log.text
    assert "error mirroring" not in pool.log.text, pool.log.text


def test_the_guide_shows_the_example_that_runs_here() -> None:
    guide = GUIDE.read_text()
    section = guide.split("## Joining a running master", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, re.S)
    example = EXAMPLE.read_text()
    for line in code.strip().splitlines():
        assert line.strip() in example, f"GUIDE line not in {EXAMPLE.name}: {line}"
