"""The failures users of other process managers met, each as a named regression test.

- orphans after a stop or a master crash (supervisord #1101, PM2 #6084)
- reloads that drop requests (gunicorn #3394, PM2 #2729)
- stops that hang past their timeout (gunicorn #2839)
- signals lost between fork and handler set-up (gunicorn #1910)
- zombies when many workers exit at once
- control commands that block each other (Circus #831, #1179)
- restart storms that make the manager unresponsive (Circus #1157)
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from busd.testing import Processes, Sink
from tests.chaos.support import (
    all_started,
    control,
    exit_busd,
    gone,
    start_busd,
    wait_status,
)

pytestmark = pytest.mark.slow


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_no_orphan_or_grandchild_after_exit_or_master_sigkill(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path, how: str
) -> None:
    busd = start_busd(busd_procs, "-w", "3", "tests.chaos.targets:leaves_child")
    reports = busd_sink.collect("start", 3, timeout=30)
    with control(busd_dir) as ctl:
        doc = wait_status(ctl, all_started(3))
        pids = [w["pid"] for w in doc["workers"]] + [r["child"] for r in reports]
        if how == "exit":
            assert exit_busd(ctl, busd) == 0
        else:
            busd.kill()
            assert busd.wait(10) == -signal.SIGKILL
    assert gone(pids, 10) == [], "a worker or a worker's child outlived busd"


def http_get(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        body = response.read().decode()
        if response.status != 200:
            raise AssertionError(f"HTTP status {response.status}")
        return body
    finally:
        conn.close()


def test_no_failed_request_across_reloads_with_a_real_server(
    busd_procs: Processes, busd_dir: Path
) -> None:
    busd = start_busd(
        busd_procs,
        "-w",
        "2",
        "--reload",
        "respawn",
        "--listen",
        "tcp:127.0.0.1:0",
        "busd.examples.http:main",
    )
    failures: list[str] = []
    served: set[str] = set()
    counts = [0] * 4
    stop = threading.Event()

    def client(index: int, port: int) -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                served.add(http_get(port).split()[3])
                counts[index] += 1
            except (OSError, http.client.HTTPException, AssertionError) as exc:
                failures.append(repr(exc))

    with control(busd_dir) as ctl:
        doc = wait_status(ctl, all_started(2))
        port = int(doc["listen"][0].rsplit(":", 1)[1])
        threads = [threading.Thread(target=client, args=(i, port)) for i in range(4)]
        for t in threads:
            t.start()
        try:
            generation = {w["pid"] for w in doc["workers"]}
            for _ in range(4):
                ctl.request("graceful", timeout=30)
                doc = wait_status(
                    ctl,
                    lambda d, old=generation: (
                        all_started(2)(d) and not ({w["pid"] for w in d["workers"]} & old)
                    ),
                    what="a new generation",
                )
                generation = {w["pid"] for w in doc["workers"]}
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert exit_busd(ctl, busd) == 0
    assert failures == [], failures[:5]
    assert sum(counts) >= 200, f"only {counts} requests"
    assert len(served) >= 8, f"served by {served} only: did every reload happen?"


def test_stop_is_bounded_by_graceful_timeout_when_a_worker_ignores_sigterm(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    timeout = 1.0
    busd = start_busd(
        busd_procs,
        "-w",
        "2",
        "--graceful-timeout",
        str(timeout),
        "tests.chaos.targets:ignores_sigterm",
    )
    busd_sink.collect("start", 2, timeout=30)
    with control(busd_dir) as ctl:
        pids = [w["pid"] for w in wait_status(ctl, all_started(2))["workers"]]
        # Scaling down: SIGTERM (ignored), the stop listener hangs, SIGKILL in time.
        began = time.monotonic()
        assert ctl.request("scale", n="1")["size"] == 1
        assert gone(pids[1:], timeout + 5) == [], "the worker that ignored SIGTERM lives"
        assert time.monotonic() - began < timeout + 5
        began = time.monotonic()
        ctl.request("exit", timeout=30)
    assert busd.wait(timeout + 10) == 0
    elapsed = time.monotonic() - began
    assert elapsed < timeout + 5, f"exit took {elapsed:.1f}s with a {timeout}s graceful timeout"
    assert gone(pids, 5) == []


def test_a_burst_of_signals_during_a_spawn_is_all_applied(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    busd = start_busd(busd_procs, "-w", "1", "tests.chaos.targets:quiet")
    busd_sink.expect("start", timeout=30)
    with control(busd_dir) as ctl:
        wait_status(ctl, all_started(1))
        # The first SIGTTIN starts a spawn; the rest arrive while it runs.
        for sig in [signal.SIGTTIN] * 6 + [signal.SIGTTOU] * 2 + [signal.SIGHUP] * 2:
            os.kill(busd.pid, sig)
        # The kernel merges a signal sent while the same one is pending: what
        # was caught is what must be applied, every one of them.
        kinds = {"SIGTTIN", "SIGTTOU", "SIGHUP"}
        doc = wait_status(
            ctl,
            lambda d: kinds <= set(d["signals"]["caught"]),
            what="each kind of signal caught",
            show=("signals", "workers"),
        )
        caught = doc["signals"]["caught"]
        ttin, ttou = caught["SIGTTIN"], caught["SIGTTOU"]
        final = 1 + ttin - ttou
        doc = wait_status(
            ctl,
            lambda d: d["signals"]["caught"] == caught and all_started(final)(d),
            timeout=30,
            what=f"{final} workers after {caught}",
        )
        assert doc["signals"]["caught"] == caught, "a signal came late"
        assert exit_busd(ctl, busd) == 0


def test_no_zombie_after_64_workers_exit_at_once(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    busd = start_busd(
        busd_procs, "--preload", "-w", "64", "--backoff", "5", "tests.chaos.targets:quiet"
    )
    busd_sink.collect("start", 64, timeout=90)
    with control(busd_dir) as ctl:
        pids = [w["pid"] for w in wait_status(ctl, all_started(64), timeout=60)["workers"]]
        ctl.request("signal", signal="KILL")
        assert gone(pids, 15) == [], "killed workers still run"
        # The pool has seen every exit (its slots wait out the backoff) ...
        wait_status(
            ctl, lambda d: not {w["pid"] for w in d["workers"]} & set(pids), what="every exit seen"
        )
        # ... and reaped every one: no zombie is left under the master.
        zombies = [p.pid for p in descendants(busd.pid) if p.pid in pids]
        assert zombies == [], f"{len(zombies)} zombies"
        assert exit_busd(ctl, busd) == 0
    assert gone(pids, 1) == []


def test_20_concurrent_busctl_commands_are_all_answered(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    busd = start_busd(busd_procs, "-w", "2", "tests.chaos.targets:quiet")
    busd_sink.collect("start", 2, timeout=30)
    commands = (
        [["graceful", "--wait"]] * 8
        + [["scale", "+1"]] * 4
        + [["scale", "-1"]] * 2
        + [["status"]] * 6
    )
    env = busd_procs.env
    with control(busd_dir) as ctl:
        wait_status(ctl, all_started(2))
        began = time.monotonic()
        running = [
            subprocess.Popen(
                [sys.executable, "-m", "busd.client.ctl.busctl", "--timeout", "30", *cmd],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for cmd in commands
        ]
        results = []
        for proc in running:
            out, err = proc.communicate(timeout=60)
            results.append((proc.args[3:], proc.returncode, out, err))
        assert time.monotonic() - began < 30, "not answered within their timeout"
        failed = [r for r in results if r[1] != 0]
        assert failed == [], failed
        doc = wait_status(ctl, all_started(4), what="2 + 4 - 2 workers")
        assert len(doc["workers"]) == 4
        assert exit_busd(ctl, busd) == 0


def test_a_crash_looping_target_does_not_starve_the_control_plane(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    busd = start_busd(
        busd_procs,
        "-w",
        "4",
        "--backoff",
        "0.01",
        "--backoff-max",
        "0.05",
        "--flap-limit",
        "100000",
        "tests.chaos.targets:crash_after_first",
    )
    busd_sink.collect("start", 4, timeout=30)
    with control(busd_dir) as ctl:
        pids = [w["pid"] for w in wait_status(ctl, all_started(4))["workers"]]
        for pid in pids:  # from now on, every start crashes
            os.kill(pid, signal.SIGKILL)
        wait_status(
            ctl, lambda d: sum(w["restarts"] for w in d["workers"]) >= 12, what="a crash loop"
        )
        master = psutil.Process(busd.pid)
        master.cpu_percent(None)
        times = []
        for _ in range(20):
            began = time.perf_counter()
            doc = ctl.request("status", timeout=5)
            times.append(time.perf_counter() - began)
            threading.Event().wait(0.05)
        restarts = sum(w["restarts"] for w in doc["workers"])
        cpu = master.cpu_percent(None)
        times.sort()
        assert times[-2] < 0.1, f"status round trips under a crash loop: {times}"
        assert restarts >= 16, "the loop stopped"
        assert cpu < 80, f"the master used {cpu}% of a core in a crash loop"
        assert exit_busd(ctl, busd) == 0
