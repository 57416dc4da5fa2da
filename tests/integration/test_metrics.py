"""``busd --metrics``: a real scrape of a pool of 3 with an application counter, parsed by
prometheus_client's own parser; ``busctl metrics``; ``--metrics`` refused without the extra."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from busd.testing import PoolFactory
from busd.testing.pool import BusdPool
from busd.testing.procs import Processes
from tests.integration.test_reload_config import busctl

TARGET = "tests.integration.metrics_targets:main"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int, accept: str = "") -> tuple[Samples, dict[str, str], float]:
    """Every sample by (name, sorted labels), each family's type, and how long it took."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if accept:
        request.add_header("Accept", accept)
    began = time.monotonic()
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
    took = time.monotonic() - began
    samples: Samples = {}
    types = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, types, took


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def hit(pool: BusdPool, times: int) -> None:
    """Publish ``hit`` ``times`` times, the last one waiting for every worker's ack."""
    for n in range(times):
        pool.request("broadcast", None, channel="hit", args=[], kwargs={}, wait=n == times - 1)


@pytest.fixture
def metered(busd_pool: PoolFactory) -> tuple[BusdPool, int]:
    port = free_port()
    pool = busd_pool(TARGET, "--metrics", f"127.0.0.1:{port}", workers=3)
    return pool, port


def test_a_scrape_has_busds_series_and_the_pools_counter(metered: tuple[BusdPool, int]) -> None:
    pool, port = metered
    hit(pool, 5)
    pool.graceful()  # one graceful with every ack: the reload histogram counts it
    samples, types, _ = scrape(port)
    assert value(samples, "app_hits_total", pool="main") == 15
    assert types["app_hits"] == "counter"
    assert value(samples, "busd_state", state="STARTED") == 1
    assert value(samples, "busd_state", state="STOPPED") == 0
    info = [labels for name, labels in samples if name == "busd_info"]
    assert [dict(labels)["name"] for labels in info] == ["busd"]
    assert value(samples, "busd_workers", pool="main", state="STARTED") == 3
    assert value(samples, "busd_clients", role="worker") == 3
    assert value(samples, "busd_commands_total", command="graceful", result="ok") == 1
    assert value(samples, "busd_commands_total", command="broadcast", result="ok") == 5
    assert value(samples, "busd_reload_duration_seconds_count") == 1
    assert value(samples, "busd_relay_messages_total") > 5
    assert ("busd_relay_replayed_total", ()) in samples
    assert ("busd_relay_lost_total", ()) in samples
    assert ("process_cpu_seconds_total", ()) in samples  # the master's own
    for slot in ("0", "1", "2"):
        assert value(samples, "busd_worker_resident_memory_bytes", pool="main", slot=slot) > 0
        assert value(samples, "busd_worker_cpu_seconds_total", pool="main", slot=slot) >= 0
        assert value(samples, "busd_worker_open_fds", pool="main", slot=slot) > 0
        assert value(samples, "busd_worker_uptime_seconds", pool="main", slot=slot) >= 0
        assert value(samples, "app_busy", pool="main", slot=slot) == 1  # a gauge per worker
    assert value(samples, "app_queue", pool="main") == 6  # livesum: summed per pool
    assert value(samples, "busd_scrape_missing_workers") == 0
    assert not [name for name, _ in samples if name.startswith("python_")]


def test_a_pools_counter_never_goes_down_when_a_worker_is_replaced(
    metered: tuple[BusdPool, int],
) -> None:
    pool, port = metered
    hit(pool, 5)
    samples, _, _ = scrape(port)
    assert value(samples, "app_hits_total", pool="main") == 15
    old = pool.kill_worker(0)
    pool.wait_for(lambda s: old not in [w["pid"] for w in s["workers"]] and _all_started(s))
    samples, _, _ = scrape(port)
    assert value(samples, "app_hits_total", pool="main") == 15
    assert value(samples, "busd_worker_restarts_total", pool="main", reason="crash") == 1
    hit(pool, 1)
    samples, _, _ = scrape(port)
    assert value(samples, "app_hits_total", pool="main") == 18


def test_a_scrape_with_a_stopped_worker_returns_within_its_bound(
    metered: tuple[BusdPool, int],
) -> None:
    pool, port = metered
    hit(pool, 2)
    scrape(port)
    [stopped, *_] = pool.pids
    os.kill(stopped, signal.SIGSTOP)
    try:
        samples, _, took = scrape(port)
    finally:
        os.kill(stopped, signal.SIGCONT)
    assert took < 2.0, f"a scrape with a stopped worker took {took:.2f}s"
    assert value(samples, "busd_scrape_missing_workers") == 1
    assert value(samples, "app_hits_total", pool="main") == 6  # its last values stand in


def test_openmetrics_when_the_scraper_asks(metered: tuple[BusdPool, int]) -> None:
    _, port = metered
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    request.add_header("Accept", "application/openmetrics-text; version=1.0.0")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
        assert answer.read().decode().rstrip().endswith("# EOF")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
    assert refused.value.code == 404
    refused.value.close()


def test_busctl_metrics_prints_text_that_parses(metered: tuple[BusdPool, int]) -> None:
    pool, _ = metered
    hit(pool, 1)
    done = busctl(pool, "metrics")
    assert done.returncode == 0, done.stderr
    names = {f.name for f in text_string_to_metric_families(done.stdout)}
    assert {"busd_state", "busd_workers", "app_hits"} <= names
    done = busctl(pool, "--json", "metrics")
    assert done.returncode == 0, done.stderr
    families = {f["name"]: f for f in json.loads(done.stdout)}
    [sample] = families["app_hits"]["samples"][:1]
    assert sample["labels"] == {"pool": "main"}


def test_metrics_without_prometheus_client_is_one_line_and_exit_2(
    busd_procs: Processes, tmp_path: Path
) -> None:
    hidden = tmp_path / "hide" / "prometheus_client"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('not installed here')\n")
    done = subprocess.run(
        [sys.executable, "-m", "busd", "--metrics", "127.0.0.1:9", "-w", "1", TARGET],
        capture_output=True,
        text=True,
        env={**busd_procs.env, "PYTHONPATH": f"{hidden.parent}{os.pathsep}{os.getcwd()}"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done
    [line] = done.stderr.splitlines()
    assert "pip install 'busd[metrics]'" in line


def _all_started(status: dict[str, Any]) -> bool:
    rows = status["workers"]
    return len(rows) == 3 and all(w["state"] == "STARTED" for w in rows)
