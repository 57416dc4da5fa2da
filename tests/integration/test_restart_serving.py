"""``busctl restart`` of a busd serving HTTP on --listen: it keeps serving, and says so.

The re-executed master inherits the listening socket, so connections made
while it restarts wait in the kernel's backlog and are served by the new
workers: a request loop sees no refused connection.  ``restart --wait``
returns once the new master and every worker are STARTED; ``busctl watch``
reports the new epoch and keeps streaming, and says why it ends.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from busd.testing import Processes

TIMEOUT = 30.0


def busctl(procs: Processes, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "busd.client.ctl.busctl", *args],
        capture_output=True,
        text=True,
        env=procs.env,
        timeout=60,
        check=False,
    )


def wait_started(procs: Processes, count: int, epoch: Any = None) -> dict[str, Any]:
    """The status once the master (another epoch than ``epoch``) has ``count`` STARTED workers."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        done = busctl(procs, "--json", "status")
        doc: dict[str, Any] = json.loads(done.stdout) if done.returncode == 0 else {}
        workers = doc.get("workers") or []
        if (
            doc.get("epoch", epoch) != epoch
            and doc.get("state") == "STARTED"
            and len(workers) == count
            and all(w["state"] == "STARTED" for w in workers)
        ):
            return doc
        assert time.monotonic() < deadline, f"never {count} STARTED workers: {done.stderr} {doc}"


class RequestLoop(threading.Thread):
    """GET / in a loop, counting answers, refusals and other failures."""

    def __init__(self, port: int) -> None:
        super().__init__(name="requests")
        self.port = port
        self.ok = 0
        self.refused = 0
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 120
        while not self.done.is_set() and time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"status {response.status}")
            except ConnectionRefusedError:
                self.refused += 1
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
            finally:
                conn.close()

    def wait_ok(self, count: int) -> None:
        deadline = time.monotonic() + TIMEOUT
        while self.ok < count:
            assert self.is_alive(), "the request loop ended"
            assert time.monotonic() < deadline, f"only {self.ok} of {count} requests answered"
            self.join(0.05)


def test_restart_keeps_serving_and_watch_follows(busd_procs: Processes, busd_dir: Path) -> None:
    busd = busd_procs.spawn(
        [
            sys.executable,
            "-m",
            "busd",
            "-w",
            "2",
            "--heartbeat",
            "0.2",
            "--listen",
            "tcp:127.0.0.1:0",
            "busd.examples.http:main",
        ],
        name="busd",
    )
    before = wait_started(busd_procs, 2)
    port = int(before["listen"][0].rsplit(":", 1)[1])
    watch = busd_procs.spawn(
        [sys.executable, "-m", "busd.client.ctl.busctl", "--timeout", "20", "watch"], name="watch"
    )
    loop = RequestLoop(port)
    loop.start()
    try:
        loop.wait_ok(20)
        done = busctl(busd_procs, "--timeout", str(TIMEOUT), "restart", "--wait")
        assert done.returncode == 0, done.stderr
        assert "STARTED with 2 workers" in done.stdout, done.stdout
        after = wait_started(busd_procs, 2, epoch=before["epoch"])
        assert after["pid"] == before["pid"]  # re-executed in place
        assert after["listen"] == before["listen"]
        zombies = [
            p.pid for p in psutil.Process(busd.pid).children() if p.status() == psutil.STATUS_ZOMBIE
        ]
        assert zombies == [], "the former master's fork server was left unreaped"
        served = loop.ok
        loop.wait_ok(served + 20)  # the new workers serve on the same socket
    finally:
        loop.done.set()
        loop.join(TIMEOUT)
    assert loop.refused == 0, f"{loop.refused} connections refused during the restart"
    assert loop.failures == [], loop.failures[:5]

    assert busctl(busd_procs, "exit").returncode == 0
    assert busd.wait(TIMEOUT) == 0, busd_procs.output(busd)
    assert watch.wait(TIMEOUT) == 0, busd_procs.output(watch)
    out = busd_procs.output(watch)
    new_epoch = f"epoch {after['epoch']}: a new master (pid {after['pid']}"
    assert new_epoch in out, out
    tail = out[out.index(new_epoch) :]
    assert " state EXITING" in tail, "watch stopped streaming after the restart"
    assert out.rstrip().endswith("exited"), out
    left = [p.name for p in busd_dir.iterdir() if p.name in ("ctl.sock", "pub.sock")]
    assert not left, f"busd left its socket files behind: {left}"
