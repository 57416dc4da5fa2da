"""Where the master's own listeners run: busd's log lines and the in-place reload's end.

A ``--plugin`` listener of the master's 'log' channel runs on the command
thread (``busd-commands``) for every line busd says about its pool: never on
the pool's supervisor thread or the hub's.  ``reload_end`` of an in-place
``graceful --wait`` comes after the workers acked, not when it was relayed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from busd.testing import Processes
from tests.integration.test_daemon import busctl, start_busd, states, wait_status

L = "tests.integration.listener_targets"
TARGET = "busd.examples.hello:main"


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_log_listeners_run_on_the_command_thread_through_a_pools_life(
    busd_procs: Processes, tmp_path: Path
) -> None:
    busd_procs.env["BUSD_TEST_RECORD_DIR"] = str(tmp_path)
    busd = start_busd(
        busd_procs, "-w", "2", "--backoff", "0.05", "--plugin", f"{L}:log_threads", TARGET
    )
    doc = wait_status(busd_procs, lambda d: states(d) == ["STARTED"] * 2, timeout=30)
    victim = doc["workers"][0]["pid"]
    os.kill(victim, signal.SIGKILL)  # a crash: reaped, logged and restarted
    wait_status(
        busd_procs,
        lambda d: d["workers"][0]["pid"] not in (None, victim) and states(d) == ["STARTED"] * 2,
        timeout=30,
    )
    assert busctl(busd_procs, "scale", "+1").returncode == 0
    wait_status(busd_procs, lambda d: states(d) == ["STARTED"] * 3, timeout=30)
    assert busctl(busd_procs, "scale", "-1").returncode == 0
    wait_status(busd_procs, lambda d: len(d["workers"]) == 2 and states(d) == ["STARTED"] * 2)
    assert busctl(busd_procs, "graceful", "--wait").returncode == 0
    assert busctl(busd_procs, "exit").returncode == 0
    assert busd.wait(15) == 0

    records = _records(tmp_path / "log.jsonl")
    said = "\n".join(r["msg"] for r in records)
    assert f"worker 0 (pid {victim}) exited with signal SIGKILL" in said, said
    assert "spawned (generation 2)" in said, said  # the crashed slot's restart
    assert "worker 2 (pid" in said, said  # the scale up's worker, and its scale down
    # The one line busd says elsewhere: wspbus's block() in the main thread, once
    # the bus has exited (busd.core.bus), after the pool and its threads are done.
    after_exit = ("MainThread", "Waiting for child threads to terminate...")
    elsewhere = [
        (r["thread"], r["msg"])
        for r in records
        if r["thread"] != "busd-commands" and (r["thread"], r["msg"]) != after_exit
    ]
    assert elsewhere == []


def test_an_inplace_reload_ends_after_the_workers_acked(
    busd_procs: Processes, tmp_path: Path
) -> None:
    busd_procs.env["BUSD_TEST_RECORD_DIR"] = str(tmp_path)
    busd = start_busd(busd_procs, "-w", "2", "--plugin", f"{L}:reload_order", f"{L}:slow_graceful")
    doc = wait_status(busd_procs, lambda d: states(d) == ["STARTED"] * 2, timeout=30)
    pids = sorted(w["pid"] for w in doc["workers"])
    assert busctl(busd_procs, "graceful", "--wait").returncode == 0
    # The reply comes after reload_end's listeners ran (on the same thread, before it).
    (record,) = _records(tmp_path / "reload.jsonl")
    assert record == {
        "info": {"mode": "inplace", "ok": True, "waited": True},
        "graceful_done": pids,
    }
    assert busctl(busd_procs, "exit").returncode == 0
    assert busd.wait(15) == 0


def test_an_inplace_reload_a_worker_failed_ends_not_ok(
    busd_procs: Processes, tmp_path: Path
) -> None:
    busd_procs.env["BUSD_TEST_RECORD_DIR"] = str(tmp_path)
    busd = start_busd(
        busd_procs, "-w", "1", "--plugin", f"{L}:reload_order", f"{L}:failing_graceful"
    )
    wait_status(busd_procs, lambda d: states(d) == ["STARTED"], timeout=30)
    done = busctl(busd_procs, "graceful", "--wait")
    assert done.returncode == 1, done.stderr
    assert "cannot reload" in done.stderr
    (record,) = _records(tmp_path / "reload.jsonl")
    assert record["info"] == {"mode": "inplace", "ok": False, "waited": True}
    assert busctl(busd_procs, "exit").returncode == 0
    assert busd.wait(15) == 0


def test_a_crash_while_a_command_waits_is_restarted_before_the_wait_ends(
    busd_procs: Processes, tmp_path: Path
) -> None:
    """The command thread owns the pool, and does its upkeep while it waits for acks:
    a worker that dies during a long ``graceful --wait`` is replaced at once."""
    busd_procs.env["BUSD_TEST_RECORD_DIR"] = str(tmp_path)
    busd = start_busd(busd_procs, "-w", "2", "--backoff", "0.05", f"{L}:held_graceful")
    doc = wait_status(busd_procs, lambda d: states(d) == ["STARTED"] * 2, timeout=30)
    victim = doc["workers"][0]["pid"]
    waiting = busd_procs.spawn(
        [sys.executable, "-m", "busd.client.ctl.busctl", "graceful", "--wait", "--timeout", "60"]
    )
    try:
        wait_status(
            busd_procs,
            lambda d: (tmp_path / f"holding-{victim}").exists(),
            timeout=30,
        )
        os.kill(victim, signal.SIGKILL)
        wait_status(
            busd_procs,
            lambda d: d["workers"][0]["pid"] not in (None, victim) and states(d) == ["STARTED"] * 2,
            timeout=15,
        )
        assert waiting.poll() is None, "the graceful ended before the crash was handled"
    finally:
        (tmp_path / "release").touch()
    # The crashed worker never acked: the reload says so (exit status 1).
    assert waiting.wait(30) == 1, busd_procs.output(waiting)
    assert f"(pid {victim} worker 0): lost before it answered" in busd_procs.output(waiting)
    assert busctl(busd_procs, "exit").returncode == 0
    assert busd.wait(15) == 0
