"""Planned departures are quiet: a worker the pool retires leaves without a warning
on either side and without joining again (scale down, SIGTTOU, a respawn reload, Ctrl-C).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from busd.testing import Processes

TIMEOUT = 30.0
NOISE = ("rejected a message", "does not know this client", "joining again", "Traceback")


def busctl(procs: Processes, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "busd.client.ctl.busctl", "--timeout", "20", *args],
        capture_output=True,
        text=True,
        env=procs.env,
        timeout=60,
        check=False,
    )


def wait_pids(procs: Processes, count: int, exclude: frozenset[int] = frozenset()) -> set[int]:
    """The pids of exactly ``count`` STARTED workers (none of ``exclude``), and no other."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        done = busctl(procs, "--json", "workers")
        workers: list[dict[str, Any]] = json.loads(done.stdout) if done.returncode == 0 else []
        pids = {w["pid"] for w in workers if w["state"] == "STARTED"}
        if len(workers) == count == len(pids) and not pids & exclude:
            return pids
        assert time.monotonic() < deadline, f"never {count} workers: {workers}"


def test_planned_departures_are_quiet(busd_procs: Processes) -> None:
    busd = busd_procs.spawn(
        [
            sys.executable,
            "-m",
            "busd",
            "-w",
            "3",
            "--heartbeat",
            "0.2",
            "--reload",
            "respawn",
            "busd.examples.hello:main",
        ],
        name="busd",
    )
    first = wait_pids(busd_procs, 3)
    watch = busd_procs.spawn(
        [sys.executable, "-m", "busd.client.ctl.busctl", "--json", "--timeout", "20", "watch"],
        name="watch",
    )
    assert busctl(busd_procs, "ping").returncode == 0
    # The watcher is subscribed once it has seen a heartbeat-driven message: a publish.
    deadline = time.monotonic() + TIMEOUT
    while '"channel": "hello"' not in busd_procs.output(watch):
        assert time.monotonic() < deadline, busd_procs.output(watch)
        busctl(busd_procs, "publish", "hello")

    assert busctl(busd_procs, "scale", "2").returncode == 0  # scale down
    two = wait_pids(busd_procs, 2)
    busd.send_signal(signal.SIGTTOU)  # one fewer
    one = wait_pids(busd_procs, 1)
    done = busctl(busd_procs, "graceful", "--wait")  # a respawn reload
    assert done.returncode == 0, done.stderr
    replaced = wait_pids(busd_procs, 1, exclude=frozenset(one))
    os.killpg(busd.pid, signal.SIGINT)  # Ctrl-C: the whole process group
    assert busd.wait(TIMEOUT) == 0, busd_procs.output(busd)
    assert watch.wait(TIMEOUT) == 0, busd_procs.output(watch)

    out = busd_procs.output(busd)
    noise = [line for line in out.splitlines() if any(n in line for n in NOISE)]
    assert noise == [], "\n".join(noise)
    assert two < first
    assert one < two
    events = [
        json.loads(line) for line in busd_procs.output(watch).splitlines() if line.startswith("{")
    ]
    joined = [e["data"]["pid"] for e in events if e.get("event") == "client_joined"]
    # Only the replacement joins after the watcher started: nobody joins again.
    assert joined == list(replaced), events
    exits = [e["data"] for e in events if e.get("event") == "worker_exited"]
    assert [e["reason"] for e in exits] == ["scale", "scale", "reload", "stop"], exits
