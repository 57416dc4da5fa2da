"""Chaos with real processes: kills, stops and resumes during reloads and scaling,
the master killed mid-reload, a stop listener that never returns, a crash loop.

Every loop is bounded and seeded (``BUSD_CHAOS_SEED``); each outcome is
checked, and no process of busd's session may be left.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq

from busd.client.control import request_frame
from busd.core.endpoints import default_endpoints
from busd.core.errors import WaitTimeout
from busd.core.wire import Kind, decode
from busd.testing import Processes, Sink
from tests.chaos.support import (
    all_started,
    busctl,
    control,
    exit_busd,
    gone,
    start_busd,
    wait_status,
)

SEED = int(os.environ.get("BUSD_CHAOS_SEED", "13"))
ROUNDS = int(os.environ.get("BUSD_CHAOS_ROUNDS", "12"))

pytestmark = pytest.mark.slow


def session(sid: int) -> list[int]:
    """Pids still running in session ``sid`` (zombies excluded)."""
    pids = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getsid(proc.pid) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                pids.append(proc.pid)
        except (ProcessLookupError, PermissionError):
            continue
    return pids


def wait_session_empty(sid: int, timeout: float) -> list[int]:
    """Wait until nothing runs in session ``sid``; what is left at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        left = session(sid)
        if not left or time.monotonic() > deadline:
            return left
        procs = []
        for pid in left:
            try:
                procs.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(procs, timeout=0.1)


