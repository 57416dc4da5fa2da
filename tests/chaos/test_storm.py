"""A command storm: 20 busctl connections x 25 commands each against one pool.

Every command is answered, none takes over 2 s, the pool ends at the size
the scales add up to, and no reload reports a worker "lost" or failed that
the pool itself retired (a ``scale -1`` racing a ``graceful --wait``).
Seeded by ``BUSD_CHAOS_SEED``.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from busd.core.errors import BusError
from busd.testing import Processes
from tests.chaos.support import all_started, control, exit_busd, start_busd, wait_status

SEED = int(os.environ.get("BUSD_CHAOS_SEED", "13"))
CLIENTS = 20
COMMANDS = 25
#: The slowest answer allowed to any one command.
SLOWEST = 2.0
START = 3

pytestmark = pytest.mark.slow


def storm(busd_dir: Path, index: int, results: list[tuple[str, float, Any]]) -> None:
    """One client's commands (its scales alternate +1, -1: the size never drops below START)."""
    rng = random.Random(SEED * 1000 + index)
    plus = True
    with control(busd_dir, timeout=30) as ctl:
        for _ in range(COMMANDS):
            what = rng.choice(["graceful", "scale", "status", "publish", "graceful"])
            began = time.monotonic()
            try:
                if what == "graceful":
                    answer = ctl.call(
                        "graceful", {"wait": True, "timeout": 10}, time.monotonic() + 30
                    )
                elif what == "scale":
                    what = "scale +1" if plus else "scale -1"
                    plus = not plus
                    answer = ctl.call("scale", {"n": what.split()[1]}, time.monotonic() + 30)
                elif what == "status":
                    answer = ctl.request("status", timeout=30)
                else:
                    answer = ctl.call(
                        "broadcast", {"channel": "storm", "args": [index]}, time.monotonic() + 30
                    )
            except BusError as exc:
                answer = exc
            results.append((what, time.monotonic() - began, answer))


def wait_clients(ctl: Any, pids: list[int], timeout: float = 10.0) -> list[int]:
    """The worker clients' pids once they are ``pids`` (else the last seen, at ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        clients = sorted(c["pid"] for c in ctl.request("clients") if c["worker"] is not None)
        if clients == pids or time.monotonic() > deadline:
            return clients
        # Polling a condition under a deadline: the pause only spares the CPU.
        threading.Event().wait(0.05)


def test_a_storm_of_commands_is_answered_promptly_and_adds_up(
    busd_procs: Processes, busd_dir: Path
) -> None:
    busd = start_busd(
        busd_procs, "-w", str(START), "--graceful-timeout", "5", "busd.examples.hello:main"
    )
    results: list[tuple[str, float, Any]] = []
    with control(busd_dir) as ctl:
        wait_status(ctl, all_started(START), timeout=30)
        threads = [
            threading.Thread(target=storm, args=(busd_dir, i, results)) for i in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(t.is_alive() for t in threads), "a client never finished"
        assert len(results) == CLIENTS * COMMANDS
        errors = [(what, answer) for what, _, answer in results if isinstance(answer, Exception)]
        assert errors == [], errors[:5]
        slow = sorted(
            ((round(took, 2), what) for what, took, _ in results if took > SLOWEST), reverse=True
        )
        assert slow == [], f"{len(slow)} commands slower than {SLOWEST}s: {slow[:10]}"
        reloads = [answer["acks"] for what, _, answer in results if what == "graceful"]
        failed = [acks["failures"] for acks in reloads if not acks["ok"]]
        assert failed == [], f"{len(failed)} of {len(reloads)} reloads failed: {failed[:5]}"
        size = (
            START
            + sum(1 for w, _, _ in results if w == "scale +1")
            - sum(1 for w, _, _ in results if w == "scale -1")
        )
        assert size >= START
        doc = wait_status(ctl, all_started(size), timeout=30, what=f"{size} started workers")
        pids = sorted(w["pid"] for w in doc["workers"])
        # A worker the pool retired may still be saying goodbye; a ghost never leaves.
        clients = wait_clients(ctl, pids)
        assert clients == pids, "a client that is no worker of the pool (a ghost)"
        assert exit_busd(ctl, busd) == 0
