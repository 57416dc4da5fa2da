"""Worker targets for the chaos and regression tests (each reports to the test's probe)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from busd.client.bus import ClientBus
from busd.testing.probe import Probe


def quiet(bus: ClientBus) -> None:
    """Report start (with pid); nothing else."""
    probe = Probe()
    worker = int(os.environ.get("BUSD_WORKER", "-1"))
    bus.subscribe("start", lambda: probe.report("start", worker=worker))
    bus.subscribe("exit", probe.close, priority=100)


def stop_hangs(bus: ClientBus) -> None:
    """A stop listener that never returns."""
    probe = Probe()
    bus.subscribe("start", lambda: probe.report("start"))

    def stop() -> None:
        probe.report("stopping")
        threading.Event().wait(3600)

    bus.subscribe("stop", stop)


def crash_after_first(bus: ClientBus) -> None:
    """Start once per runtime dir, then crash at every later start (a crash loop).

    The first start succeeds, so a fail-fast at boot lets the master run on.
    """
    marker = Path(os.environ["BUSD_RUNTIME_DIR"]) / f"started-{os.environ['BUSD_WORKER']}"
    if marker.exists():
        raise RuntimeError("this worker crashes at every start after the first")
    marker.touch()
    probe = Probe()
    bus.subscribe("start", lambda: probe.report("start"))


def leaves_child(bus: ClientBus) -> None:
    """Start a grandchild (a plain sleeper) and never clean it up."""
    probe = Probe()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    bus.subscribe("start", lambda: probe.report("start", child=child.pid))


def ignores_sigterm(bus: ClientBus) -> None:
    """A worker that ignores SIGTERM and whose stop listener never returns."""
    stop_hangs(bus)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def keeps_children_past_sigterm(bus: ClientBus) -> None:
    """Ignore SIGTERM; run two sleepers that ignore it too, one in a session of its own."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    probe = Probe()
    sleeper = ["sh", "-c", "trap '' TERM; exec sleep 600"]
    # Not waited for: the test ends them (the point is that busd does).
    near = subprocess.Popen(sleeper)
    away = subprocess.Popen(sleeper, start_new_session=True)
    worker = int(os.environ.get("BUSD_WORKER", "-1"))
    bus.subscribe(
        "start", lambda: probe.report("start", worker=worker, children=[near.pid, away.pid])
    )


def slow_once_told_to_go(bus: ClientBus) -> None:
    """On SIGTERM, stay (the pool SIGKILLs it later); then a reload takes it 3 s."""
    probe = Probe()
    told = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: told.set())
    worker = int(os.environ.get("BUSD_WORKER", "-1"))
    bus.subscribe("start", lambda: probe.report("start", worker=worker))

    def graceful() -> None:
        if told.is_set():
            threading.Event().wait(3)

    bus.subscribe("graceful", graceful)


def starts_a_daemon(bus: ClientBus) -> None:
    """Worker 0 starts a daemon whose parent (a shell) ends at once: the fork server adopts it."""
    probe = Probe()
    worker = int(os.environ.get("BUSD_WORKER", "-1"))
    daemon = []
    if worker == 0:
        done = subprocess.run(
            ["sh", "-c", "sleep 600 > /dev/null 2>&1 & echo $!"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        daemon.append(int(done.stdout.strip()))
    bus.subscribe("start", lambda: probe.report("start", worker=worker, daemon=daemon))


def slow_start(bus: ClientBus) -> None:
    """An application that takes 2 s to start (its start listener), then stops at once."""
    probe = Probe()

    def start() -> None:
        threading.Event().wait(2.0)  # the application's own slow start, not a synchronisation
        probe.report("start")

    bus.subscribe("start", start)
