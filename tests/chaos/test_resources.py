"""Chaos: the master short of descriptors, its runtime dir removed, its disk full."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from busd.client.control import Control
from busd.core.endpoints import default_endpoints
from busd.core.errors import AlreadyRunning
from busd.testing import Processes, Sink
from tests.chaos.support import (
    all_started,
    busctl,
    control,
    exit_busd,
    start_busd,
    tmpfs,
    wait_status,
)

QUIET = "tests.chaos.targets:quiet"

pytestmark = pytest.mark.slow


def test_fd_exhaustion_refuses_scale_and_respawn_and_the_pool_keeps_serving(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    # The hard limit is 64 too (sh's ulimit sets both), so busd cannot raise it; 6 workers
    # fit in it beside the master's own descriptors (sockets, locks, pipes, the
    # accept monitor).
    busd = busd_procs.spawn(
        [
            "sh",
            "-c",
            f"ulimit -n 64 && exec {sys.executable} -m busd "
            "--heartbeat 0.2 --log-level WARNING -w 6 --reload respawn " + QUIET,
        ],
        name="busd",
    )
    busd_sink.collect("start", 6, timeout=60)
    with control(busd_dir) as ctl:
        before = wait_status(ctl, all_started(6), what="6 started workers")
        pids = [w["pid"] for w in before["workers"]]

        scaled = busctl(busd_procs, "scale", "16")
        assert scaled.returncode == 1, scaled.stdout + scaled.stderr
        assert "scale 16 refused" in scaled.stderr
        assert "RLIMIT_NOFILE" in scaled.stderr
        assert scaled.stderr.count("\n") == 1, "one clear line"
        reload = busctl(busd_procs, "graceful")
        assert reload.returncode == 1
        assert "respawn reload refused" in reload.stderr, reload.stderr

        assert busd.poll() is None, "the master died"
        after = wait_status(ctl, all_started(6), what="the same 6 workers")
        assert [w["pid"] for w in after["workers"]] == pids, "the pool changed"
        budget = after["master"]["fd_budget"]
        assert budget["limit"] == 64
        assert budget["refused"] == 2
        assert budget["open"] < 64
        # Still serving: a broadcast acked by every worker, and a scale that fits.
        acks = ctl.request("broadcast", channel="ping", wait=True, timeout=10)["acks"]
        assert len(acks["acks"]) == 6, acks
        assert ctl.request("scale", n="-2")["size"] == 4
        wait_status(ctl, all_started(4), what="4 workers")
        assert exit_busd(ctl, busd) == 0


def test_fd_budget_refuses_a_pool_it_cannot_hold_at_boot(busd_procs: Processes) -> None:
    busd = busd_procs.spawn(
        [
            "sh",
            "-c",
            f"ulimit -n 64 && exec {sys.executable} -m busd --log-level WARNING -w 40 " + QUIET,
        ],
        name="busd",
    )
    assert busd.wait(30) == 70
    out = busd_procs.output(busd)
    assert out.startswith("busd: -w 40 refused: "), out
    assert "RLIMIT_NOFILE" in out
    assert "Traceback" not in out


def test_busd_raises_its_soft_open_file_limit_to_the_hard_one(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    busd = busd_procs.spawn(
        [
            "sh",
            "-c",
            "ulimit -S -n 64 && ulimit -H -n 4096 && exec "
            f"{sys.executable} -m busd --heartbeat 0.2 -w 1 {QUIET}",
        ],
        name="busd",
    )
    busd_sink.expect("start", timeout=30)
    with control(busd_dir) as ctl:
        doc = wait_status(ctl, all_started(1))
        assert doc["master"]["fd_budget"]["limit"] == 4096
        assert exit_busd(ctl, busd) == 0


def test_removed_runtime_dir_is_repaired_within_a_heartbeat(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    runtime = busd_dir / "rt"  # the test's probe socket stays in busd_dir
    busd = start_busd(busd_procs, "--runtime-dir", str(runtime), "-w", "1", QUIET)
    busd_sink.expect("start", timeout=30)
    with control(runtime) as ctl:
        wait_status(ctl, all_started(1))
    shutil.rmtree(runtime)
    ctl_file = runtime / "ctl.sock"
    # A new connection is made on each try: it needs the file, which a live
    # connection does not.
    with control(runtime, timeout=2) as ctl:
        assert ctl.request("ping", timeout=5)["pong"] is True
    assert ctl_file.exists()
    assert (runtime / "pub.sock").exists()
    assert oct(runtime.stat().st_mode & 0o777) == "0o700"
    assert oct(ctl_file.stat().st_mode & 0o777) == "0o600"

    second = start_busd(busd_procs, "--runtime-dir", str(runtime), "-w", "1", QUIET, name="second")
    assert second.wait(30) == 1
    assert "already serves" in busd_procs.output(second)

    with control(runtime) as ctl:
        # A new worker can join the repaired master.
        assert ctl.request("scale", n="+1")["size"] == 2
        busd_sink.collect("start", 1, timeout=30)
        doc = wait_status(ctl, all_started(2), what="the added worker started")
        assert doc["pid"] == busd.pid
        assert exit_busd(ctl, busd) == 0
    out = busd_procs.output(busd)
    assert f"ipc://{ctl_file} was removed under this master" in out, out


def test_a_second_master_respects_the_lock_while_the_dir_is_gone(
    busd_master: Callable[..., Any], busd_dir: Path
) -> None:
    runtime = busd_dir / "rt"
    first = busd_master(runtime_dir=runtime, heartbeat=30.0)
    # The first master may repair its dir while it is being removed: either way
    # the second must be refused.
    shutil.rmtree(runtime, ignore_errors=True)
    # Refused by the kernel lock ("even if the file or its dir was removed"), or
    # by the lock file when the first master has already repaired its dir.
    with pytest.raises(AlreadyRunning, match=rf"pid {os.getpid()}\) already serves"):
        busd_master(runtime_dir=runtime)
    first.close()
    third = busd_master(runtime_dir=runtime)  # released on close
    with Control(default_endpoints(runtime).ctl, timeout=5) as ctl:
        assert ctl.request("ping")["pid"] == os.getpid()
    third.close()


@contextlib.contextmanager
def full_tmpfs(where: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs at ``where``, filled up; unmounted afterwards."""
    with tmpfs(where, "256k"):
        fd = os.open(where / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        finally:
            os.close(fd)
        yield where


def test_full_disk_for_the_pidfile_is_a_clear_failure(
    busd_procs: Processes, busd_dir: Path
) -> None:
    with full_tmpfs(busd_dir / "full") as full:
        busd = start_busd(busd_procs, "--pidfile", str(full / "busd.pid"), "-w", "1", QUIET)
        assert busd.wait(30) == 70
        out = busd_procs.output(busd)
        assert "No space left on device" in out, out
        assert "could not start" in out
        assert sorted(os.listdir(full)) == ["filler"], "a partial PID file was left"


def test_full_disk_for_the_logs_does_not_stop_the_master(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    with full_tmpfs(busd_dir / "full") as full:
        log_file = full / "busd.log"
        busd = busd_procs.spawn(
            [
                "sh",
                "-c",
                f"exec {sys.executable} -m busd --heartbeat 0.2 "
                f"--log-level DEBUG -w 2 {QUIET} >>{log_file} 2>&1",
            ],
            name="busd",
        )
        busd_sink.collect("start", 2, timeout=30)
        with control(busd_dir) as ctl:
            wait_status(ctl, all_started(2))
            for _ in range(3):
                acks = ctl.request("graceful", wait=True, timeout=10)["acks"]
                assert len(acks["acks"]) == 2
            assert ctl.request("scale", n="3")["size"] == 3
            wait_status(ctl, all_started(3))
            assert exit_busd(ctl, busd) == 0


def test_a_worker_dying_while_the_runtime_dir_is_gone_is_still_replaced(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    runtime = busd_dir / "rt"
    # A slow heartbeat: the pool meets the missing dir before the hub repairs it.
    busd = busd_procs.spawn(
        [
            sys.executable,
            "-m",
            "busd",
            "--heartbeat",
            "2",
            "--log-level",
            "WARNING",
            "--backoff",
            "0.01",
            "--runtime-dir",
            str(runtime),
            "-w",
            "2",
            QUIET,
        ],
        name="busd",
    )
    busd_sink.collect("start", 2, timeout=30)
    with control(runtime) as ctl:
        victim = wait_status(ctl, all_started(2))["workers"][0]["pid"]
        shutil.rmtree(runtime)
        os.kill(victim, 9)
        busd_sink.expect("start", timeout=30, where=lambda r: r.get("worker") == 0)
        doc = wait_status(
            ctl,
            lambda d: all_started(2)(d) and d["workers"][0]["pid"] != victim,
            what="worker 0 replaced",
        )
        assert doc["workers"][0]["restarts"] == 1
        assert (runtime / "workers.pids").exists(), "the pids file was not written again"
        assert exit_busd(ctl, busd) == 0
    assert "Traceback" not in busd_procs.output(busd)
