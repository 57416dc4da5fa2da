"""The busd command with a pool of real worker processes, driven by busctl and signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

from busd.client.control import Control
from busd.core.endpoints import default_endpoints
from busd.core.errors import NoMaster
from busd.testing import Processes, Sink

TARGET = "tests.integration.targets:main"


def start_busd(procs: Processes, *args: str) -> subprocess.Popen[bytes]:
    return procs.spawn(
        [sys.executable, "-m", "busd", "--heartbeat", "0.2", "--log-level", "WARNING", *args],
        name="busd",
    )


def busctl(procs: Processes, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "busd.client.ctl.busctl", "--timeout", "5", *args],
        capture_output=True,
        text=True,
        env=procs.env,
        timeout=timeout,
        check=False,
    )


def status(procs: Processes) -> dict[str, Any]:
    done = busctl(procs, "--json", "status")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def wait_status(procs: Processes, predicate: Any, timeout: float = 10) -> dict[str, Any]:
    """Ask busd until its status satisfies ``predicate`` (each ask is a round trip).

    Until a starting busd has bound its socket busctl answers 3 at once: ask again.
    """
    deadline = time.monotonic() + timeout
    while True:
        done = busctl(procs, "--json", "status")
        if done.returncode == 3 and time.monotonic() < deadline:
            continue
        assert done.returncode == 0, done.stderr
        doc: dict[str, Any] = json.loads(done.stdout)
        try:
            matched = predicate(doc)
        except (IndexError, KeyError):  # asked while the pool was still filling its slots
            matched = False
        if matched:
            return doc
        if time.monotonic() > deadline:
            pytest.fail(f"status never matched: {json.dumps(doc)[:2000]}")


def states(doc: dict[str, Any]) -> list[str]:
    return [w["state"] for w in doc["workers"]]


def running(proc: psutil.Process) -> bool:
    """Alive and not a zombie (an orphan waits for init to reap it, which can lag)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def gone(pids: list[int], timeout: float) -> bool:
    """True once none of ``pids`` runs; checked until ``timeout``."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    deadline = time.monotonic() + timeout
    while any(running(p) for p in procs):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        # Wakes as soon as every process has ended (or in 50 ms to look again
        # for zombies, which wait_procs counts as alive).
        psutil.wait_procs([p for p in procs if running(p)], timeout=min(0.05, remaining))
    return True


SPAWN_MODES = [
    pytest.param(["--spawn", "exec"], id="exec"),
    pytest.param([], id="fork"),
    pytest.param(["--preload"], id="preload"),
]


@pytest.mark.parametrize("mode", SPAWN_MODES)
def test_pool_lifecycle_through_busctl(
    busd_procs: Processes, busd_sink: Sink, mode: list[str]
) -> None:
    busd = start_busd(busd_procs, *mode, "-w", "4", TARGET)
    busd_sink.collect("start", 4, timeout=30)
    doc = wait_status(busd_procs, lambda d: states(d) == ["STARTED"] * 4)
    assert {"state", "pid", "epoch", "uptime", "workers"} <= set(doc)
    assert [w["id"] for w in doc["workers"]] == [0, 1, 2, 3]
    assert all(w["restarts"] == 0 and w["pid"] for w in doc["workers"])
    pids = [w["pid"] for w in doc["workers"]]

    done = busctl(busd_procs, "graceful", "--wait")
    assert done.returncode == 0, done.stderr
    graceful = busd_sink.collect("graceful", 4)
    assert sorted(r["worker"] for r in graceful) == [0, 1, 2, 3]

    assert busctl(busd_procs, "stop").returncode == 0
    busd_sink.collect("stop", 4)
    doc = wait_status(busd_procs, lambda d: states(d) == ["STOPPED"] * 4)
    assert [w["pid"] for w in doc["workers"]] == pids, "stop must keep the same processes"
    assert all(psutil.pid_exists(pid) for pid in pids)

    assert busctl(busd_procs, "start").returncode == 0
    busd_sink.collect("start", 4)
    wait_status(busd_procs, lambda d: states(d) == ["STARTED"] * 4)

    assert busctl(busd_procs, "exit").returncode == 0
    busd_sink.collect("exit", 4)
    assert busd.wait(15) == 0
    assert gone(pids, 5), "a worker outlived busd exit"
    per_worker = Counter(r["worker"] for r in busd_sink.seen if r["event"] == "graceful")
    assert per_worker == {0: 1, 1: 1, 2: 1, 3: 1}, "each graceful listener runs exactly once"


@pytest.mark.parametrize("mode", SPAWN_MODES)
def test_killed_worker_is_replaced_and_counted(
    busd_procs: Processes, busd_sink: Sink, mode: list[str]
) -> None:
    busd = start_busd(busd_procs, *mode, "-w", "2", "--backoff", "0.05", TARGET)
    busd_sink.collect("start", 2, timeout=30)
    doc = wait_status(busd_procs, lambda d: states(d) == ["STARTED"] * 2)
    victim = doc["workers"][1]["pid"]
    os.kill(victim, signal.SIGKILL)
    busd_sink.expect("start", where=lambda r: r["worker"] == 1 and r["pid"] != victim)
    doc = wait_status(
        busd_procs,
        lambda d: d["workers"][1]["restarts"] == 1 and d["workers"][1]["state"] == "STARTED",
    )
    assert doc["workers"][1]["pid"] != victim
    assert doc["workers"][0]["restarts"] == 0
    assert busctl(busd_procs, "exit").returncode == 0
    assert busd.wait(15) == 0


def test_hung_worker_is_killed_and_replaced(busd_procs: Processes, busd_sink: Sink) -> None:
    worker_timeout, heartbeat = 1.0, 0.2
    busd = start_busd(
        busd_procs, "-w", "2", "--worker-timeout", str(worker_timeout), "--backoff", "0.05", TARGET
    )
    busd_sink.collect("start", 2, timeout=30)
    doc = wait_status(busd_procs, lambda d: states(d) == ["STARTED"] * 2)
    victim = psutil.Process(doc["workers"][0]["pid"])
    victim.suspend()
    stopped = time.monotonic()
    try:
        _, alive = psutil.wait_procs([victim], timeout=10)
    finally:
        if victim.is_running():
            victim.resume()
    elapsed = time.monotonic() - stopped
    assert not alive, "busd never killed the stopped worker"
    assert elapsed < worker_timeout + heartbeat + 1.0, f"took {elapsed:.2f}s to declare hung"
    busd_sink.expect("start", where=lambda r: r["worker"] == 0 and r["pid"] != victim.pid)
    wait_status(busd_procs, lambda d: d["workers"][0]["restarts"] == 1)
    assert busctl(busd_procs, "exit").returncode == 0
    assert busd.wait(15) == 0


def test_flapping_slot_stops_restarting(busd_procs: Processes, busd_sink: Sink) -> None:
    # A target that fails only after it started is restarted (no fail-fast).
    busd = start_busd(
        busd_procs,
        "-w",
        "1",
        "--backoff",
        "0.01",
        "--flap-limit",
        "3",
        "--flap-window",
        "30",
        "tests.integration.targets:crash_later",
    )
    doc = wait_status(busd_procs, lambda d: d["workers"][0]["state"] == "FLAPPING", timeout=20)
    assert doc["workers"][0]["restarts"] == 3
    assert busctl(busd_procs, "exit").returncode == 0
    assert busd.wait(15) == 0


@pytest.mark.parametrize("mode", SPAWN_MODES)
def test_no_worker_survives_sigkill_of_busd(
    busd_procs: Processes, busd_sink: Sink, mode: list[str]
) -> None:
    busd = start_busd(busd_procs, *mode, "-w", "4", TARGET)
    busd_sink.collect("start", 4, timeout=30)
    pids = [
        w["pid"] for w in wait_status(busd_procs, lambda d: states(d) == ["STARTED"] * 4)["workers"]
    ]
    busd.kill()
    assert busd.wait(5) == -signal.SIGKILL
    assert gone(pids, 2.0), [p for p in pids if psutil.pid_exists(p)]


def test_new_busd_kills_workers_a_dead_one_left(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    # Workers that cannot notice their master's death: SIGTERM ignored, no pdeathsig.
    busd = start_busd(
        busd_procs,
        "-w",
        "2",
        "--",
        sys.executable,
        "-c",
        "import signal, os; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "from busd.testing.probe import Probe; "
        "p = Probe(); p.report('up'); p.close();"
        "signal.pause()",
    )
    ups = busd_sink.collect("up", 2, timeout=30)
    orphans = [r["pid"] for r in ups]
    busd.kill()
    busd.wait(5)
    assert all(psutil.pid_exists(pid) for pid in orphans)
    second = start_busd(busd_procs, "-w", "0")
    assert gone(orphans, 10), "the new busd did not kill the orphans"
    wait_status(busd_procs, lambda d: d["state"] == "STARTED")
    assert busctl(busd_procs, "exit").returncode == 0
    assert second.wait(15) == 0


def test_signals_are_commands(busd_procs: Processes, busd_sink: Sink, busd_dir: Path) -> None:
    busd = start_busd(busd_procs, "-w", "2", TARGET)
    busd_sink.collect("start", 2, timeout=30)
    os.kill(busd.pid, signal.SIGHUP)
    assert sorted(r["worker"] for r in busd_sink.collect("graceful", 2)) == [0, 1]

    # A burst: the kernel merges a signal that arrives while the same one is
    # pending, so N signals give 1..N gracefuls; each one caught is run.
    for _ in range(50):
        os.kill(busd.pid, signal.SIGHUP)
    with Control(default_endpoints(busd_dir).ctl, timeout=5) as control:
        assert control.request("ping")["pong"] is True
        caught = control.request("status")["signals"]["caught"]["SIGHUP"]
        assert 2 <= caught <= 51
        # Each caught SIGHUP is one graceful in every worker (1 before the burst).
        busd_sink.collect("graceful", 2 * (caught - 1), timeout=30)
    os.kill(busd.pid, signal.SIGTERM)
    busd_sink.collect("exit", 2)
    assert busd.wait(15) == 0


def test_scale_up_and_down_at_run_time(busd_procs: Processes, busd_sink: Sink) -> None:
    busd = start_busd(busd_procs, "-w", "1", TARGET)
    busd_sink.collect("start", 1, timeout=30)
    assert busctl(busd_procs, "scale", "+2").returncode == 0
    doc = wait_status(busd_procs, lambda d: states(d) == ["STARTED"] * 3)
    leaving = doc["workers"][2]["pid"]
    os.kill(busd.pid, signal.SIGTTOU)
    wait_status(busd_procs, lambda d: len(d["workers"]) == 2)
    assert gone([leaving], 10)
    # The worker that left ran its stop and exit listeners; the bus did not exit.
    busd_sink.expect("exit", where=lambda r: r["pid"] == leaving)
    assert status(busd_procs)["state"] == "STARTED"
    assert busctl(busd_procs, "exit").returncode == 0
    assert busd.wait(15) == 0


def test_missing_daemon_gives_status_3(busd_procs: Processes) -> None:
    done = busctl(busd_procs, "--timeout", "0.3", "status")
    assert done.returncode == 3
    assert "ctl.sock" in done.stderr


def test_master_alone_accepts_clients(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    busd = start_busd(busd_procs)
    with Control(default_endpoints(busd_dir).ctl, timeout=5) as control:
        deadline = time.monotonic() + 10
        while True:
            try:
                control.request("ping", timeout=0.5)
                break
            except NoMaster:
                assert time.monotonic() < deadline, "busd never answered"
        assert control.request("status")["workers"] == []
    assert busctl(busd_procs, "exit").returncode == 0
    assert busd.wait(15) == 0


def test_flags_come_from_the_environment(busd_procs: Processes, busd_sink: Sink) -> None:
    busd = busd_procs.spawn(
        [sys.executable, "-m", "busd", TARGET],
        name="busd",
        env={
            "BUSD_WORKERS": "3",
            "BUSD_HEARTBEAT": "0.2",
            "BUSD_LOG_LEVEL": "WARNING",
            "BUSD_RELOAD": "respawn",
        },
    )
    busd_sink.collect("start", 3, timeout=30)
    before = {
        w["pid"] for w in wait_status(busd_procs, lambda d: states(d) == ["STARTED"] * 3)["workers"]
    }
    assert busctl(busd_procs, "graceful").returncode == 0
    # --reload respawn came from BUSD_RELOAD: graceful replaced every worker.
    wait_status(
        busd_procs,
        lambda d: states(d) == ["STARTED"] * 3 and not {w["pid"] for w in d["workers"]} & before,
    )
    assert busctl(busd_procs, "exit").returncode == 0
    assert busd.wait(15) == 0


def test_unrecoverable_start_failure_exits_70(busd_procs: Processes, busd_dir: Path) -> None:
    pidfile = busd_dir / "busd.pid"
    pidfile.write_text(f"{os.getpid()}\n")  # a live process: the PID file refuses
    busd = start_busd(busd_procs, "-w", "2", "--pidfile", str(pidfile), TARGET)
    assert busd.wait(30) == 70
    assert pidfile.read_text() == f"{os.getpid()}\n", "busd must not touch another's PID file"
    assert "is another instance up?" in busd_procs.output(busd)


def test_systemd_notify_and_pidfile(busd_procs: Processes, busd_sink: Sink, busd_dir: Path) -> None:
    import socket

    notify_path = str(busd_dir / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify_path)
    sock.settimeout(20)
    pidfile = busd_dir / "busd.pid"
    try:
        busd = busd_procs.spawn(
            [
                sys.executable,
                "-m",
                "busd",
                "--heartbeat",
                "0.2",
                "-w",
                "1",
                "--log-level",
                "WARNING",
                "--pidfile",
                str(pidfile),
                TARGET,
            ],
            name="busd",
            env={"NOTIFY_SOCKET": notify_path},
        )
        messages = []
        while "READY=1" not in messages:
            messages.extend(sock.recv(4096).decode().splitlines())
        assert pidfile.read_text().strip() == str(busd.pid)
        os.kill(busd.pid, signal.SIGTERM)
        while "STOPPING=1" not in messages:
            messages.extend(sock.recv(4096).decode().splitlines())
        assert busd.wait(15) == 0
        assert not pidfile.exists(), "the PID file outlived busd"
    finally:
        sock.close()


def test_second_interrupt_forces_exit(busd_procs: Processes, busd_sink: Sink) -> None:
    busd = start_busd(busd_procs, "-w", "2", "tests.integration.targets:slow_stop")
    busd_sink.collect("start", 2, timeout=30)
    pids = [
        w["pid"] for w in wait_status(busd_procs, lambda d: states(d) == ["STARTED"] * 2)["workers"]
    ]
    os.kill(busd.pid, signal.SIGINT)
    busd_sink.collect("stopping", 2)  # the workers hang in their stop listeners
    assert busd.poll() is None
    os.kill(busd.pid, signal.SIGINT)
    assert busd.wait(10) == 70
    assert gone(pids, 5), "forced exit left workers running"
