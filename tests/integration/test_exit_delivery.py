"""An exit loses nothing: every live client gets everything, then EXITING, then the end.

A master that exits sends a last EVENT ``closing`` and serves repairs until
every live client has it (or its ``shutdown_timeout`` passed, and then it
says which client it closed without); a client that got it knows the
master closed on purpose and never waits ``master_timeout`` for it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import zmq

from busd.client.bus import ClientBus
from busd.client.link.complaints import Complaints
from busd.core.endpoints import Endpoints
from busd.core.wire import Kind, Message, decode, encode
from busd.master.bus import MasterBus
from busd.testing import Processes, Sink
from busd.testing.pool import BusdPool
from busd.testing.probe import Probe

#: The reproduction's size: a burst far past the PUB high-water mark (100k) of a stopped client.
TOTAL = 300_000

BEHIND = """
    from busd import client
    from busd.testing.probe import Probe

    probe = Probe()
    bus = client.connect(mirror=False, timeout=20)
    seen = []
    after = []

    bus.subscribe("tick", seen.append)
    bus.subscribe("last", lambda i: after.append([i, len(seen)]))

    @bus.subscribe("exit")
    def exiting():
        probe.report("exiting", n=len(seen), in_order=seen == list(range(len(seen))),
                     last=after, link=bus.statistics()["link"])

    probe.report("joined")
    bus.block()
    probe.close()
"""


def stopped(proc: subprocess.Popen[bytes]) -> None:
    """SIGSTOP ``proc``; the kernel stops it before it runs again."""
    os.kill(proc.pid, signal.SIGSTOP)


def test_a_client_behind_at_exit_gets_every_message_then_exiting_and_ends_soon(
    busd_master: Any, busd_procs: Processes, busd_sink: Sink
) -> None:
    # Queues of 16 frames: a burst travels in BATCH frames of up to 1,000 messages.
    master: MasterBus = busd_master(pub_hwm=16)
    master.start()
    proc = busd_procs.python(BEHIND, name="behind")  # master_timeout left at 30 s
    busd_sink.expect("joined", timeout=30)
    stopped(proc)  # it cannot read while the burst goes out: its queues overflow
    try:
        for i in range(TOTAL):
            master.publish("tick", i)
        master.publish("last", TOTAL)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    began = time.monotonic()
    master.exit()  # at once: the client is far behind
    try:
        assert proc.wait(10) == 0
    except subprocess.TimeoutExpired:
        pytest.fail(
            "the client did not end within 10 s of the exit:\n" + busd_procs.output(proc)[-2000:]
        )
    took = time.monotonic() - began
    report = busd_sink.expect("exiting", timeout=5)
    assert report["n"] == TOTAL, {**report, "link": None}
    assert report["in_order"], {**report, "link": None}
    assert report["last"] == [[TOTAL, TOTAL]], report["last"]  # once, after every tick
    link = report["link"]
    assert link["repaired"] > 0, link  # it really was behind: the window repaired it
    assert link.get("missed", 0) == 0, link
    assert link.get("master_lost", 0) == 0, link
    assert master.hub.stats["closed_behind"] == 0
    assert "master lost" not in busd_procs.output(proc).lower()
    assert took < 10, f"the client took {took:.1f}s to end after the exit"


def test_a_client_stopped_for_good_holds_the_exit_only_for_the_shutdown_timeout(
    busd_master: Any, busd_procs: Processes, busd_sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    # Liveness (5 s pongs x 3) outlasts the bound: the bound is what ends the wait.
    master: MasterBus = busd_master(heartbeat=1.0, shutdown_timeout=2.0)
    master.start()
    proc = busd_procs.python(BEHIND, name="frozen")
    busd_sink.expect("joined", timeout=30)
    stopped(proc)
    for i in range(1000):
        master.publish("tick", i)
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="busd.master.hub"):
        master.exit()
    took = time.monotonic() - began
    assert took < 2.0 + 3.0, f"exit() took {took:.1f}s with a 2 s shutdown timeout"
    lines = [r.getMessage() for r in caplog.records if r.name == "busd.master.hub"]
    about = [line for line in lines if f"pid {proc.pid}" in line and "behind" in line]
    assert about, lines
    assert master.hub.stats["closed_behind"] == 1
    assert proc.poll() is None  # still stopped: the master did not wait for it to die


SLOW_EXIT = """
    import os, select, sys
    from busd import client
    from busd.testing.probe import Probe

    master_pid = int(sys.argv[1])
    probe = Probe()
    bus = client.connect(timeout=20)  # master_timeout left at 30 s

    @bus.subscribe("exit")
    def wait_for_the_master_to_end():
        # Exit listeners that outlast the master's process.
        fd = os.pidfd_open(master_pid)
        ended = bool(select.select([fd], [], [], 20)[0])
        os.close(fd)
        probe.report("exiting", ended=ended, link=bus.statistics()["link"])

    probe.report("joined")
    bus.block()
    probe.close()
