"""A worker's life in a real pool: recycled (age, memory, its own ask), logged to files,
given an environment, and seen by master-side hooks."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from busd.client.control import Control
from busd.core.endpoints import default_endpoints
from busd.testing import Processes, Sink
from tests.integration.test_daemon import busctl, start_busd, states, status, wait_status

T = "tests.integration.life_targets"


def started_workers(control: Control) -> int:
    clients = control.request("clients")
    return sum(1 for c in clients if c["role"] == "worker" and c["state"] == "STARTED")


def watch_capacity(
    busd_dir: Path, sink: Sink, n: int, starts: int, timeout: float = 60
) -> list[dict[str, Any]]:
    """Collect ``starts`` worker starts; between them, STARTED workers never fewer than ``n``."""
    seen: list[dict[str, Any]] = []
    samples = 0
    deadline = time.monotonic() + timeout
    with Control(default_endpoints(busd_dir).ctl, timeout=5) as control:
        while len(seen) < starts:
            assert time.monotonic() < deadline, f"only {len(seen)} of {starts} starts"
            report = sink.get("start", timeout=0.02)
            if report is not None:
                seen.append(report)
            count = started_workers(control)
            if samples or count >= n:  # from the first moment all n are STARTED
                samples += 1
                assert count >= n, f"capacity dropped to {count} of {n} after {seen[-1]}"
    assert samples > 0
    return seen


def test_max_age_recycles_one_slot_at_a_time_without_losing_capacity(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    busd = start_busd(
        busd_procs, "-w", "2", "--max-age", "1", "--recycle-jitter", "0.5", f"{T}:steady"
    )
    starts = watch_capacity(busd_dir, busd_sink, 2, 6)
    assert {r["worker"] for r in starts[2:]} == {0, 1}
    doc = status(busd_procs)
    assert sum(w["recycles"] for w in doc["workers"]) >= 4
    assert sum(w["restarts"] for w in doc["workers"]) == 0  # a recycle is no restart
    assert all(w["reason"] == "recycle (max-age)" for w in doc["workers"])
    assert doc["master"]["recycle"]["recycled"] >= 3
    assert busctl(busd_procs, "exit").returncode == 0
    assert busd.wait(15) == 0


def test_a_worker_past_max_rss_is_replaced_first_then_retired(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    busd = start_busd(busd_procs, "-w", "2", "--max-rss", "64", "--log-level", "INFO", f"{T}:grow")
    starts = watch_capacity(busd_dir, busd_sink, 2, 3)
    big = next(r for r in starts[:2] if r["worker"] == 1)
    assert starts[2]["worker"] == 1
    doc = wait_status(
        busd_procs,
        lambda d: (
            d["workers"][1]["pid"] == starts[2]["pid"] and d["workers"][1]["state"] == "STARTED"
        ),
    )
    assert doc["workers"][1]["reason"].startswith("recycle (max-rss ")
    assert doc["workers"][1]["recycles"] == 1
    assert doc["workers"][0]["recycles"] == 0
    assert busctl(busd_procs, "exit").returncode == 0
    assert busd.wait(15) == 0
    log = busd_procs.output(busd)
    assert f"worker 1 (pid {big['pid']}) is recycled: max-rss" in log
    assert f"worker 1 (pid {big['pid']}) exited with status 0 (recycle)" in log


def test_bus_recycle_in_a_worker(busd_procs: Processes, busd_sink: Sink, busd_dir: Path) -> None:
    busd = start_busd(busd_procs, "-w", "2", f"{T}:recycle_me")
    asked = busd_sink.collect("asked", 2, timeout=30)
    assert sorted(r["reply"]["worker"] for r in asked) == [0, 1]
    assert all(r["reply"]["queued"] for r in asked)
    starts = watch_capacity(busd_dir, busd_sink, 2, 4)
    # Per slot: its first worker, then the replacement (the two slots' starts may interleave).
    assert sorted((r["worker"], r["generation"]) for r in starts) == [
        (0, 1),
        (0, 2),
        (1, 1),
        (1, 2),
    ]
    doc = wait_status(
        busd_procs,
        lambda d: states(d) == ["STARTED"] * 2 and all(w["generation"] == 2 for w in d["workers"]),
    )
    assert [w["reason"] for w in doc["workers"]] == ["recycle (done 1 job)"] * 2
    # A pid that is no worker is refused with one line.
    with (
        Control(default_endpoints(busd_dir).ctl, timeout=5) as control,
        pytest.raises(Exception, match="no running worker has pid 1"),
    ):
        control.request("recycle", pid=1)
    assert busctl(busd_procs, "exit").returncode == 0
    assert busd.wait(15) == 0


def numbers(text: str) -> list[int]:
    """The numbers of the complete ``line N`` lines (each alone on its line)."""
    return [int(m) for m in re.findall(r"^line (\d+)$", text, re.MULTILINE)]


def wait_file_lines(path: Path, timeout: float = 20) -> str:
    """The file's text once it holds a complete numbered line."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        if numbers(text):
            return text
        assert time.monotonic() < deadline, f"nothing written to {path}"


