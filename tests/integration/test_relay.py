"""The relay with real processes: a master and ClientBus processes over ipc."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zmq

from busd.core.control import Control
from busd.core.endpoints import default_endpoints
from busd.core.wire import BROADCAST_KINDS, Kind, decode
from busd.testing import Processes, Sink
from busd.testing.events import Events

# A worker: reports every lifecycle step and relayed message to the test.
WORKER = """
    import os, sys
    from busd import client
    from busd.testing.probe import Probe

    probe = Probe()
    ident = int(sys.argv[1])
    bus = client.connect(mirror=False, timeout=10)
    for channel in ("start", "graceful", "stop", "exit"):
        bus.subscribe(channel, lambda channel=channel: probe.report(channel, ident=ident))

    @bus.subscribe("custom")
    def custom(*args, **kwargs):
        probe.report("custom", ident=ident, args=list(args), kwargs=kwargs)

    @bus.subscribe("ask-graceful")
    def ask_graceful(who):
        if who == ident:
            bus.graceful()

    @bus.subscribe("report-stats")
    def report_stats():
        probe.report("stats", ident=ident, link=bus.statistics()["link"],
                     state=bus.state.name)

    probe.report("joined", ident=ident)
    bus.block()
    probe.report("ended", ident=ident)
    probe.close()
"""


def start_workers(
    procs: Processes, count: int, env: dict[str, str] | None = None, first: int = 0
) -> list[Any]:
    return [
        procs.python(WORKER, str(i), name=f"worker{i}", env=env)
        for i in range(first, first + count)
    ]


def wait_exit(procs: list[Any], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    return [p.wait(max(0.1, deadline - time.monotonic())) for p in procs]


def by_ident(reports: list[dict[str, Any]]) -> set[int]:
    return {r["ident"] for r in reports}


def test_eight_clients_follow_every_lifecycle_step_in_order(
    busd_master: Any, busd_procs: Processes, busd_sink: Sink
) -> None:
    master = busd_master()
    master_graceful = threading.Event()
    master.subscribe("graceful", master_graceful.set)
    workers = start_workers(busd_procs, 8)
    assert by_ident(busd_sink.collect("joined", 8, timeout=20)) == set(range(8))

    start = master.start(wait=True, timeout=10)
    assert start is not None
    assert start.ok
    assert len(start.acks) == 8
    assert by_ident(busd_sink.collect("start", 8)) == set(range(8))

    report = master.graceful(wait=True, timeout=10)
    assert report is not None
    assert report.ok
    assert {a.client for a in report.acks} == {c.id for c in master.clients()}
    assert by_ident(busd_sink.collect("graceful", 8)) == set(range(8))

    master.publish("custom", 1, "two", three=3)
    customs = busd_sink.collect("custom", 8)
    assert all(r["args"] == [1, "two"] and r["kwargs"] == {"three": 3} for r in customs)

    # A worker asks for graceful: it goes to the master, which relays to all.
    master_graceful.clear()
    master.publish("ask-graceful", 5)
    assert by_ident(busd_sink.collect("graceful", 8)) == set(range(8))
    assert master_graceful.wait(5), "the master's own graceful listener did not run"

    stop = master.stop(wait=True, timeout=10)
    assert stop is not None
    assert stop.ok
    assert by_ident(busd_sink.collect("stop", 8)) == set(range(8))
    assert all(p.poll() is None for p in workers), "stop must leave the workers alive"

    exit_report = master.exit(wait=True, timeout=10)
    assert exit_report is not None
    assert exit_report.ok
    assert by_ident(busd_sink.collect("exit", 8)) == set(range(8))
    assert wait_exit(workers, 10) == [0] * 8
    busd_sink.collect("ended", 8)

    for ident in range(8):
        events = [r["event"] for r in busd_sink.seen if r.get("ident") == ident]
        assert events == [
            "joined",
            "start",
            "graceful",
            "custom",
            "graceful",
            "stop",
            "exit",
            "ended",
        ], (ident, events)


def test_late_joiner_mirrors_current_state_at_once(
    busd_master: Any, busd_procs: Processes, busd_sink: Sink
) -> None:
    master = busd_master()
    master.start()
    start_workers(busd_procs, 1)
    busd_sink.expect("joined")
    busd_sink.expect("start", timeout=5)
    master.stop()
    busd_sink.expect("stop", timeout=5)

    # A client joining a STOPPED master runs no start listener.
    late = start_workers(busd_procs, 1, first=1)
    busd_sink.expect("joined", where=lambda r: r["ident"] == 1)
    master.publish("report-stats")
    stats = busd_sink.collect("stats", 2)
    assert {r["state"] for r in stats} == {"STOPPED"}
    assert not [r for r in busd_sink.seen if r["event"] == "start" and r["ident"] == 1]
    master.exit()
    assert wait_exit(late, 10) == [0]


def test_client_that_missed_messages_repairs_them_from_the_window(
    busd_master: Any, busd_procs: Processes, busd_sink: Sink
) -> None:
    # A small queue per subscriber (a burst travels in BATCH frames of up to 1,000
    # messages), and a client that cannot read for a while.
    master = busd_master(pub_hwm=2, heartbeat=1.0)
    master.start()
    worker = start_workers(busd_procs, 1)[0]
    busd_sink.expect("start")
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        for i in range(20_000):
            master.publish("filler", i)
        master.stop()
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    # The STOPPING message was dropped on PUB with the rest; the repair brings it.
    busd_sink.expect("stop", timeout=10)
    master.publish("report-stats")
    stats = busd_sink.expect("stats", timeout=10)
    link = stats["link"]
    assert link["gaps"] >= 1, link
    assert link["repaired"] > 0, link
    assert link.get("missed", 0) == 0, link
    assert stats["state"] == "STOPPED"
    master.exit()
    assert wait_exit([worker], 10) == [0]


COUNTER = """
    from busd import client
    from busd.testing.probe import Probe

    probe = Probe()
    bus = client.connect(mirror=False, timeout=10)
    seen = []

    @bus.subscribe("tick")
    def tick(i):
        seen.append(i)

    @bus.subscribe("done")
    def done(total):
        link = bus.statistics()["link"]
        in_order = all(b > a for a, b in zip(seen, seen[1:]))
        probe.report("count", n=len(seen), in_order=in_order, missed=link.get("missed", 0),
                     gaps=link.get("gaps", 0), last=seen[-1] if seen else None)

    probe.report("joined")
    bus.block()
    probe.close()
