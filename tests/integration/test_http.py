"""A pre-fork HTTP pool on a socket the master made: respawn reloads drop nothing."""

from __future__ import annotations

import http.client
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from busd.client.control import Control
from busd.core.endpoints import default_endpoints
from busd.core.errors import NoMaster
from busd.testing import Processes


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(self.path)
        self.sock = sock


def get(path: str) -> str:
    conn = UnixHTTPConnection(path)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        body = response.read().decode()
        if response.status != 200:
            raise AssertionError(f"status {response.status}")
        return body
    finally:
        conn.close()


def wait_workers(control: Control, count: int, exclude: set[int], timeout: float = 20) -> set[int]:
    """The pids of ``count`` STARTED workers, none of them in ``exclude``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            workers = control.request("workers", timeout=1)
        except NoMaster:
            workers = []
        pids = {w["pid"] for w in workers if w["state"] == "STARTED"}
        if len(pids) == count and not pids & exclude:
            return pids
        assert time.monotonic() < deadline, f"workers never became ready: {workers}"


def test_respawn_reloads_drop_no_request(busd_procs: Processes, busd_dir: Path) -> None:
    sock_path = str(busd_dir / "http.sock")
    busd = busd_procs.spawn(
        [
            sys.executable,
            "-m",
            "busd",
            "-w",
            "2",
            "--heartbeat",
            "0.2",
            "--log-level",
            "WARNING",
            "--reload",
            "respawn",
            "--listen",
            f"unix:{sock_path}",
            "busd.examples.http:main",
        ],
        name="busd",
    )
    ok, failures, servers = [0], [], set()
    stop = threading.Event()

    def client_loop() -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                servers.add(get(sock_path).split()[3])
                ok[0] += 1
            except (OSError, http.client.HTTPException, AssertionError) as exc:
                failures.append(repr(exc))

    with Control(default_endpoints(busd_dir).ctl, timeout=10) as control:
        generation = wait_workers(control, 2, set())
        loop = threading.Thread(target=client_loop)
        loop.start()
        try:
            for _ in range(3):
                control.request("graceful", timeout=30)
                generation = wait_workers(control, 2, generation)
            deadline = time.monotonic() + 30
            while ok[0] < 2000 and time.monotonic() < deadline and loop.is_alive():
                loop.join(0.05)
        finally:
            stop.set()
            loop.join(30)
        control.request("exit", timeout=30)
    assert busd.wait(15) == 0
    assert failures == [], failures[:5]
    assert ok[0] >= 2000, f"only {ok[0]} requests"
    assert len(servers) >= 4, f"requests were served by {servers} only: no respawn happened?"


def test_stops_at_once_after_serving(busd_procs: Processes, busd_dir: Path) -> None:
    # Every worker waits on the one socket; one that lost the race for a
    # connection must not sit in accept() and hold up the stop.
    sock_path = str(busd_dir / "http.sock")
    busd = busd_procs.spawn(
        [
            sys.executable,
            "-m",
            "busd",
            "-w",
            "4",
            "--heartbeat",
            "0.2",
            "--log-level",
            "WARNING",
            "--listen",
            f"unix:{sock_path}",
            "busd.examples.http:main",
        ],
        name="busd",
    )
    with Control(default_endpoints(busd_dir).ctl, timeout=10) as control:
        wait_workers(control, 4, set())
    served = {get(sock_path).split()[1] for _ in range(20)}
    assert served, "no request was served"
    began = time.monotonic()
    busd.send_signal(signal.SIGTERM)
    assert busd.wait(15) == 0, busd_procs.output(busd)
    took = time.monotonic() - began
    assert took < 1.0, f"busd took {took:.2f}s to stop after serving"