@pytest.mark.parametrize("how", ["busctl", "SIGUSR1"])
def test_log_files_reopened_after_rename_lose_no_line(
    busd_procs: Processes, busd_sink: Sink, tmp_path: Path, how: str
) -> None:
    logs = tmp_path / "logs"
    busd = start_busd(
        busd_procs,
        "--name",
        "app",
        "-w",
        "1",
        "--log-level",
        "INFO",
        "--log-dir",
        str(logs),
        f"{T}:chatter",
    )
    worker_log, master_log = logs / "app-worker-0.log", logs / "app.log"
    wait_file_lines(worker_log)
    worker_log.rename(logs / "app-worker-0.log.1")
    master_log.rename(logs / "app.log.1")
    if how == "busctl":
        done = busctl(busd_procs, "reopen-logs")
        assert done.returncode == 0, done.stderr
    else:
        os.kill(busd.pid, signal.SIGUSR1)
    wait_file_lines(worker_log)
    assert busctl(busd_procs, "exit").returncode == 0
    assert busd.wait(15) == 0
    old, new = (logs / "app-worker-0.log.1").read_text(), worker_log.read_text()
    seen = numbers(old) + numbers(new)
    assert seen == list(range(len(seen))), "a line was lost or repeated across the rename"
    assert numbers(new), "nothing written after the reopen"
    assert f"\nlast {len(seen)}\n" in new, "the exit listener's line is missing"
    assert "stderr too" in old
    assert "Bus EXITING" in master_log.read_text()
    assert "Bus STARTED" in (logs / "app.log.1").read_text()
    assert busd_procs.output(busd) == "", "with --log-dir, busd's output is in its file"


def test_env_for_every_worker(busd_procs: Processes, busd_sink: Sink) -> None:
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
            "2",
            "--env",
            "FOO=bar",
            "--env",
            "BAZ=a b=c",
            f"{T}:env",
        ],
        name="busd",
        env={"BUSD_ENV": "QUX=1"},
    )
    reports = sorted(busd_sink.collect("start", 2, timeout=30), key=lambda r: r["worker"])
    for slot, report in enumerate(reports):
        assert report["env"] == {
            "FOO": "bar",
            "BAZ": "a b=c",
            "QUX": "1",
            "BUSD_WORKER": str(slot),
            "BUSD_WORKER_GENERATION": str(report["generation"]),
        }
    assert busctl(busd_procs, "exit").returncode == 0
    assert busd.wait(15) == 0


@pytest.mark.parametrize("bad", ["FOO", "=x", "1A=2"])
def test_a_bad_env_item_is_a_usage_error(busd_procs: Processes, bad: str) -> None:
    busd = start_busd(busd_procs, "--env", bad, f"{T}:env")
    assert busd.wait(15) == 2
    out = busd_procs.output(busd)
    assert f"--env: expected KEY=VALUE with KEY a variable name, not {bad!r}" in out
    assert "Traceback" not in out


