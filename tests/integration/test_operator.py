"""What an operator sees: busd's log lines, and busctl never waiting on nothing."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from busd.testing import Processes, Sink

TIMEOUT = 30.0
STAMP = r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3} "


def busctl(procs: Processes, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "busd.client.ctl.busctl", *args],
        capture_output=True,
        text=True,
        env=procs.env,
        timeout=60,
        check=False,
    )


def wait_workers(procs: Processes, predicate: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        done = busctl(procs, "--json", "workers")
        workers = json.loads(done.stdout) if done.returncode == 0 else None
        if isinstance(workers, list) and workers and predicate(workers):
            return workers
        assert time.monotonic() < deadline, f"workers never matched: {done.stderr} {workers}"


def wait_line(procs: Processes, proc: subprocess.Popen[bytes], pattern: str) -> re.Match[str]:
    """The first line of ``proc``'s output matching ``pattern`` (fails past TIMEOUT)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        found = re.search(pattern, procs.output(proc), re.MULTILINE)
        if found:
            return found
        assert proc.poll() is None or time.monotonic() < deadline, procs.output(proc)
        assert time.monotonic() < deadline, f"no line {pattern!r}:\n{procs.output(proc)}"
        # The output is a file: nothing to wait on but a round trip to busd.
        busctl(procs, "ping")


def test_the_master_says_what_happens_to_each_worker(
    busd_procs: Processes, busd_sink: Sink
) -> None:
    busd = busd_procs.spawn(
        [
            sys.executable,
            "-m",
            "busd",
            "-w",
            "3",
            "--heartbeat",
            "0.2",
            "--graceful-timeout",
            "1",
            "tests.integration.targets:slow_stop",
        ],
        name="busd",
    )
    busd_sink.collect("start", 3, timeout=TIMEOUT)
    workers = wait_workers(
        busd_procs, lambda ws: len(ws) == 3 and all(w["state"] == "STARTED" for w in ws)
    )
    pids = {w["id"]: w["pid"] for w in workers}
    for slot, pid in pids.items():
        wait_line(
            busd_procs,
            busd,
            rf"^{STAMP}busd \[\d+\] INFO .*worker {slot} \(pid {pid}\) "
            r"spawned",
        )
        wait_line(
            busd_procs,
            busd,
            rf"^{STAMP}busd \[\d+\] INFO .*worker {slot} \(pid {pid}\) "
            r"started$",
        )
    summary = wait_line(
        busd_procs,
        busd,
        r"busd \S+ \(pid \d+\) STARTED: 3 workers of "
        r"tests.integration.targets:slow_stop .*; control ipc://",
    )
    assert summary

    # A crash: the operator's SIGKILL.
    assert busctl(busd_procs, "signal", "KILL", "1").returncode == 0
    wait_line(
        busd_procs,
        busd,
        rf"worker 1 \(pid {pids[1]}\) exited with signal SIGKILL "
        r"\(crash\)",
    )
    # A scale down: its stop listener hangs, so it is killed after --graceful-timeout.
    assert busctl(busd_procs, "scale", "2").returncode == 0
    wait_line(
        busd_procs,
        busd,
        rf"worker 2 \(pid {pids[2]}\) did not stop within "
        r"--graceful-timeout 1s of SIGTERM: killing it \(SIGKILL\)",
    )
    wait_line(
        busd_procs,
        busd,
        rf"worker 2 \(pid {pids[2]}\) exited with signal SIGKILL "
        r"\(timeout\)",
    )
    busd.send_signal(signal.SIGTERM)
    assert busd.wait(TIMEOUT) == 0
    out = busd_procs.output(busd)
    assert re.search(
        rf"worker 0 \(pid {pids[0]}\) did not exit within --graceful-timeout 1s: "
        r"killing it",
        out,
    ), out
    lines = [line for line in out.splitlines() if line.startswith(("busd ", "20"))]
    assert all(re.match(STAMP, line) for line in lines), [
        line for line in lines if not re.match(STAMP, line)
    ]
    assert not [line for line in lines if "Handling SIG" in line or "Listening for" in line]
    debug = busd_procs.spawn(
        [
            sys.executable,
            "-m",
            "busd",
            "--log-level",
            "DEBUG",
            "--runtime-dir",
            str(busd_procs.directory / "d"),
        ],
        name="debug",
    )
    wait_line(busd_procs, debug, r" DEBUG .*Handling SIGTERM\.$")
    debug.send_signal(signal.SIGTERM)
    assert debug.wait(TIMEOUT) == 0