"""


def test_hundred_thousand_messages_none_lost_silently(
    busd_master: Any, busd_procs: Processes, busd_sink: Sink
) -> None:
    total = 100_000
    master = busd_master(heartbeat=0.5)
    workers = [busd_procs.python(COUNTER, name=f"counter{i}") for i in range(4)]
    busd_sink.collect("joined", 4, timeout=20)
    for i in range(total):
        master.publish("tick", i)
    # "done" may itself be lost (and reported as a gap): ask until all answered.
    counts: dict[int, dict[str, Any]] = {}
    for _ in range(20):
        master.publish("done", total)
        deadline = time.monotonic() + 10
        while len(counts) < 4:
            report = busd_sink.get("count", timeout=deadline - time.monotonic())
            if report is None:
                break
            counts.setdefault(report["pid"], report)
        if len(counts) == 4:
            break
    assert len(counts) == 4, counts
    for report in counts.values():
        assert report["in_order"], report
        complete = report["n"] == total
        # Every tick not received is accounted for by a reported gap.
        reported = report["gaps"] > 0 and report["missed"] >= total - report["n"]
        assert complete or reported, report
    master.exit()
    assert wait_exit(workers, 10) == [0] * 4


MASTER = """
    import busd
    master = busd.MasterBus(heartbeat=float(__import__("sys").argv[1]))
    master.start()
    master.block()
