"""A joined pool across a network partition that heals (``busd --join``).

Two network namespaces and a veth pair (``tests/integration/netns.py``): a
CURVE master in one, a joined busd with 4 workers in the other.  The link is
cut (``ip link set ... down`` on the joined side) for a fixed time, which is
the experiment itself; every other wait is for an event, with a bound.

Both sides count a silence of the master's heartbeat x liveness as lost.
A cut longer than that: the joined side stops (or exits), the master lists
the host lost, and when the link is back the pool follows the master again,
with what was published meanwhile delivered or counted exactly.  A cut
shorter than that: nothing is lost, nothing stops, on either side.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from busd.client.ctl.busctl import main as busctl
from busd.core.wire import HEARTBEAT_LIVENESS
from tests.integration import netns
from tests.integration.netns import TIMEOUT, WORKERS, Events, Setup, pids_of, workers_are

pytestmark = pytest.mark.slow
net, keys, setup = netns.net, netns.keys, netns.setup

#: The long cut's master: lost after 1.5 s of silence (the master's own
#: --worker-timeout stays at its default: joined hosts are held to heartbeat x liveness).
HEARTBEAT = 0.5
LOST_AFTER = HEARTBEAT * HEARTBEAT_LIVENESS
#: Longer than LOST_AFTER, shorter than what the master allows its other clients.
LONG_CUT = 5.0
#: The short cut's master: lost after 6 s; its other clients after 1 s (--worker-timeout).
SLOW_HEARTBEAT = 2.0
SHORT_CUT = 1.5
#: Back to STARTED (and the news delivered) within this after the link returns.
HEAL_WITHIN = 10.0


def ctl(runtime: Path, *argv: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    code = busctl(["--runtime-dir", str(runtime), "--timeout", str(TIMEOUT), *argv])
    out, err = capsys.readouterr()
    assert code == 0, f"busctl {' '.join(argv)}: {code}\n{out}{err}"
    return out


def host_entry(runtime: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """The one joined host in the master's status."""
    hosts = json.loads(ctl(runtime, "--json", "status", capsys=capsys))["hosts"]
    assert len(hosts) == 1, hosts
    return dict(hosts[0])


def cut(setup: Setup, seconds: float) -> float:
    """Bring the link down; returns when it should come back up."""
    setup.net.link(up=False)
    return time.monotonic() + seconds


def restore(setup: Setup, until: float) -> float:
    """Keep the link down until ``until`` (the experiment), bring it up; returns that time."""
    time.sleep(max(0.0, until - time.monotonic()))
    setup.net.link(up=True)
    return time.monotonic()