"""


def busctl(pool: BusdPool, *argv: str) -> subprocess.CompletedProcess[str]:
    """The real busctl command against ``pool``, run to its end."""
    return subprocess.run(
        busctl_argv(pool, *argv), capture_output=True, text=True, timeout=30, check=False
    )


def busctl_argv(pool: BusdPool, *argv: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "busd.client.ctl.busctl",
        "--runtime-dir",
        str(pool.runtime_dir),
        *argv,
    ]


def test_a_client_of_a_master_that_closed_cleanly_does_not_call_it_lost(
    busd_pool: Any, busd_procs: Processes, busd_sink: Sink
) -> None:
    pool: BusdPool = busd_pool(None)  # a busd master alone; the client attaches
    env = {"BUSD_RUNTIME_DIR": str(pool.runtime_dir)}
    proc = busd_procs.python(SLOW_EXIT, str(pool.proc.pid), name="attached", env=env)
    busd_sink.expect("joined", timeout=30)
    done = busctl(pool, "exit")
    assert done.returncode == 0, done.stderr
    assert pool.proc.wait(30) == 0
    assert proc.wait(20) == 0
    report = busd_sink.expect("exiting", timeout=5)
    assert report["ended"], "the master outlived the client's exit listener"
    out = busd_procs.output(proc)
    assert "master lost" not in out.lower(), out[-2000:]
    assert report["link"].get("master_lost", 0) == 0, report["link"]


# -- the busd command: workers count a burst the master sends just before exiting ----


def counting(bus: ClientBus) -> None:
    """A worker target: count ``tick`` messages; report them when the bus exits."""
    probe = Probe()
    seen: list[int] = []
    bus.subscribe("tick", seen.append)

    def exiting() -> None:
        probe.report(
            "counted",
            n=len(seen),
            in_order=seen == list(range(len(seen))),
            link=bus.statistics()["link"],
        )

    bus.subscribe("exit", exiting)
    bus.subscribe("exit", probe.close, priority=100)


def bursting(master: MasterBus) -> None:
    """A master plugin: a ``burst`` broadcast of N makes the master publish N ticks at once."""
    master.subscribe("burst", lambda n: master.publish_many("tick", ((i,) for i in range(n))))


def test_busd_workers_count_every_message_of_a_burst_sent_right_before_busctl_exit(
    busd_pool: Any, busd_procs: Processes, busd_sink: Sink
) -> None:
    total = 200_000
    here = Path(__file__).stem
    pool: BusdPool = busd_pool(
        counting, "--plugin", f"tests.integration.{here}:bursting", workers=2
    )
    workers = pool.pids
    for pid in workers:  # they fall behind: the burst and the exit wait in their queues
        os.kill(pid, signal.SIGSTOP)
    try:
        pool.broadcast("burst", total)
        busctl_exit = busd_procs.spawn(busctl_argv(pool, "exit"), name="busctl")
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    assert busctl_exit.wait(30) == 0
    assert pool.proc.wait(60) == 0
    got = busd_sink.collect("counted", 2, timeout=10)
    assert sorted(r["pid"] for r in got) == sorted(workers)
    for report in got:
        link = report["link"]
        assert report["n"] == total, link
        assert report["in_order"], link
        assert link.get("missed", 0) == 0, link
        assert link.get("master_lost", 0) == 0, link
    # (In BATCH frames the burst fits their queues; a client whose queue overflows and
    # repairs from the window at exit: the first test of this module.)


# -- quieter client logs: complaints once per interval, a refused snapshot in one line ----


def test_complaints_are_logged_once_per_interval_with_the_count_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    complaints = Complaints(
        logging.getLogger("busd.client.link.thread"), 10.0, clock=lambda: now[0]
    )
    with caplog.at_level(logging.WARNING, logger="busd.client.link.thread"):
        for i in range(50):
            complaints.warn("bad_reply", "bad reply from master: %s", i)
        complaints.warn("bad_message", "bad message from master: %s", "x")
        now[0] += 10.0
        complaints.warn("bad_reply", "bad reply from master: %s", "late")
        complaints.warn("bad_reply", "bad reply from master: %s", "held")
    assert [r.getMessage() for r in caplog.records] == [
        "bad reply from master: 0",
        "bad message from master: x",
        "bad reply from master: late (and 49 more in the last 10s)",
    ]


class RawMaster:
    """A master's two sockets, driven by the test: it answers what the test tells it to."""

    def __init__(self, directory: Path) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.pub = self.ctx.socket(zmq.XPUB)
        self.ctl = self.ctx.socket(zmq.ROUTER)
        self.endpoints = Endpoints(
            pub=f"ipc://{directory}/raw-pub", ctl=f"ipc://{directory}/raw-ctl"
        )
        self.pub.bind(self.endpoints.pub)
        self.ctl.bind(self.endpoints.ctl)

    def next_request(self) -> tuple[bytes, Message]:
        """The client's next HELLO or REQUEST (pongs are passed over)."""
        while True:
            assert self.ctl.poll(10_000), "the client sent nothing for 10 s"
            identity, frame = self.ctl.recv_multipart()
            msg = decode(frame)
            if msg.kind in (Kind.HELLO, Kind.REQUEST):
                return identity, msg

    def reply(self, identity: bytes, req_id: int, ok: bool, result: Any) -> None:
        self.ctl.send_multipart([identity, encode(Kind.REPLY, req_id, ok, result)])

    def close(self) -> None:
        self.pub.close(0)
        self.ctl.close(0)
        self.ctx.term()


