"""Pool faults a chaos round found: ghost clients, orphans of killed workers,
slots marked flapping by fork-server deaths, a full log disk nobody is told of.

Each test drives a real ``busd`` (real processes, real sockets) into the fault.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq

from busd.core.endpoints import default_endpoints
from busd.core.wire import Kind, decode, encode, pid_namespace
from busd.testing import Processes, Sink
from tests.chaos.support import (
    all_started,
    busctl,
    control,
    exit_busd,
    gone,
    start_busd,
    states,
    tmpfs,
    wait_status,
)

QUIET = "tests.chaos.targets:quiet"


def _reaped() -> int:
    child = subprocess.Popen(["true"])
    child.wait(10)
    return child.pid


@contextlib.contextmanager
def ghost(busd_dir: Path, pid: int) -> Iterator[None]:
    """A client that says HELLO for process ``pid`` (dead) and then says nothing."""
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(default_endpoints(busd_dir).ctl)
        sock.send(
            encode(
                Kind.HELLO,
                1,
                {
                    "token": os.urandom(12),
                    "pid": pid,
                    "host": os.uname().nodename,
                    "pidns": pid_namespace(),
                    "name": "ghost",
                    "role": "client",
                    "subscribe": False,
                },
            )
        )
        assert sock.poll(10_000), "no answer to the HELLO"
        reply = decode(sock.recv(), allowed=frozenset({Kind.REPLY}))
        assert reply.items[1] is True, reply
        yield
    finally:
        sock.close(0)
        ctx.term()


def test_a_hello_from_a_dead_process_leaves_at_once_and_delays_no_ack_wait(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    # The default heartbeat: a ghost would stay ~liveness x 1 s, holding every wait.
    busd = start_busd(busd_procs, "--heartbeat", "1", "-w", "2", QUIET)
    busd_sink.collect("start", 2, timeout=30)
    pid = _reaped()
    with control(busd_dir) as ctl:
        wait_status(ctl, all_started(2))
        with ghost(busd_dir, pid):
            said = time.monotonic()
            while any(c["pid"] == pid for c in ctl.request("clients")):
                assert time.monotonic() - said < 0.5, "the ghost is still a client"
                threading.Event().wait(0.01)
            began = time.monotonic()
            report = ctl.request("graceful", wait=True, timeout=10)
            took = time.monotonic() - began
        assert report["acks"]["ok"] is True, report
        assert len(report["acks"]["acks"]) == 2
        assert took < 1.0, f"graceful --wait took {took:.2f}s"
        assert exit_busd(ctl, busd) == 0


def test_a_worker_the_pool_retires_leaves_the_ack_wait_instead_of_failing_it(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    busd = start_busd(
        busd_procs, "-w", "3", "--graceful-timeout", "1", "tests.chaos.targets:slow_once_told_to_go"
    )
    busd_sink.collect("start", 3, timeout=30)
    with control(busd_dir) as ctl:
        wait_status(ctl, all_started(3))
        # The retired worker stays a client until its SIGKILL 1 s later, and
        # would take 3 s over the reload.
        assert ctl.request("scale", n="-1")["size"] == 2
        began = time.monotonic()
        report = ctl.request("graceful", wait=True, timeout=10)
        took = time.monotonic() - began
        assert report["acks"]["ok"] is True, report["acks"]["failures"]
        assert report["acks"]["lost"] == []
        assert len(report["acks"]["acks"]) == 2
        assert took < 1.0, f"graceful --wait waited {took:.2f}s for a retired worker"
        assert exit_busd(ctl, busd) == 0


def _alive(pids: list[int]) -> list[int]:
    return [
        pid
        for pid in pids
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]


@pytest.mark.parametrize("spawn", ["fork", "exec"])
def test_a_scale_down_ends_the_children_of_a_worker_it_kills(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path, spawn: str
) -> None:
    busd = start_busd(
        busd_procs,
        "-w",
        "2",
        "--graceful-timeout",
        "1",
        "--spawn",
        spawn,
        "tests.chaos.targets:keeps_children_past_sigterm",
    )
    reports = busd_sink.collect("start", 2, timeout=30)
    children = {r["worker"]: r["children"] for r in reports}
    everyone = children[0] + children[1]
    try:
        with control(busd_dir) as ctl:
            wait_status(ctl, all_started(2))
            assert _alive(everyone) == everyone
            # Worker 1 ignores SIGTERM: SIGKILLed at the graceful timeout, it
            # never ends its two sleepers (which ignore SIGTERM; one has its own session).
            assert ctl.request("scale", n="-1")["size"] == 1
            assert gone(children[1], timeout=15) == [], "a scaled-down worker left children"
            assert _alive(children[0]) == children[0], "a live worker's children were hit"
            # Worker 0's own end: busd's exit SIGKILLs it too (it ignores SIGTERM).
            exit_busd(ctl, busd, timeout=30)
        assert gone(everyone, timeout=15) == [], "children outlived busd"
    finally:
        for pid in _alive(everyone):
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


def _new_forkserver(ctl: Any, old: int | None, timeout: float = 30) -> int:
    """Wait for a fork server other than ``old`` to be up; its pid."""
    doc = wait_status(
        ctl,
        lambda d: d.get("forkserver", {}).get("pid") not in (None, old),
        timeout=timeout,
        what="a new fork server",
        show=("forkserver",),
    )
    return int(doc["forkserver"]["pid"])


def test_fork_server_deaths_during_a_scale_up_mark_no_slot_flapping(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    busd = start_busd(busd_procs, "-w", "4", QUIET)
    busd_sink.collect("start", 4, timeout=30)
    with control(busd_dir) as ctl:
        server = _new_forkserver(ctl, None)
        wait_status(ctl, all_started(4))
        scaled: list[Any] = []
        scaler = threading.Thread(
            target=lambda: scaled.append(ctl.request("scale", n="16", timeout=60))
        )
        kills = 0
        with control(busd_dir) as killer:
            scaler.start()
            for _ in range(7):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(server, 9)
                    kills += 1
                server = _new_forkserver(killer, server)
        scaler.join(60)
        assert scaled == [{"size": 16}]
        assert kills == 7
        doc = wait_status(ctl, all_started(16), timeout=60, what="16 started workers")
        assert "FLAPPING" not in states(doc)
        # A slot whose spawns failed for want of a fork server never ran a
        # process: nothing of it was restarted.
        assert [w["restarts"] for w in doc["workers"]] == [0] * 16, doc["workers"]
        workers = [c for c in ctl.request("clients") if c["worker"] is not None]
        assert sorted(c["pid"] for c in workers) == sorted(w["pid"] for w in doc["workers"]), (
            "a worker of a dead fork server runs on, unknown to the pool"
        )
        assert exit_busd(ctl, busd) == 0


def test_scale_restarts_a_flapping_slot(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    busd = start_busd(
        busd_procs,
        "-w",
        "2",
        "--backoff",
        "0.01",
        "--flap-limit",
        "2",
        "tests.chaos.targets:crash_after_first",
    )
    busd_sink.collect("start", 2, timeout=30)
    with control(busd_dir) as ctl:
        wait_status(ctl, all_started(2))
        for pid in [w["pid"] for w in ctl.request("workers")]:
            os.kill(pid, 9)
        doc = wait_status(ctl, lambda d: states(d) == ["FLAPPING"] * 2, what="both flapping")
        assert "crashes in" in doc["workers"][0]["flapping"], doc["workers"][0]
        table = busctl(busd_procs, "status")
        assert "flapping: 3 crashes, not restarted" in table.stdout, table.stdout
        # The cause is gone: `scale N` (the same N) starts them again.
        for marker in busd_dir.glob("started-*"):
            marker.unlink()
        assert ctl.request("scale", n="2")["size"] == 2
        busd_sink.collect("start", 2, timeout=30)
        doc = wait_status(ctl, all_started(2), what="both started again")
        assert "flapping" not in doc["workers"][0]
        assert exit_busd(ctl, busd) == 0


def fill(path: Path) -> None:
    """Write ``path`` until the disk is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)