def test_plain_log_format_has_no_timestamps(busd_procs: Processes) -> None:
    busd = busd_procs.spawn(
        [
            sys.executable,
            "-m",
            "busd",
            "-w",
            "1",
            "--log-format",
            "plain",
            "busd.examples.hello:main",
        ],
        name="busd",
    )
    wait_workers(busd_procs, lambda ws: ws[0]["state"] == "STARTED")
    busd.send_signal(signal.SIGTERM)
    assert busd.wait(TIMEOUT) == 0
    lines = [line for line in busd_procs.output(busd).splitlines() if "INFO" in line]
    assert lines
    assert all(line.startswith(("busd [", "worker 0 [")) for line in lines), lines


def test_status_with_no_master_fails_at_once(busd_procs: Processes, busd_dir: Path) -> None:
    for args in (["--name", "nosuch", "status"], ["status"], ["graceful", "--wait"]):
        took = []
        for _ in range(3):  # the best of three: a loaded machine delays an interpreter's start
            began = time.monotonic()
            done = busctl(busd_procs, *args)
            took.append(time.monotonic() - began)
            assert done.returncode == 3, done.stderr
            assert "does not exist" in done.stderr
            assert "--name" in done.stderr
        assert min(took) < 0.5, f"busctl {' '.join(args)} took {took} with no master"


def test_clean_exit_removes_the_sockets_and_bad_commands_fail(
    busd_procs: Processes, busd_dir: Path
) -> None:
    busd = busd_procs.spawn(
        [sys.executable, "-m", "busd", "-w", "2", "busd.examples.hello:main"], name="busd"
    )
    wait_workers(busd_procs, lambda ws: all(w["state"] == "STARTED" for w in ws))
    assert {"ctl.sock", "pub.sock"} <= {p.name for p in busd_dir.iterdir()}

    done = busctl(busd_procs, "signal", "HUP", "99")
    assert done.returncode == 1, done.stdout
    assert done.stderr.strip() == "busctl: no running worker 99 (running: 0, 1)"
    done = busctl(busd_procs, "publish", "ch", "--json", "x")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"acks": None}  # relayed; not waited for

    assert busctl(busd_procs, "exit").returncode == 0
    assert busd.wait(TIMEOUT) == 0
    assert not {"ctl.sock", "pub.sock"} & {p.name for p in busd_dir.iterdir()}


def test_a_bad_signal_request_is_refused_and_busd_serves_on(busd_procs: Processes) -> None:
    from busd.core.control import Control
    from busd.core.endpoints import default_endpoints
    from busd.core.errors import BusError

    busd = busd_procs.spawn(
        [sys.executable, "-m", "busd", "-w", "1", "busd.examples.hello:main"], name="busd"
    )
    wait_workers(busd_procs, lambda ws: ws[0]["state"] == "STARTED")
    with Control(default_endpoints(busd_procs.directory).ctl, timeout=10) as control:
        for workers in ([[0]], "0", [True], {"a": 1}):
            with pytest.raises(BusError, match="list of worker ids"):
                control.request("signal", signal="HUP", workers=workers)
        assert control.request("ping")["pid"] == busd.pid
    busd.send_signal(signal.SIGTERM)
    assert busd.wait(TIMEOUT) == 0