def test_a_pool_waiting_for_its_master_heals_after_a_long_cut(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    master, runtime = setup.master(HEARTBEAT)
    events = Events(runtime)
    try:
        host, pids = setup.host("h", "--wait-for-master")
        name = events.wait("host_updated", workers_are(pids, "STARTED"))["host"]
        workers = [psutil.Process(pid) for pid in pids]
        up_at = cut(setup, LONG_CUT)
        try:
            # The joined side: its workers stop; the master: the host is lost. Both within
            # the one threshold (plus a heartbeat for the master's check, and slack).
            bound = LOST_AFTER + 2 * HEARTBEAT + 1.0
            assert pids_of(setup.sink.collect("stop", WORKERS, bound)) == pids
            events.wait("host_lost", workers_are(pids, "lost"), timeout=bound)
            ctl(runtime, "publish", "news", "1", capsys=capsys)
            assert time.monotonic() < up_at, "the cut was over before both sides saw it"
        finally:
            back = restore(setup, up_at)
        started = setup.sink.collect("start", WORKERS, HEAL_WITHIN)
        took = time.monotonic() - back
        assert pids_of(started) == pids, "the pool came back with other workers"
        news = setup.sink.collect("news", WORKERS, HEAL_WITHIN)
        assert pids_of(news) == pids
        assert {r["value"] for r in news} == {1}
        with capsys.disabled():
            print(f"\nback to STARTED {took:.2f}s after the link returned (limit {HEAL_WITHIN}s)")
        events.wait("host_updated", lambda h: h["host"] == name and workers_are(pids, "STARTED")(h))
        entry = host_entry(runtime, capsys)
        assert workers_are(pids, "STARTED")(entry), entry
        assert entry["missed"] == 0, entry
        assert all(w.is_running() for w in workers), "a worker was restarted"

        ctl(runtime, "exit", capsys=capsys)
        assert pids_of(setup.sink.collect("exit", WORKERS, TIMEOUT)) == pids
        assert host.wait(TIMEOUT) == 0, setup.procs.output(host)
        assert master.wait(TIMEOUT) == 0, setup.procs.output(master)
    finally:
        events.close()
        setup.net.link(up=True)


def test_a_short_cut_loses_nothing_and_stops_nothing(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    # The master's other clients would be lost after 1 s; a joined host only after 6 s.
    master, runtime = setup.master(SLOW_HEARTBEAT, "--worker-timeout", "1")
    events = Events(runtime)
    try:
        host, pids = setup.host("h", "--wait-for-master")
        events.wait("host_updated", workers_are(pids, "STARTED"))
        since = host_entry(runtime, capsys)["since"]
        up_at = cut(setup, SHORT_CUT)
        try:
            ctl(runtime, "publish", "news", "2", capsys=capsys)
        finally:
            restore(setup, up_at)
        news = setup.sink.collect("news", WORKERS, HEAL_WITHIN)
        assert pids_of(news) == pids
        assert {r["value"] for r in news} == {2}
        # Each worker reports in order: a stop before its news would have been read by now.
        stops = [r for r in setup.sink.seen if r["event"] == "stop"]
        assert not stops, f"the joined pool stopped during a {SHORT_CUT}s cut: {stops}"
        ctl(runtime, "publish", "news", "3", capsys=capsys)
        assert {r["value"] for r in setup.sink.collect("news", WORKERS, TIMEOUT)} == {3}
        # The news reached the master's watcher after any event of the cut did.
        seen = []
        while not events.queue.empty():
            seen.append(events.queue.get_nowait())
        lost = [
            data
            for event, data in events.seen + seen
            if event == "host_lost" or (event == "client_lost" and data.get("role") == "host")
        ]
        assert not lost, f"the master counted the host lost during a {SHORT_CUT}s cut: {lost}"
        entry = host_entry(runtime, capsys)
        assert workers_are(pids, "STARTED")(entry), entry
        assert entry["since"] == since, "the host joined again"
        assert entry["missed"] == 0, entry

        ctl(runtime, "exit", capsys=capsys)
        assert pids_of(setup.sink.collect("exit", WORKERS, TIMEOUT)) == pids
        assert host.wait(TIMEOUT) == 0, setup.procs.output(host)
        assert master.wait(TIMEOUT) == 0, setup.procs.output(master)
    finally:
        events.close()
        setup.net.link(up=True)


def test_a_pool_that_exits_when_lost_counts_what_it_missed_when_it_joins_again(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    master, runtime = setup.master(HEARTBEAT)
    events = Events(runtime)
    try:
        host, pids = setup.host("h")
        events.wait("host_updated", workers_are(pids, "STARTED"))
        # Acked by the host once its workers ran it: the host has everything up to it.
        acked = json.loads(ctl(runtime, "--json", "publish", "news", "0", "--wait", capsys=capsys))
        last = max(acked["acks"]["seqs"])
        setup.sink.collect("news", WORKERS, TIMEOUT)
        up_at = cut(setup, LONG_CUT)
        try:
            bound = LOST_AFTER + 2 * HEARTBEAT + 1.0
            assert pids_of(setup.sink.collect("exit", WORKERS, bound)) == pids
            assert host.wait(bound) is not None
            events.wait("host_lost", workers_are(pids, "lost"), timeout=bound)
            ctl(runtime, "publish", "news", "1", capsys=capsys)
            assert time.monotonic() < up_at, "the cut was over before both sides saw it"
        finally:
            restore(setup, up_at)
        old_log = setup.procs.output(host)
        assert f"delivered here up to seq {last} of epoch" in old_log, old_log

        # As systemd's Restart= would: the same command, the same runtime dir.
        host, new_pids = setup.host("h")
        # Relayed while it was away: the master's client_lost and host_lost, and the news.
        missed = 3
        entry = events.wait(
            "host_updated",
            lambda h: h.get("missed") == missed and workers_are(new_pids, "STARTED")(h),
        )
        assert entry["state"] == "joined"
        assert workers_are(new_pids, "STARTED")(host_entry(runtime, capsys))
        new_log = setup.procs.output(host)
        assert re.search(
            rf"{missed} message\(s\) relayed by the master while this host was "
            rf"away \(seq {last + 1}\.\.{last + missed} of epoch \d+\) were not "
            r"delivered here: lost",
            new_log,
        ), new_log
        ctl(runtime, "publish", "news", "4", capsys=capsys)
        news = setup.sink.collect("news", WORKERS, TIMEOUT)
        assert pids_of(news) == sorted(new_pids)
        assert {r["value"] for r in news} == {4}, "a message of the cut was delivered"

        ctl(runtime, "exit", capsys=capsys)
        assert host.wait(TIMEOUT) == 0, setup.procs.output(host)
        assert master.wait(TIMEOUT) == 0, setup.procs.output(master)
    finally:
        events.close()
        setup.net.link(up=True)


def test_a_pool_waiting_for_its_master_joins_the_new_one_after_a_restart_during_a_cut(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    master, runtime = setup.master(HEARTBEAT)
    events = Events(runtime)
    try:
        host, pids = setup.host("h", "--wait-for-master")
        events.wait("host_updated", workers_are(pids, "STARTED"))
        epoch = json.loads(ctl(runtime, "--json", "status", capsys=capsys))["epoch"]
        up_at = cut(setup, LONG_CUT)
        try:
            bound = LOST_AFTER + 2 * HEARTBEAT + 1.0
            assert pids_of(setup.sink.collect("stop", WORKERS, bound)) == pids
            events.wait("host_lost", workers_are(pids, "lost"), timeout=bound)
            events.close()
            ctl(runtime, "restart", "--wait", capsys=capsys)
            events = Events(runtime)
            assert time.monotonic() < up_at, "the cut was over before the master restarted"
        finally:
            restore(setup, up_at)
        assert pids_of(setup.sink.collect("start", WORKERS, HEAL_WITHIN)) == pids
        events.wait("host_updated", workers_are(pids, "STARTED"))
        status = json.loads(ctl(runtime, "--json", "status", capsys=capsys))
        assert status["epoch"] != epoch
        assert [workers_are(pids, "STARTED")(h) for h in status["hosts"]] == [True], status

        ctl(runtime, "exit", capsys=capsys)
        assert pids_of(setup.sink.collect("exit", WORKERS, TIMEOUT)) == pids
        assert host.wait(TIMEOUT) == 0, setup.procs.output(host)
        assert master.wait(TIMEOUT) == 0, setup.procs.output(master)
    finally:
        events.close()
        setup.net.link(up=True)
