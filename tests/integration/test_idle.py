"""An idle master sleeps: only its heartbeat (and the pongs it asks for) wakes it.

A busd with a few workers is left alone.  Each master thread's voluntary
context switches (``/proc/PID/task/TID/status``: the times it went to
sleep, so the times it woke up) are read before and after a window of
``WINDOW`` heartbeats, counted on a SUB socket of the test's own: the
window is measured in heartbeats, never slept.  The threads are told apart
by the names busd gives them (``busd-hub``, ``busd-commands``, ...; the
main thread is the process's own).

The bounds are per heartbeat and generous, for a loaded machine: a thread
that polls on a timer (0.1 s, 1 s, 5 s...) exceeds them, one that sleeps
until something is due does not.  The window is longer than the longest
period a thread of the master used to wake up at (5 s).

With ``--metrics`` on, the metrics threads (the HTTP accept and the one that
gathers a scrape) sleep too: no scrape, no wake-up.

Sleeping must cost no vigilance: a worker that hangs is still killed when
its ``--worker-timeout`` has passed, though the pool no longer looks at its
workers on a timer of its own.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import psutil
import pytest
import zmq

from busd.core.wire import Kind, decode
from busd.testing import BusdPool
from tests.integration.test_metrics import free_port

TARGET = "tests.integration.targets:main"
#: Heartbeats (1 s each by default) in the measured window.
WINDOW = 6
#: The hub: one wake-up per heartbeat, one per pong slot to read the pongs;
#: twice the heartbeats leaves room for a straggling pong or a late read.
HUB_PER_BEAT = 2.0
#: libzmq's I/O thread writes each heartbeat and reads each pong: a few per beat.
ZMQ_PER_BEAT = 6.0
#: Threads with nothing due while idle: they must not wake at all.
ASLEEP = ("main", "busd-commands", "busd-pool", "busd-forkserver")


def switches(pid: int) -> dict[int, tuple[str, int]]:
    """tid -> (thread name, voluntary context switches) of each thread of ``pid``."""
    found = {}
    for task in (f"/proc/{pid}/task/{tid}" for tid in os.listdir(f"/proc/{pid}/task")):
        try:
            with open(f"{task}/comm") as comm, open(f"{task}/status") as status:
                name, text = comm.read().strip(), status.read()
        except OSError:  # the thread ended meanwhile
            continue
        tid = int(task.rsplit("/", 1)[1])
        count = re.search(r"^voluntary_ctxt_switches:\s*(\d+)", text, re.M)
        assert count is not None, text
        found[tid] = ("main" if tid == pid else name, int(count[1]))
    return found


def wait_heartbeats(sub: zmq.Socket[Any], count: int, timeout: float = 5.0) -> None:
    """Read the master's broadcast until ``count`` heartbeats went by."""
    seen = 0
    while seen < count:
        assert sub.poll(int(timeout * 1000)), f"no heartbeat within {timeout}s"
        if decode(sub.recv()).kind is Kind.HEARTBEAT:
            seen += 1


def idle_wakeups(pool: BusdPool) -> dict[str, int]:
    """Each master thread's wake-ups over ``WINDOW`` heartbeats, by thread name."""
    ctx: zmq.Context[Any] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    try:
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(pool.endpoints.pub)
        wait_heartbeats(sub, 2)  # settled: the workers' joins and first pongs are read
        before = switches(pool.proc.pid)
        wait_heartbeats(sub, WINDOW)
        after = switches(pool.proc.pid)
    finally:
        sub.close(linger=0)
        ctx.term()
    woke: dict[str, int] = {}
    for tid, (name, count) in after.items():
        if tid in before:
            woke[name] = woke.get(name, 0) + count - before[tid][1]
    return woke


#: The metrics threads, asleep too while nobody scrapes.
METRICS = ("busd-metrics", "busd-metrics-http")


@pytest.mark.parametrize("metrics", [False, True], ids=["plain", "metrics"])
def test_an_idle_master_wakes_only_for_its_heartbeat(busd_pool: Any, metrics: bool) -> None:
    extra = ("--metrics", f"127.0.0.1:{free_port()}") if metrics else ()
    pool: BusdPool = busd_pool(TARGET, *extra, workers=3)
    woke = idle_wakeups(pool)
    expected = (*ASLEEP, "busd-hub", *(METRICS if metrics else ()))
    named = {name[:15] for name in expected}  # the kernel keeps 15 bytes of a thread's name
    assert named <= set(woke), f"unnamed threads: {woke}"
    too_many = {name: count for name, count in woke.items() if count > _bound(name)}
    assert not too_many, (
        f"woke up more than allowed over {WINDOW} heartbeats: {too_many} (all: {woke})"
    )


def _bound(name: str) -> float:
    if name == "busd-hub":
        return HUB_PER_BEAT * WINDOW
    if name.startswith("ZMQbg/"):
        return ZMQ_PER_BEAT * WINDOW
    return 0


def test_a_hung_worker_is_killed_after_its_timeout_though_the_pool_sleeps(busd_pool: Any) -> None:
    # --worker-timeout 4 at heartbeat 0.2: pongs every 1 s, and the hub drops a silent
    # client after 3 of them (3.2 s), before the timeout: the pool sets no deadline of
    # its own for a worker whose client the hub holds, and learns of the loss instead.
    worker_timeout, pong_interval = 4.0, 1.0
    pool: BusdPool = busd_pool(
        TARGET, "--worker-timeout", "4", "--heartbeat", "0.2", "--backoff", "0.05"
    )
    victim = psutil.Process(pool.pids[0])
    victim.suspend()
    stopped = time.monotonic()
    try:
        _, alive = psutil.wait_procs([victim], timeout=15)
    finally:
        if victim.is_running():
            victim.resume()
    elapsed = time.monotonic() - stopped
    assert not alive, "busd never killed the stopped worker"
    # Its last word came at most one pong interval before it stopped.
    assert worker_timeout - pong_interval - 0.1 <= elapsed < worker_timeout + 2.0, elapsed
    line = f"worker 0 (pid {victim.pid}) did not answer within --worker-timeout 4s: killing it"
    pool.wait_for(lambda d: d["workers"][0]["pid"] not in (None, victim.pid))
    assert line in pool.log.text