def test_a_client_logs_a_flood_of_bad_replies_and_a_refused_snapshot_in_a_few_lines(
    busd_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    master = RawMaster(busd_dir)
    bus = ClientBus(master.endpoints, master_timeout=30.0)
    try:
        with caplog.at_level(logging.INFO, logger="busd.client.link.thread"):
            with ThreadPoolExecutor(1) as pool:
                joined = pool.submit(bus.connect, mirror=False)
                identity, hello = master.next_request()
                master.reply(
                    identity,
                    hello.req_id,
                    True,
                    {
                        "client_id": 1,
                        "epoch": 7,
                        "seq": 0,
                        "state": "STARTED",
                        "heartbeat": 1.0,
                        "liveness": 3,
                        "pong_interval": 5.0,
                        "pub": [master.endpoints.pub],
                    },
                )
                joined.result(10)
            for _ in range(200):
                master.ctl.send_multipart([identity, b"\xc1"])
            # A heartbeat says 3 messages went out; the window has none of them.
            master.pub.send(encode(Kind.HEARTBEAT, 7, 3, "STARTED", 1.0))
            identity, replay = master.next_request()
            assert replay.body["cmd"] == "replay", replay
            master.reply(
                identity,
                replay.req_id,
                True,
                {"epoch": 7, "first": 4, "frames": [], "lost": 3, "more": False},
            )
            identity, snapshot = master.next_request()
            assert snapshot.body["cmd"] == "snapshot", snapshot
            master.reply(
                identity,
                snapshot.req_id,
                False,
                {"code": "internal", "message": "no snapshot today", "details": None},
            )
            ping = bus.link.request("ping")
            identity, asked = master.next_request()
            master.reply(identity, asked.req_id, True, {"pong": True})
            assert ping.result(10) == {"pong": True}  # so every frame before it was read
        assert bus.link.stats["bad_replies"] == 200
        records = [r for r in caplog.records if r.name == "busd.client.link.thread"]
        assert not [r for r in records if r.exc_info], "a traceback was logged"
        bad = [r.getMessage() for r in records if "bad reply" in r.getMessage()]
        assert len(bad) == 1, bad
        refused = [r.getMessage() for r in records if "snapshot" in r.getMessage()]
        assert refused == ["the master would not give a snapshot: no snapshot today"], refused
    finally:
        bus.leave("test over", master_alive=False)
        master.close()
