"""deploy/'s systemd units: clean under systemd-analyze, and busd under a real NOTIFY_SOCKET.

The notification socket is a unix datagram socket this test binds, as
systemd's would be; busd is the real command with real workers.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from busd.client.bus import ClientBus
from busd.testing import Processes, Sink
from busd.testing.probe import Probe
from tests.integration import targets

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
TARGET = "tests.integration.test_deploy_systemd:worker"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def worker(bus: ClientBus) -> None:
    """targets.main, and a report of what systemd variables this worker sees."""
    targets.main(bus)
    with Probe() as probe:
        probe.report(
            "environ",
            **{k: os.environ.get(k) for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")},
        )


def installed_bin() -> Path:
    """The directory holding this environment's busd and busctl scripts."""
    here = Path(sys.executable).parent
    if not (here / "busd").exists():
        pytest.fail(f"no busd script beside {sys.executable}: install busd (pip install -e .)")
    return here


@pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (.ci/run installs it as root)"
)
@pytest.mark.parametrize(
    ("unit", "as_name"),
    [
        ("busd.service", "app.service"),
        ("busd@.service", "busd@shop.service"),
        ("busd-pools.service", "app.service"),
    ],
)
def test_unit_verifies_clean(unit: str, as_name: str, tmp_path: Path) -> None:
    # The units name /opt/<app>/.venv as the place to edit; point them at ours,
    # as an installer would, so verify can check the commands exist.
    venv = installed_bin().parent
    text = (DEPLOY / unit).read_text()
    assert "/opt/" in text, "the unit should show where the virtualenv goes"
    for placeholder in ("/opt/app/.venv", "/opt/busd/.venv"):
        text = text.replace(placeholder, str(venv))
    path = tmp_path / as_name
    path.write_text(text)
    assert SYSTEMD_ANALYZE is not None
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Unknown keys and bad values are only warnings: "clean" means none at all.
    assert (done.stdout + done.stderr).strip() == ""


def test_units_reload_with_graceful_wait_and_notify() -> None:
    for unit in ("busd.service", "busd@.service", "busd-pools.service"):
        lines = [line.strip() for line in (DEPLOY / unit).read_text().splitlines()]
        assert "Type=notify" in lines
        assert "NotifyAccess=main" in lines
        reload_line = next(line for line in lines if line.startswith("ExecReload="))
        assert "/busctl " in reload_line
        assert reload_line.endswith(" graceful --wait")
        assert any(line.startswith("WatchdogSec=") for line in lines)


class Notifications:
    """The systemd end of NOTIFY_SOCKET: every datagram with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.seen: list[tuple[float, dict[str, str]]] = []

    def next(self, timeout: float) -> dict[str, str] | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
        self.seen.append((time.monotonic(), fields))
        return fields

    def wait(self, key: str, timeout: float = 30.0) -> list[dict[str, str]]:
        """Every notification up to and including the first one with ``key``."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            fields = self.next(deadline - time.monotonic())
            if fields is None:
                pytest.fail(f"no {key} within {timeout}s; seen {[f for _, f in self.seen]}")
            got.append(fields)
            if key in fields:
                return got

    def close(self) -> None:
        self.sock.close()


def busctl(procs: Processes, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "busd.client.ctl.busctl", "--timeout", "20", *args],
        capture_output=True,
        text=True,
        env=procs.env,
        timeout=60,
        check=False,
    )


def worker_rows(procs: Processes) -> list[dict[str, object]]:
    done = busctl(procs, "--json", "status")
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, object]] = json.loads(done.stdout)["workers"]
    return rows


@pytest.mark.slow
def test_busd_under_notify_socket_and_watchdog(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    systemd = Notifications(busd_dir / "notify")
    watchdog_usec = 1_000_000  # systemd's WatchdogSec=1: a ping at least every second
    try:
        busd = busd_procs.spawn(
            [
                sys.executable,
                "-m",
                "busd",
                "--heartbeat",
                "0.2",
                "--log-level",
                "WARNING",
                "-w",
                "3",
                TARGET,
            ],
            name="busd",
            env={
                "NOTIFY_SOCKET": str(busd_dir / "notify"),
                "WATCHDOG_USEC": str(watchdog_usec),
                "WATCHDOG_PID": "",
            },
        )
        before_ready = systemd.wait("READY")
        assert not any("STOPPING" in f or "RELOADING" in f for f in before_ready)
        # READY=1 means every worker ran its start listeners: busd says so at once.
        rows = worker_rows(busd_procs)
        assert [r["state"] for r in rows] == ["STARTED"] * 3, rows
        for report in busd_sink.collect("environ", 3):
            assert report["NOTIFY_SOCKET"] is None, "a worker could talk to systemd"
            assert report["WATCHDOG_USEC"] is None

        pings = [t for t, f in systemd.seen if "WATCHDOG" in f]
        while len(pings) < 5:
            systemd.wait("WATCHDOG", timeout=5)
            pings = [t for t, f in systemd.seen if "WATCHDOG" in f]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) < watchdog_usec / 1e6, f"a ping came too late for systemd: {gaps}"
        assert min(gaps) > 0.1, f"pings far faster than WATCHDOG_USEC/2 asks: {gaps}"

        # ExecReload: RELOADING=1, then READY=1, both before busctl returned.
        mark = len(systemd.seen)
        done = busctl(busd_procs, "graceful", "--wait")
        assert done.returncode == 0, done.stderr
        busd_sink.collect("graceful", 3, timeout=10)
        systemd.wait("READY", timeout=0.5)
        reload_fields = [f for _, f in systemd.seen[mark:] if "WATCHDOG" not in f]
        assert [sorted(f) for f in reload_fields] == [["MONOTONIC_USEC", "RELOADING"], ["READY"]], (
            reload_fields
        )
        assert int(reload_fields[0]["MONOTONIC_USEC"]) <= time.monotonic_ns() // 1000

        # A stop and start of the bus is no exit: systemd must not hear STOPPING=1.
        mark = len(systemd.seen)
        for command in ("stop", "start"):
            done = busctl(busd_procs, command)
            assert done.returncode == 0, done.stderr
        systemd.wait("READY", timeout=30)
        assert not [f for _, f in systemd.seen[mark:] if "STOPPING" in f]

        os.kill(busd.pid, signal.SIGTERM)  # systemctl stop
        systemd.wait("STOPPING", timeout=30)
        assert busd.wait(30) == 0
        busd_sink.collect("exit", 3, timeout=10)
    finally:
        systemd.close()
