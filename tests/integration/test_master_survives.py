"""No input ends a thread of the master; a thread of busd that dies anyway ends busd (exit 70)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from busd import client
from busd.client.control import Control
from busd.core.endpoints import default_endpoints
from busd.testing import PoolFactory


def test_a_failing_client_event_leaves_the_command_thread_serving(
    busd_dir: Path, busd_master: Any
) -> None:
    master = busd_master()
    master.start()
    seen: list[str] = []

    def broken(event: str, info: dict[str, Any]) -> None:
        seen.append(event)
        raise RuntimeError(f"a hook that fails on {event}")

    master.add_client_hook(broken)
    bus = client.connect(runtime_dir=busd_dir, timeout=10, mirror=True)
    try:
        with Control(default_endpoints(busd_dir).ctl, timeout=5) as ctl:
            report = ctl.request("graceful", timeout=5, wait=True)
            assert report["state"] == "STARTED"
            assert [a["client"] for a in report["acks"]["acks"]] == [bus.link.client_id]
            assert ctl.request("status", timeout=5)["state"] == "STARTED"
    finally:
        bus.leave("done")
    assert seen[0] == "client_joined"
    assert master.statistics()["failed_events"] >= 1


def test_a_thread_of_busd_that_dies_ends_busd_and_its_workers(
    busd_pool: PoolFactory, tmp_path: Path
) -> None:
    pool = busd_pool(
        "busd.examples.hello:main",
        "--plugin",
        "tests.integration.fatal_targets:doomed_thread",
        workers=2,
    )
    pids = pool.pids
    assert len(pids) == 2
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "busd.client.ctl.busctl",
            "--runtime-dir",
            str(pool.runtime_dir),
            "publish",
            "crash",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    # busd may end before its reply to the publish leaves: either is fine here.
    assert done.returncode in (0, 3), done.stderr

    assert pool.proc.wait(20) == 70
    assert "CRITICAL" in pool.log.text
    assert "thread busd-doomed died" in pool.log.text
    assert pool.log.text.count("Traceback") == 1, pool.log.text
    assert psutil.wait_procs([p for p in map(_process, pids) if p], timeout=10)[1] == []
    assert not (pool.runtime_dir / "ctl.sock").exists()
    assert not (pool.runtime_dir / "pub.sock").exists()


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None
