"""A pool on another host (``busd --join``) across a real network link.

The test builds two network namespaces joined by a veth pair (see
``tests/integration/netns.py``): the master runs in one, with a tcp+CURVE
endpoint on the veth address; a joined busd with 4 workers runs in the
other.  Cutting the link is ``ip link set ... down`` on the joined side.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from busd.client.ctl.busctl import main as busctl
from busd.core.wire import HEARTBEAT_LIVENESS
from tests.integration import netns
from tests.integration.netns import TIMEOUT, WORKERS, Events, Setup, pids_of, workers_are

pytestmark = pytest.mark.slow

#: The master's heartbeat; the joined host takes it (and the liveness) from its welcome.
HEARTBEAT = 0.5
LOST_AFTER = HEARTBEAT * HEARTBEAT_LIVENESS
net, keys, setup = netns.net, netns.keys, netns.setup


def ctl(runtime: Path, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = busctl(["--runtime-dir", str(runtime), "--timeout", str(TIMEOUT), *argv])
    out, err = capsys.readouterr()
    assert code == 0, f"busctl {' '.join(argv)}: {code}\n{out}{err}"
    return code, out


def test_a_joined_pool_follows_the_master_across_the_link(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    master, runtime = setup.master(HEARTBEAT, "--worker-timeout", str(3 * HEARTBEAT))
    events = Events(runtime)
    try:
        host, pids = setup.host("h")
        events.wait("host_updated", workers_are(pids, "STARTED"))
        _, out = ctl(runtime, "status", capsys=capsys)
        assert "HOSTS" in out
        assert all(str(pid) in out for pid in pids), out

        _, out = ctl(runtime, "--json", "graceful", "--wait", capsys=capsys)
        host_ack = next(a for a in json.loads(out)["acks"]["acks"] if a["result"])
        assert len(host_ack["result"]["acks"]) == WORKERS, "the host acked before its workers"
        assert pids_of(setup.sink.collect("graceful", WORKERS, TIMEOUT)) == pids

        ctl(runtime, "stop", "--wait", capsys=capsys)
        assert pids_of(setup.sink.collect("stop", WORKERS, TIMEOUT)) == pids
        ctl(runtime, "start", "--wait", capsys=capsys)
        assert pids_of(setup.sink.collect("start", WORKERS, TIMEOUT)) == pids

        ctl(runtime, "publish", "news", "7", capsys=capsys)
        news = setup.sink.collect("news", WORKERS, TIMEOUT)
        assert pids_of(news) == pids
        assert {r["value"] for r in news} == {7}

        ctl(runtime, "exit", capsys=capsys)
        assert pids_of(setup.sink.collect("exit", WORKERS, TIMEOUT)) == pids
        assert host.wait(TIMEOUT) == 0, setup.procs.output(host)
        assert master.wait(TIMEOUT) == 0, setup.procs.output(master)
    finally:
        events.close()


def test_a_cut_link_ends_the_remote_pool_or_waits_and_rejoins(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    master, runtime = setup.master(HEARTBEAT, "--worker-timeout", str(3 * HEARTBEAT))
    events = Events(runtime)
    try:
        # Default: the workers run their stop listeners and exit.
        host, pids = setup.host("h")
        events.wait("host_updated", workers_are(pids, "STARTED"))
        workers = [psutil.Process(pid) for pid in pids]
        cut = time.monotonic()
        setup.net.link(up=False)
        _, alive = psutil.wait_procs(workers, timeout=LOST_AFTER + 1.0)
        took = time.monotonic() - cut
        assert not alive, f"remote workers still running {took:.2f}s after the cut"
        with capsys.disabled():
            print(f"remote workers gone {took:.2f}s after the cut (limit {LOST_AFTER + 1.0:g}s)")
        assert pids_of(setup.sink.collect("stop", WORKERS, TIMEOUT)) == pids
        assert pids_of(setup.sink.collect("exit", WORKERS, TIMEOUT)) == pids
        lost = events.wait("host_lost", workers_are(pids, "lost"))
        _, out = ctl(runtime, "--json", "status", capsys=capsys)
        listed = [h for h in json.loads(out)["hosts"] if h["host"] == lost["host"]]
        assert listed, out
        assert workers_are(pids, "lost")(listed[0]), listed
        assert host.wait(TIMEOUT) is not None
        setup.net.link(up=True)

        # --wait-for-master: the workers stop, keep running, and rejoin.
        host, pids = setup.host("h2", "--wait-for-master")
        events.wait("host_updated", workers_are(pids, "STARTED"))
        workers = [psutil.Process(pid) for pid in pids]
        setup.net.link(up=False)
        assert pids_of(setup.sink.collect("stop", WORKERS, TIMEOUT)) == pids
        events.wait("host_lost", workers_are(pids, "lost"))
        assert all(w.is_running() for w in workers)
        setup.net.link(up=True)
        assert pids_of(setup.sink.collect("start", WORKERS, TIMEOUT)) == pids
        events.wait("host_updated", workers_are(pids, "STARTED"))
        assert all(w.is_running() for w in workers), "a worker was restarted"

        ctl(runtime, "exit", capsys=capsys)
        assert pids_of(setup.sink.collect("exit", WORKERS, TIMEOUT)) == pids
        assert host.wait(TIMEOUT) == 0, setup.procs.output(host)
        assert master.wait(TIMEOUT) == 0, setup.procs.output(master)
    finally:
        events.close()
        with contextlib.suppress(subprocess.CalledProcessError):
            setup.net.link(up=True)