def test_hook_channels_reach_a_plugin_and_watch(busd_procs: Processes, busd_sink: Sink) -> None:
    busd = start_busd(
        busd_procs,
        "-w",
        "2",
        "--reload",
        "respawn",
        "--backoff",
        "0.05",
        "--plugin",
        f"{T}:hooks_plugin",
        f"{T}:steady",
    )
    first = busd_sink.collect("start", 2, timeout=30)
    watch = busd_procs.spawn(
        [sys.executable, "-m", "busd.client.ctl.busctl", "--json", "watch"], name="watch"
    )
    deadline = time.monotonic() + 20
    while '"mark"' not in busd_procs.output(watch):  # until it has subscribed
        assert busctl(busd_procs, "publish", "mark").returncode == 0
        assert time.monotonic() < deadline, "busctl watch never showed a publish"
    assert busctl(busd_procs, "graceful", "--wait").returncode == 0
    busd_sink.collect("start", 2)
    victim = wait_status(busd_procs, lambda d: states(d) == ["STARTED"] * 2)["workers"][0]
    os.kill(victim["pid"], signal.SIGKILL)
    busd_sink.expect("start", where=lambda r: r["worker"] == 0 and r["pid"] != victim["pid"])

    def hooks(channel: str, **match: Any) -> list[dict[str, Any]]:
        return [
            r["info"]
            for r in busd_sink.seen
            if r["event"] == "hook"
            and r["channel"] == channel
            and all(r["info"].get(k) == v for k, v in match.items())
        ]

    deadline = time.monotonic() + 20
    while len(hooks("worker_started")) < 5:
        busd_sink.get("never", timeout=0.05)
        assert time.monotonic() < deadline, "the plugin did not see 5 worker_started"
    deadline = time.monotonic() + 20
    while not hooks("worker_exited", reason="crash"):
        busd_sink.get("never", timeout=0.05)
        assert time.monotonic() < deadline, "the plugin did not see the crash"
    assert busctl(busd_procs, "exit").returncode == 0
    assert busd.wait(15) == 0
    watch.wait(15)
    busd_sink.get("nothing more", timeout=0.5)  # read what the plugin sent last

    assert {r["thread"] for r in busd_sink.seen if r["event"] == "hook"} == {"busd-commands"}
    assert len(hooks("worker_spawned")) == 5
    assert [h["mode"] for h in hooks("reload_begin")] == ["respawn"]
    assert hooks("reload_end") == [{"mode": "respawn", "ok": True, "workers": 2}]
    reloaded = {r["pid"] for r in first}
    assert {h["pid"] for h in hooks("worker_exited", reason="reload")} == reloaded
    crash = hooks("worker_exited", reason="crash")
    assert [(h["pid"], h["signal"], h["exit_status"]) for h in crash] == [
        (victim["pid"], "SIGKILL", None)
    ]
    assert {h["reason"] for h in hooks("worker_exited")} == {"reload", "crash", "stop"}
    events = [
        json.loads(line) for line in busd_procs.output(watch).splitlines() if line.startswith("{")
    ]
    names = {e.get("name") or e.get("event") for e in events if e.get("kind") == "event"}
    assert {
        "worker_spawned",
        "worker_started",
        "worker_exited",
        "reload_begin",
        "reload_end",
    } <= names, names


def test_a_plugin_that_cannot_load_or_fails_is_one_line(busd_procs: Processes) -> None:
    busd = start_busd(busd_procs, "--plugin", "no.such.module:f", f"{T}:steady")
    assert busd.wait(15) == 2
    out = busd_procs.output(busd)
    assert "busd: cannot load --plugin no.such.module:f: No module named 'no'" in out
    busd = start_busd(busd_procs, "--plugin", f"{T}:broken_plugin", f"{T}:steady")
    assert busd.wait(15) == 2
    out = busd_procs.output(busd)
    assert "this plugin is broken" in out
    assert "Traceback" not in out
