"""The fork server: shared by several threads, replaced when it dies."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from busd.pool.forkserver import ForkServer
from busd.testing import Processes, Sink
from tests.integration.test_daemon import busctl, start_busd, states, status, wait_status

ROUNDS = 8
PER_ASK = 2


def _env_for(master: Any, busd_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "BUSD_RUNTIME_DIR": str(busd_dir),
        "BUSD_PUB_ENDPOINT": master.hub.pub_endpoints[0],
        "BUSD_CTL_ENDPOINT": master.hub.ctl_endpoints[0],
    }


def _wait_exits(pidfds: list[int], timeout: float) -> None:
    pending = list(pidfds)
    deadline = time.monotonic() + timeout
    while pending:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{len(pending)} workers did not end"
        ready, _, _ = select.select(pending, [], [], remaining)
        pending = [fd for fd in pending if fd not in ready]


def test_two_threads_asking_at_once_get_their_own_workers(busd_dir: Path, busd_master: Any) -> None:
    # The fork server first: it is forked before the master has threads.
    server = ForkServer("tests.integration.targets:leave_at_once")
    master = busd_master()
    joined: dict[int, str] = {}
    everyone = threading.Condition()

    def on_client(event: str, client: dict[str, Any]) -> None:
        if event == "client_joined":
            with everyone:
                joined[client["pid"]] = client["name"]
                everyone.notify_all()

    master.add_client_hook(on_client)
    server.env = _env_for(master, busd_dir)
    asked: dict[str, dict[int, str]] = {"a": {}, "b": {}}
    failures: list[str] = []
    go = threading.Barrier(2, timeout=10)

    def ask(tag: str) -> None:
        go.wait()
        for round_ in range(ROUNDS):
            names = [f"{tag}-{round_}-{i}" for i in range(PER_ASK)]
            results = server.spawn_many([(i, {"BUSD_WORKER_NAME": n}) for i, n in enumerate(names)])
            for name, result in zip(names, results, strict=True):
                if isinstance(result, OSError):
                    failures.append(f"{name}: {result}")
                else:
                    pid, pidfd = result
                    asked[tag][pid] = name
                    pidfds.append(pidfd)

    pidfds: list[int] = []
    threads = [threading.Thread(target=ask, args=(tag,)) for tag in asked]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not failures, failures
        wanted = {**asked["a"], **asked["b"]}
        assert len(wanted) == 2 * ROUNDS * PER_ASK, "a pid was given to both threads"
        with everyone:
            assert everyone.wait_for(lambda: set(wanted) <= set(joined), 60), (
                f"never joined: {sorted(set(wanted) - set(joined))}"
            )
            # Each pid a thread was given runs with the env that thread asked for.
            assert {pid: joined[pid] for pid in wanted} == wanted
        _wait_exits(pidfds, 30)
    finally:
        for fd in pidfds:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            os.close(fd)
        server.close()


def test_a_dead_fork_server_is_replaced_and_said_so(busd_procs: Processes, busd_sink: Sink) -> None:
    busd = start_busd(
        busd_procs, "-w", "2", "--log-level", "INFO", "tests.integration.targets:main"
    )
    busd_sink.collect("start", 2, timeout=30)
    doc = wait_status(busd_procs, lambda d: states(d) == ["STARTED"] * 2)
    old = doc["forkserver"]["pid"]
    workers = [w["pid"] for w in doc["workers"]]
    os.kill(old, signal.SIGKILL)
    doc = wait_status(
        busd_procs,
        lambda d: d["forkserver"]["replaced"] == 1 and d["forkserver"]["pid"] not in (None, old),
        timeout=30,
    )
    # The workers it had made stay: they belong to the master, not to it.
    assert [w["pid"] for w in doc["workers"]] == workers
    assert states(doc) == ["STARTED"] * 2
    # And the new one makes workers.
    assert busctl(busd_procs, "scale", "3").returncode == 0
    busd_sink.expect("start", where=lambda r: r["worker"] == 2, timeout=30)
    wait_status(busd_procs, lambda d: states(d) == ["STARTED"] * 3)
    assert status(busd_procs)["forkserver"]["replaced"] == 1
    assert busctl(busd_procs, "exit").returncode == 0
    assert busd.wait(15) == 0
    log = busd_procs.output(busd)
    assert f"fork server (pid {old}) ended (signal SIGKILL): starting a new one" in log
    assert "new fork server pid" in log


APP = """
from busd.testing.probe import Probe

VERSION = {version}


def main(bus):
    probe = Probe()
    bus.subscribe("start", lambda: probe.report("version", version=VERSION))
    bus.subscribe("exit", probe.close, priority=100)
"""


@pytest.mark.parametrize(
    ("flags", "after_reload"), [([], 2), (["--preload"], 1)], ids=["fresh", "preload"]
)
def test_a_respawn_runs_new_code_unless_preloaded(
    busd_procs: Processes, busd_sink: Sink, tmp_path: Path, flags: list[str], after_reload: int
) -> None:
    (tmp_path / "app_v.py").write_text(APP.format(version=1))
    busd_procs.env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{busd_procs.env['PYTHONPATH']}"
    # The app changes within a second of its first import, at the same size: a cached .pyc
    # (stamped with its source's mtime in whole seconds and its size) would pass for new.
    busd_procs.env["PYTHONDONTWRITEBYTECODE"] = "1"
    busd = start_busd(busd_procs, *flags, "-w", "2", "--reload", "respawn", "app_v:main")
    first = busd_sink.collect("version", 2, timeout=30)
    assert [r["version"] for r in first] == [1, 1]
    (tmp_path / "app_v.py").write_text(APP.format(version=2))
    done = busctl(busd_procs, "graceful", "--wait")
    assert done.returncode == 0, done.stderr
    again = busd_sink.collect("version", 2, timeout=30)
    assert {r["pid"] for r in again}.isdisjoint(r["pid"] for r in first)
    assert [r["version"] for r in again] == [after_reload] * 2
    assert busctl(busd_procs, "exit").returncode == 0
    assert busd.wait(15) == 0