"""


def test_clients_exit_when_master_is_killed(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    heartbeat, liveness = 0.3, 3
    master = busd_procs.python(MASTER, str(heartbeat), name="master")
    workers = start_workers(busd_procs, 3)
    busd_sink.collect("start", 3, timeout=20)
    master.kill()
    killed = time.monotonic()
    exits = busd_sink.collect("exit", 3, timeout=10)
    elapsed = time.monotonic() - killed
    assert by_ident(exits) == {0, 1, 2}
    assert elapsed < 2 * heartbeat * liveness, f"clients took {elapsed:.2f}s to exit"
    assert wait_exit(workers, 10) == [0] * 3


@contextlib.contextmanager
def raw_sub(busd_dir: Path) -> Iterator[zmq.Socket[Any]]:
    """A bare SUB on the master's PUB, subscribed to everything, once a heartbeat came."""
    ctx: zmq.Context[Any] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    try:
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(default_endpoints(busd_dir).pub)
        assert sub.poll(5000), "no heartbeat: not subscribed"
        yield sub
    finally:
        sub.close(linger=0)
        ctx.term()


def test_slow_stop_listener_does_not_delay_heartbeats(busd_master: Any, busd_dir: Path) -> None:
    interval = 0.1
    master = busd_master(heartbeat=interval)
    release = threading.Event()
    in_stop = threading.Event()

    def slow_stop() -> None:
        in_stop.set()
        release.wait(1.5)

    master.subscribe("stop", slow_stop)
    master.start()
    with raw_sub(busd_dir) as sub:
        try:
            stopper = threading.Thread(target=master.stop)
            stopper.start()
            assert in_stop.wait(5)
            beats = []
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                if sub.poll(int(3 * interval * 1000)):
                    msg = decode(sub.recv(), allowed=BROADCAST_KINDS)
                    if msg.kind is Kind.HEARTBEAT:
                        beats.append(time.monotonic())
                else:
                    break
            assert master.state.name == "STOPPING", "the stop listener should still be running"
            release.set()
            stopper.join(5)
            gaps = [b - a for a, b in itertools.pairwise(beats)]
            assert len(beats) >= 5, f"only {len(beats)} heartbeats during a 1 s slow stop"
            assert max(gaps) < 3 * interval, gaps
        finally:
            release.set()


FAILING_STOP = """
    from busd import client
    from busd.testing.probe import Probe

    probe = Probe()
    bus = client.connect(mirror=False, timeout=10)

    @bus.subscribe("stop")
    def stop():
        raise RuntimeError("cannot stop cleanly")

    probe.report("joined")
    bus.block()
    probe.close()
"""


def test_exit_report_keeps_clients_that_left_during_slow_master_listeners(
    busd_master: Any, busd_procs: Processes, busd_sink: Sink
) -> None:
    master = busd_master()
    master.subscribe("exit", lambda: threading.Event().wait(1.0))
    worker = busd_procs.python(FAILING_STOP, name="failing")
    busd_sink.expect("joined")
    master.start()
    report = master.exit(wait=True, timeout=10)
    assert report is not None
    assert not report.ok
    assert any("cannot stop cleanly" in line for line in report.failures()), report
    assert wait_exit([worker], 10) == [0]