def wait_output(
    procs: Processes, proc: subprocess.Popen[bytes], text: str, timeout: float = 15
) -> str:
    """Wait until ``proc`` printed ``text``; its output."""
    deadline = time.monotonic() + timeout
    while text not in (out := procs.output(proc)):
        assert time.monotonic() < deadline, f"{text!r} never printed:\n{out}"
        threading.Event().wait(0.05)  # polling a file under a deadline
    return out


def test_a_full_log_disk_is_said_once_and_so_is_its_end(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    with tmpfs(busd_dir / "logs", "1M") as logs:
        busd = start_busd(busd_procs, "--log-dir", str(logs), "-w", "1", QUIET)
        busd_sink.expect("start", timeout=30)
        with control(busd_dir) as ctl:
            doc = wait_status(ctl, all_started(1))
            assert doc["logs"]["full"] is False, doc["logs"]
            fill(logs / "filler")
            out = wait_output(busd_procs, busd, "is full")
            doc = wait_status(ctl, lambda d: d["logs"]["full"], what="logs full", show=("logs",))
            checks = doc["logs"]["checks"]
            # Three more looks at the full disk: still said once.
            wait_status(ctl, lambda d: d["logs"]["checks"] >= checks + 3, show=("logs",))
            out = busd_procs.output(busd)
            assert out.count("is full") == 1, out
            assert "WARNING" in out.splitlines()[0], out
            table = busctl(busd_procs, "status")
            assert "logs:    FULL:" in table.stdout, table.stdout
            # The pool keeps serving.
            assert ctl.request("graceful", wait=True, timeout=10)["acks"]["ok"] is True
            (logs / "filler").unlink()
            out = wait_output(busd_procs, busd, "space returned")
            wait_status(ctl, lambda d: not d["logs"]["full"], what="logs not full", show=("logs",))
            assert out.count("is full") == 1, out
            assert "logs:" not in busctl(busd_procs, "status").stdout
            assert exit_busd(ctl, busd) == 0
        log = (logs / "busd.log").read_text()
        assert "space returned" in log, log


def test_a_live_workers_daemon_lives_with_its_worker_and_ends_with_it(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    busd = start_busd(
        busd_procs, "-w", "2", "--log-level", "WARNING", "tests.chaos.targets:starts_a_daemon"
    )
    reports = busd_sink.collect("start", 2, timeout=30)
    [daemon] = next(r["daemon"] for r in reports if r["worker"] == 0)
    try:
        with control(busd_dir) as ctl:
            workers = wait_status(ctl, all_started(2))["workers"]
            owner, other = workers[0]["pid"], workers[1]["pid"]
            assert psutil.Process(daemon).ppid() != owner, "the shell between them ended"
            # Another worker's end makes the fork server look at what it adopted.
            os.kill(other, signal.SIGKILL)
            wait_status(
                ctl,
                lambda d: all_started(2)(d) and other not in [w["pid"] for w in d["workers"]],
                what="worker 1 replaced",
            )
            assert _alive([daemon]) == [daemon], "a live worker's daemon was ended"
            os.kill(owner, signal.SIGKILL)
            assert gone([daemon], timeout=15) == [], "a daemon outlived its worker"
            exit_busd(ctl, busd, timeout=30)
        log = busd_procs.output(busd)
        assert f"left running: {daemon} (sleep 600)" in log, log
    finally:
        for pid in _alive([daemon]):
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
