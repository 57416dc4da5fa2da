"""A pool on another host (``busd --join``) across a real network link.

The test builds two network namespaces joined by a veth pair (addresses
only inside them, all removed afterwards): the master runs in one, with a
tcp+CURVE endpoint on the veth address; a joined busd with 4 workers runs in
the other.  The test itself stays in the root namespace and reaches both
masters through their ipc sockets (a path in the file system crosses
namespaces), the workers' reports through an ipc sink.

Cutting the link is ``ip link set ... down`` on the joined side: no packet
crosses, no connection is reset, so only the heartbeats can tell.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from busd import client
from busd.client.busctl import main as busctl
from busd.client.keygen import write_key_pair
from busd.control import Control
from busd.errors import NoMaster
from busd.testing import Processes, Sink
from busd.wire import HEARTBEAT_LIVENESS

pytestmark = pytest.mark.slow

#: The master's heartbeat; the joined host takes it (and the liveness) from its welcome.
HEARTBEAT = 0.5
LOST_AFTER = HEARTBEAT * HEARTBEAT_LIVENESS
TIMEOUT = 20.0
WORKERS = 4
PORT = 7000
TARGET = "tests.integration.join_targets:main"


@dataclass
class Net:
    """Two namespaces and the veth pair between them."""

    master_ns: str
    host_ns: str
    host_link: str
    master_addr: str

    def link(self, up: bool) -> None:
        ip("-n", self.host_ns, "link", "set", self.host_link, "up" if up else "down")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10,
                          check=check)


@pytest.fixture
def net() -> Iterator[Net]:
    if shutil.which("ip") is None:
        pytest.skip("iproute2's 'ip' is not installed")
    tag = os.urandom(3).hex()
    master_ns, host_ns = f"busd-m-{tag}", f"busd-h-{tag}"
    master_link, host_link = f"bm{tag}", f"bh{tag}"
    made = ip("netns", "add", master_ns, check=False)
    if made.returncode != 0:
        pytest.skip(f"the kernel refuses network namespaces: ip netns add: "
                    f"{made.stderr.strip()}")
    subnet = f"10.231.{int(tag[:2], 16)}"
    try:
        ip("netns", "add", host_ns)
        ip("link", "add", master_link, "type", "veth", "peer", "name", host_link)
        for link, ns, addr in ((master_link, master_ns, f"{subnet}.1/24"),
                               (host_link, host_ns, f"{subnet}.2/24")):
            ip("link", "set", link, "netns", ns)
            ip("-n", ns, "addr", "add", addr, "dev", link)
            ip("-n", ns, "link", "set", link, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield Net(master_ns, host_ns, host_link, f"{subnet}.1")
    finally:
        for ns in (master_ns, host_ns):
            ip("netns", "del", ns, check=False)
        ip("link", "del", master_link, check=False)


@dataclass
class Keys:
    server: Path
    server_secret: Path
    client_secret: Path
    authorized: Path


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    paths = {}
    for name in ("server", "client"):
        directory = tmp_path / name
        directory.mkdir(mode=0o700)
        paths[name] = write_key_pair(directory, name)
    authorized = tmp_path / "authorized"
    authorized.mkdir(mode=0o700)
    shutil.copy(paths["client"][0], authorized)
    return Keys(paths["server"][0], paths["server"][1], paths["client"][1], authorized)


class Events:
    """The master's events (busd.event), read by a client in the root namespace."""

    def __init__(self, runtime: Path) -> None:
        self.queue: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.bus = client.connect(runtime_dir=runtime, timeout=TIMEOUT, role="watcher")
        self.bus.subscribe("busd.event", lambda name, data: self.queue.put((name, data)))
        self.bus.mirror()

    def wait(self, name: str, where: Callable[[dict[str, Any]], bool],
             timeout: float = TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                event, data = self.queue.get(timeout=left)
            except queue.Empty:
                break
            seen.append(event)
            if event == name and where(data):
                return data
        pytest.fail(f"no {name!r} event as expected within {timeout}s; saw {seen}")

    def close(self) -> None:
        self.bus.close()


@dataclass
class Setup:
    net: Net
    keys: Keys
    procs: Processes
    sink: Sink
    base: Path

    def master(self) -> tuple[Any, Path]:
        runtime = self.base / "m"
        proc = self.procs.spawn(self.busd(
            self.net.master_ns, runtime, "--worker-timeout", str(3 * HEARTBEAT),
            "--bind", f"tcp://{self.net.master_addr}:{PORT}",
            "--curve-secret", str(self.keys.server_secret),
            "--authorized-keys", str(self.keys.authorized)), name="master")
        with Control(f"ipc://{runtime}/ctl.sock", TIMEOUT) as control:
            try:
                control.request("ping")
            except NoMaster:
                pytest.fail(f"the master did not start: {self.procs.output(proc)}")
        return proc, runtime

    def host(self, name: str, *extra: str) -> tuple[Any, list[int]]:
        proc = self.procs.spawn(self.busd(
            self.net.host_ns, self.base / name,
            "--join", f"tcp://{self.net.master_addr}:{PORT}",
            "--server-key", str(self.keys.server), "--curve-secret", str(self.keys.client_secret),
            *extra, "-w", str(WORKERS), TARGET), name=name)
        started = self.sink.collect("start", WORKERS, TIMEOUT)
        return proc, sorted(r["pid"] for r in started)

    @staticmethod
    def busd(ns: str, runtime: Path, *args: str) -> list[str]:
        return ["ip", "netns", "exec", ns, sys.executable, "-m", "busd",
                "--runtime-dir", str(runtime), "--heartbeat", str(HEARTBEAT), *args]


@pytest.fixture
def setup(net: Net, keys: Keys, busd_procs: Processes, busd_sink: Sink,
          busd_dir: Path) -> Setup:
    return Setup(net, keys, busd_procs, busd_sink, busd_dir)


def ctl(runtime: Path, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = busctl(["--runtime-dir", str(runtime), "--timeout", str(TIMEOUT), *argv])
    out, err = capsys.readouterr()
    assert code == 0, f"busctl {' '.join(argv)}: {code}\n{out}{err}"
    return code, out


def pids_of(reports: list[dict[str, Any]]) -> list[int]:
    return sorted(r["pid"] for r in reports)


def workers_are(pids: list[int], state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda host: (host.get("state") == ("lost" if state == "lost" else "joined")
                         and sorted(w["pid"] for w in host["workers"]) == pids
                         and all(w["state"] == state for w in host["workers"]))


def test_a_joined_pool_follows_the_master_across_the_link(
        setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    master, runtime = setup.master()
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
        setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    master, runtime = setup.master()
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
            print(f"remote workers gone {took:.2f}s after the cut "
                  f"(limit {LOST_AFTER + 1.0:g}s)")
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