def test_a_burst_travels_in_batch_frames_and_a_lone_message_alone(
    busd_master: Any, busd_dir: Path
) -> None:
    master = busd_master(heartbeat=0.1)
    master.start()
    with raw_sub(busd_dir) as sub:

        def frames_until(channel: str) -> list[Any]:
            """Every frame but heartbeats, decoded, up to the PUBLISH of ``channel``."""
            out: list[Any] = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and sub.poll(2000):
                msg = decode(sub.recv(), allowed=BROADCAST_KINDS)
                if msg.kind is Kind.HEARTBEAT:
                    continue
                out.append(msg)
                last = msg.items[2][-1] if msg.kind is Kind.BATCH else [0, 0, *msg.items]
                if last[4] == channel:
                    return out
            raise AssertionError(f"no {channel!r} within 20 s: {len(out)} frames")

        # A lone publish goes alone, as a PUBLISH of its own.
        master.publish("lone", 1)
        (lone,) = frames_until("lone")
        assert lone.kind is Kind.PUBLISH
        first = lone.seq + 1

        # publish_many hands the hub 5,000 messages in runs of 1,000: five BATCH frames.
        master.publish_many("many", [(i,) for i in range(5000)])
        master.publish("end-many")
        got = frames_until("end-many")
        batches = [m for m in got if m.kind is Kind.BATCH]
        assert len(batches) == 5, [(m.kind, m.seq) for m in got]
        seqs = [item[3] for m in batches for item in m.items[2]]
        assert seqs == list(range(first, first + 5000))
        assert [item[5] for m in batches for item in m.items[2]] == [[i] for i in range(5000)]

        # A burst of publishes with a state change in it: every message once, in order,
        # the STATE alone (a BATCH holds PUBLISH messages only).
        n = 20_000
        stopper = threading.Thread(target=master.stop)
        for i in range(n):
            master.publish("burst", i)
            if i == n // 2:
                stopper.start()
        stopper.join(10)
        master.publish("end-burst")
        got = frames_until("end-burst")
        kinds = {m.kind for m in got}
        assert Kind.BATCH in kinds, "20,000 publishes in a row never made a BATCH"
        numbered = [
            (item[1], item[3], item[5] if item[1] == Kind.PUBLISH else None)
            for m in got
            for item in (m.items[2] if m.kind is Kind.BATCH else [[0, int(m.kind), *m.items]])
        ]
        assert [seq for _, seq, _ in numbered] == list(
            range(first + 5001, first + 5001 + len(numbered))
        )
        assert [arg for kind, _, arg in numbered if kind == Kind.PUBLISH][:n] == [
            [i] for i in range(n)
        ]
        states = [m for m in got if m.kind is Kind.STATE]
        assert [m.items[2] for m in states] == ["STOPPING", "STOPPED"]
        assert all(item[1] == Kind.PUBLISH for m in batches for item in m.items[2])


def test_busctl_watch_and_the_events_fixture_take_a_batch_message_by_message(
    busd_master: Any, busd_dir: Path, busd_procs: Processes
) -> None:
    master = busd_master()
    master.start()
    # The fixtures' events (busd_run, busd_pool's waits) read the stream as busctl does.
    control = Control(default_endpoints(busd_dir).ctl, timeout=5)
    events = Events(default_endpoints(busd_dir).pub, control)
    try:
        master.publish_many("many", [(i,) for i in range(1500)])
        docs = [events.next(10) for _ in range(1500)]
        assert [d["args"] for d in docs if d] == [[i] for i in range(1500)]
        assert [d["seq"] for d in docs if d] == list(range(docs[0]["seq"], docs[0]["seq"] + 1500))
    finally:
        events.close()
        control.close()
    watch = busd_procs.spawn(
        [
            sys.executable,
            "-m",
            "busd.client.ctl.busctl",
            "--runtime-dir",
            str(busd_dir),
            "--json",
            "watch",
            "many",
            "--count",
            "2000",
        ],
        name="watch",
    )
    # It subscribes at some point: bursts (each one BATCH) until it has counted 2,000.
    deadline = time.monotonic() + 20
    while watch.poll() is None and time.monotonic() < deadline:
        master.publish_many("many", [(i,) for i in range(1000)])
        with contextlib.suppress(subprocess.TimeoutExpired):
            watch.wait(0.2)
    assert watch.wait(5) == 0, busd_procs.output(watch)[-2000:]
    lines = [json.loads(line) for line in busd_procs.output(watch).splitlines() if line[:1] == "{"]
    assert len(lines) == 2000
    seqs = [d["seq"] for d in lines]
    assert seqs == list(range(seqs[0], seqs[0] + 2000))
    master.exit()