class Async:
    """Commands sent without waiting; every reply collected later (one per request)."""

    def __init__(self, endpoint: str) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.ids = itertools.count(1)
        self.sent: dict[int, str] = {}
        self.replies: dict[int, tuple[bool, Any]] = {}

    def send(self, cmd: str, **args: Any) -> None:
        req_id = next(self.ids)
        self.sent[req_id] = cmd
        self.sock.send(request_frame(req_id, cmd, args))

    def collect(self, timeout: float) -> dict[int, tuple[bool, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.replies) < len(self.sent):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.sock.poll(int(remaining * 1000) + 1):
                break
            msg = decode(self.sock.recv(), allowed=frozenset({Kind.REPLY}))
            assert msg.req_id not in self.replies, f"two replies to {self.sent[msg.req_id]}"
            self.replies[msg.req_id] = (msg.items[1], msg.items[2])
        return self.replies

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def live_workers(busd_pid: int) -> list[int]:
    """The pids of busd's worker processes alive now, by their process titles."""
    found = []
    with contextlib.suppress(psutil.NoSuchProcess):
        for proc in psutil.Process(busd_pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if proc.status() != psutil.STATUS_ZOMBIE and " ".join(proc.cmdline()).startswith(
                    "busd: worker"
                ):
                    found.append(proc.pid)
    return sorted(found)


def test_random_kills_stops_and_resumes_during_reloads_and_scaling(
    busd_procs: Processes, busd_dir: Path
) -> None:
    rng = random.Random(SEED)
    busd = start_busd(
        busd_procs,
        "-w",
        "3",
        "--reload",
        "respawn",
        "--backoff",
        "0.01",
        "--graceful-timeout",
        "2",
        "--startup-timeout",
        "5",
        "--worker-timeout",
        "3",
        "--flap-limit",
        "1000",
        "busd.examples.hello:main",
    )
    commands = Async(default_endpoints(busd_dir).ctl)
    seen: set[int] = set()
    stopped: set[int] = set()
    hits: list[str] = []
    size = 3
    try:
        with control(busd_dir) as ctl:
            wait_status(ctl, all_started(3))
            for _ in range(ROUNDS):
                action = rng.choice(["graceful", "scale", "graceful", "scale"])
                if action == "scale":
                    size = rng.randint(1, 5)
                    commands.send("scale", n=str(size))
                else:
                    commands.send("graceful")
                # While that runs: hit workers at random.  The victims are the
                # worker processes alive now (by their titles), not the status
                # board, which a queue of commands may leave up to 250 ms behind.
                # Restarts run on the command thread, between and during its
                # commands: wait (bounded, by round trips) until one is alive.
                pids = live_workers(busd.pid)
                alive_by = time.monotonic() + 10
                while not pids and time.monotonic() < alive_by:
                    assert ctl.request("ping", timeout=10)["pong"] is True
                    pids = live_workers(busd.pid)
                seen.update(pids)
                for pid in rng.sample(pids, k=min(len(pids), rng.randint(1, 2))):
                    sig = rng.choice([signal.SIGKILL, signal.SIGSTOP, signal.SIGCONT])
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        continue
                    hits.append(sig.name)
                    if sig == signal.SIGSTOP:
                        stopped.add(pid)
                    else:
                        stopped.discard(pid)
                if rng.random() < 0.3:
                    for pid in list(stopped):  # resume some while commands run
                        with_pid_gone_ok(pid, signal.SIGCONT)
                        stopped.discard(pid)
                assert ctl.request("ping", timeout=10)["pong"] is True
            for pid in stopped:
                with_pid_gone_ok(pid, signal.SIGCONT)
            replies = commands.collect(timeout=90)
            print(f"chaos seed {SEED}: {len(commands.sent)} commands, hits {hits}")
            assert len(hits) >= ROUNDS // 2, "the chaos hit too few workers"
            assert len(replies) == len(commands.sent), "a command got no reply"
            # A respawn may fail (a new worker stopped past the startup timeout):
            # then it says so, and the pool keeps what it had.
            for req_id, (ok, payload) in replies.items():
                if not ok:
                    assert commands.sent[req_id] == "graceful", payload
                    assert "respawn" in payload["message"], payload
            doc = wait_status(
                ctl, all_started(size), timeout=60, what=f"{size} started workers after the chaos"
            )
            seen.update(w["pid"] for w in doc["workers"])
            assert busd.poll() is None
            assert exit_busd(ctl, busd) == 0
    finally:
        commands.close()
    assert gone(sorted(seen), 10) == []
    assert wait_session_empty(busd.pid, 10) == []


def with_pid_gone_ok(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return


@pytest.mark.parametrize("during", ["graceful", "scale"])
def test_master_sigkill_during_a_reload_or_scale_leaves_no_process(
    busd_procs: Processes, busd_dir: Path, during: str
) -> None:
    # New workers take 2 s to start (slow_start): the change stays under way
    # long enough to be seen, however fast they are spawned.
    busd = start_busd(
        busd_procs, "-w", "3", "--reload", "respawn", "tests.chaos.targets:slow_start"
    )
    commands = Async(default_endpoints(busd_dir).ctl)
    try:
        with control(busd_dir) as ctl:
            wait_status(ctl, all_started(3))
            if during == "graceful":
                commands.send("graceful")
            else:
                commands.send("scale", n="8")
            # Once the pool has started spawning, the master dies.
            wait_status(
                ctl,
                lambda d: len(session(busd.pid)) > 5 or len(d["workers"]) > 3,
                what="the change under way",
            )
            busd.kill()
            assert busd.wait(10) == -signal.SIGKILL
    finally:
        commands.close()
    # Old and new workers alike, and the fork server: nothing of the session.
    assert wait_session_empty(busd.pid, 10) == []


def test_a_stop_listener_that_never_returns_is_reported_and_exit_is_bounded(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    busd = start_busd(
        busd_procs, "-w", "2", "--graceful-timeout", "1", "tests.chaos.targets:stop_hangs"
    )
    busd_sink.collect("start", 2, timeout=30)
    with control(busd_dir) as ctl:
        pids = [w["pid"] for w in wait_status(ctl, all_started(2))["workers"]]
        began = time.monotonic()
        with pytest.raises(WaitTimeout, match=r"no ack within 1\.0s"):
            ctl.call("stop", {"wait": True, "timeout": 1.0}, 10)
        assert time.monotonic() - began < 5
        busd_sink.collect("stopping", 2)
        assert ctl.request("status")["state"] == "STOPPED"
        assert ctl.request("ping")["pong"] is True
        began = time.monotonic()
        with_timeout = busctl(busd_procs, "exit")
        assert with_timeout.returncode == 0, with_timeout.stderr
    assert busd.wait(15) == 0
    assert time.monotonic() - began < 1 + 5, "exit waited past the graceful timeout"
    assert gone(pids, 5) == []


def test_a_target_that_crashes_at_every_start_keeps_the_master_idle_and_answering(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    # Default backoff (0.1 s doubling to 10 s); the slots never give up.
    busd = start_busd(
        busd_procs, "-w", "4", "--flap-limit", "100000", "tests.chaos.targets:crash_after_first"
    )
    busd_sink.collect("start", 4, timeout=30)
    with control(busd_dir) as ctl:
        pids = [w["pid"] for w in wait_status(ctl, all_started(4))["workers"]]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        wait_status(
            ctl,
            lambda d: sum(w["restarts"] for w in d["workers"]) >= 12,
            what="a crash loop under way",
        )
        master = psutil.Process(busd.pid)
        master.cpu_percent(None)
        began = time.monotonic()
        rtts = []
        while time.monotonic() - began < 3:
            t = time.perf_counter()
            ctl.request("status", timeout=5)
            rtts.append(time.perf_counter() - t)
            threading.Event().wait(0.1)
        cpu = master.cpu_percent(None)
        assert cpu < 25, f"the master used {cpu}% of a core while its workers crash-loop"
        rtts.sort()
        assert rtts[int(len(rtts) * 0.9)] < 0.1, f"status round trips: {rtts}"
        done = busctl(busd_procs, "status")
        assert done.returncode == 0, done.stderr
        assert exit_busd(ctl, busd) == 0


def test_the_master_stopped_and_resumed_during_a_reload_recovers_its_pool(
    busd_procs: Processes, busd_dir: Path
) -> None:
    # Workers give a silent master 1 s (BUSD_MASTER_TIMEOUT), then leave.
    busd = start_busd(
        busd_procs,
        "-w",
        "3",
        "--reload",
        "respawn",
        "--backoff",
        "0.01",
        "busd.examples.hello:main",
        env={"BUSD_MASTER_TIMEOUT": "1"},
    )
    commands = Async(default_endpoints(busd_dir).ctl)
    master = psutil.Process(busd.pid)
    try:
        with control(busd_dir) as ctl:
            pids = [w["pid"] for w in wait_status(ctl, all_started(3))["workers"]]
            commands.send("graceful")
            master.suspend()
            try:
                assert gone(pids, 15) == [], "workers outlived a silent master"
            finally:
                master.resume()
            replies = commands.collect(timeout=60)
            assert len(replies) == 1, "the reload got no reply"
            doc = wait_status(ctl, all_started(3), timeout=60, what="the pool refilled")
            assert not {w["pid"] for w in doc["workers"]} & set(pids)
            assert exit_busd(ctl, busd) == 0
    finally:
        commands.close()
    assert wait_session_empty(busd.pid, 10) == []
