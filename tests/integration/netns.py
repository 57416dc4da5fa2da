"""Two network namespaces joined by a veth pair, a CURVE master in one, joined pools in the other.

Shared by the tests of ``busd --join`` across a real link.  Everything is
made by the test (addresses only inside the namespaces, all removed
afterwards); it needs root and iproute2's ``ip``, and skips with the reason
otherwise.  The test itself stays in the root namespace and reaches both
sides through their ipc sockets (a path in the file system crosses
namespaces), the workers' reports through an ipc sink.

Cutting the link is ``ip link set ... down`` on the joined side: no packet
crosses, no connection is reset, so only the heartbeats can tell.
"""

from __future__ import annotations

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

import pytest

from busd import client
from busd.client.ctl.keygen import write_key_pair
from busd.core.control import Control
from busd.core.errors import NoMaster
from busd.testing import Processes, Sink

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
        """Bring the joined side's end of the pair up or down."""
        ip("-n", self.host_ns, "link", "set", self.host_link, "up" if up else "down")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS`` (bounded)."""
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=check)


@pytest.fixture
def net() -> Iterator[Net]:
    """Two fresh namespaces and a veth pair, removed afterwards; skip without root or ip."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2's 'ip' is not installed")
    tag = os.urandom(3).hex()
    master_ns, host_ns = f"busd-m-{tag}", f"busd-h-{tag}"
    master_link, host_link = f"bm{tag}", f"bh{tag}"
    made = ip("netns", "add", master_ns, check=False)
    if made.returncode != 0:
        pytest.skip(
            f"the kernel refuses network namespaces (root needed): ip netns add: "
            f"{made.stderr.strip()}"
        )
    subnet = f"10.231.{int(tag[:2], 16)}"
    try:
        ip("netns", "add", host_ns)
        ip("link", "add", master_link, "type", "veth", "peer", "name", host_link)
        for link, ns, addr in (
            (master_link, master_ns, f"{subnet}.1/24"),
            (host_link, host_ns, f"{subnet}.2/24"),
        ):
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
    """The master's key pair, one host's secret, and the dir authorising it."""

    server: Path
    server_secret: Path
    client_secret: Path
    authorized: Path


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    """Fresh CURVE keys: one for the master, one authorised host."""
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
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.bus = client.connect(runtime_dir=runtime, timeout=TIMEOUT, role="watcher")
        self.bus.subscribe("busd.event", lambda name, data: self.queue.put((name, data)))
        self.bus.mirror()

    def wait(
        self, name: str, where: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        """The next event ``name`` for which ``where`` holds; fail past ``timeout``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event, data = self.queue.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append((event, data))
            if event == name and where(data):
                return data
        pytest.fail(
            f"no {name!r} event as expected within {timeout}s; saw {[e for e, _ in self.seen]}"
        )

    def close(self) -> None:
        """Close the watching client."""
        self.bus.close()


@dataclass
class Setup:
    """The two namespaces, keys, process fixtures and a base dir for runtime dirs."""

    net: Net
    keys: Keys
    procs: Processes
    sink: Sink
    base: Path

    def master(self, heartbeat: float, *extra: str) -> tuple[Any, Path]:
        """A master alone on the veth address (tcp+CURVE) and its runtime dir's ipc."""
        runtime = self.base / "m"
        proc = self.procs.spawn(
            self.busd(
                self.net.master_ns,
                runtime,
                heartbeat,
                *extra,
                "--bind",
                f"tcp://{self.net.master_addr}:{PORT}",
                "--curve-secret",
                str(self.keys.server_secret),
                "--authorized-keys",
                str(self.keys.authorized),
            ),
            name="master",
        )
        with Control(f"ipc://{runtime}/ctl.sock", TIMEOUT) as control:
            try:
                control.request("ping")
            except NoMaster:
                pytest.fail(f"the master did not start: {self.procs.output(proc)}")
        return proc, runtime

    def host(self, name: str, *extra: str) -> tuple[Any, list[int]]:
        """A joined busd with WORKERS workers; returns once each reported its start."""
        proc = self.procs.spawn(
            self.busd(
                self.net.host_ns,
                self.base / name,
                0.5,
                "--join",
                f"tcp://{self.net.master_addr}:{PORT}",
                "--server-key",
                str(self.keys.server),
                "--curve-secret",
                str(self.keys.client_secret),
                *extra,
                "-w",
                str(WORKERS),
                TARGET,
            ),
            name=name,
        )
        started = self.sink.collect("start", WORKERS, TIMEOUT)
        return proc, sorted(r["pid"] for r in started)

    @staticmethod
    def busd(ns: str, runtime: Path, heartbeat: float, *args: str) -> list[str]:
        """The busd command line, run inside namespace ``ns``."""
        return [
            "ip",
            "netns",
            "exec",
            ns,
            sys.executable,
            "-m",
            "busd",
            "--runtime-dir",
            str(runtime),
            "--heartbeat",
            str(heartbeat),
            *args,
        ]


@pytest.fixture
def setup(net: Net, keys: Keys, busd_procs: Processes, busd_sink: Sink, busd_dir: Path) -> Setup:
    """Everything a test of a joined pool across the link needs."""
    return Setup(net, keys, busd_procs, busd_sink, busd_dir)


def pids_of(reports: list[dict[str, Any]]) -> list[int]:
    """The sorted pids of workers' reports."""
    return sorted(r["pid"] for r in reports)


def workers_are(pids: list[int], state: str) -> Callable[[dict[str, Any]], bool]:
    """A test of a host entry: these workers, each in ``state`` (``lost``: the host lost)."""
    return lambda host: (
        host.get("state") == ("lost" if state == "lost" else "joined")
        and sorted(w["pid"] for w in host["workers"]) == pids
        and all(w["state"] == state for w in host["workers"])
    )
