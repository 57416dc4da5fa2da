"""What a worker reports of its prometheus_client registry (busd.client.metrics).

Each check runs in a fresh interpreter, so whether prometheus_client is
imported is the script's doing, not this test process's; the script prints
the report packed with ``busd.core.wire.pack`` (so it is msgpack data), and
the test unpacks it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import msgpack
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

APPLICATION = """
import prometheus_client as p

hits = p.Counter("hits", "Hits.", ["path"])
hits.labels("/").inc(3)
hits.labels("/a").inc()
queue = p.Gauge("queue", "Queue.", multiprocess_mode="livesum")
queue.set(4)
plain = p.Gauge("plain", "A gauge of no mode.")
plain.set(1)
latency = p.Histogram("latency_seconds", "Latency.", buckets=(0.1, 1.0))
latency.observe(0.5)
size = p.Summary("size_bytes", "Size.")
size.observe(10)
size.observe(20)
build = p.Info("build", "Build.")
build.info({"version": "1.2"})
"""


def report_of(script: str) -> dict[str, Any]:
    """``report()`` as a fresh interpreter running ``script`` first returns it."""
    code = textwrap.dedent(script) + textwrap.dedent(
        """
        import sys
        from busd.client.metrics import report
        from busd.core.wire import pack
        sys.stdout.buffer.write(pack(report()))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=60,
        start_new_session=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    data: dict[str, Any] = msgpack.unpackb(result.stdout, raw=False)
    return data


def by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {family["name"]: family for family in data["families"]}


def test_without_prometheus_client_imported_nothing_is_reported_nor_imported() -> None:
    data = report_of(
        """
        import sys
        import busd.client.metrics
        assert busd.client.metrics.report() == {"families": []}
        assert "prometheus_client" not in sys.modules
        """
    )

    assert data == {"families": []}


def test_the_registry_is_reported_as_plain_data() -> None:
    pytest.importorskip("prometheus_client")

    families = by_name(report_of(APPLICATION))

    assert set(families) == {"hits", "queue", "plain", "latency_seconds", "size_bytes", "build"}
    assert families["hits"] == {
        "name": "hits",
        "type": "counter",
        "help": "Hits.",
        "samples": [["hits_total", {"path": "/"}, 3.0], ["hits_total", {"path": "/a"}, 1.0]],
    }
    assert families["queue"] == {
        "name": "queue",
        "type": "gauge",
        "help": "Queue.",
        "mode": "livesum",
        "samples": [["queue", {}, 4.0]],
    }
    assert families["plain"]["mode"] == "all"
    assert families["latency_seconds"]["type"] == "histogram"
    assert families["latency_seconds"]["samples"] == [
        ["latency_seconds_bucket", {"le": "0.1"}, 0.0],
        ["latency_seconds_bucket", {"le": "1.0"}, 1.0],
        ["latency_seconds_bucket", {"le": "+Inf"}, 1.0],
        ["latency_seconds_count", {}, 1.0],
        ["latency_seconds_sum", {}, 0.5],
    ]
    assert families["size_bytes"]["type"] == "summary"
    assert families["size_bytes"]["samples"] == [
        ["size_bytes_count", {}, 2.0],
        ["size_bytes_sum", {}, 30.0],
    ]
    assert families["build"]["type"] == "info"
    assert families["build"]["samples"] == [["build_info", {"version": "1.2"}, 1.0]]


def test_a_report_the_master_holds_is_answered_as_the_same() -> None:
    pytest.importorskip("prometheus_client")
    data = report_of(
        APPLICATION
        + """
import os
from busd.client.metrics import report

first = report()
mine = {str(os.getpid()): first["digest"]}
assert report(mine) == {"same": first["digest"]}, "unchanged: the same"
assert "families" in report({str(os.getpid() + 1): first["digest"]}), "another pid's"
assert "families" in report({"x": 1}) and "families" in report("garbled")
hits.labels("/").inc()
changed = report(mine)
assert changed["digest"] != first["digest"], "a count changed: a new digest"
assert {f["name"] for f in changed["families"]} == {f["name"] for f in first["families"]}
"""
    )
    assert len(data["digest"]) == 16
    int(data["digest"], 16)


def test_default_collectors_and_created_samples_are_left_out() -> None:
    pytest.importorskip("prometheus_client")

    data = report_of(
        APPLICATION
        + """
import sys
import prometheus_client as p
names = {m.name for m in p.REGISTRY.collect()}
assert any(n.startswith("process_") for n in names) or sys.platform != "linux", names
assert any(n.startswith("python_") for n in names), names
assert any(s.name.endswith("_created") for m in p.REGISTRY.collect() for s in m.samples)
"""
    )

    names = [family["name"] for family in data["families"]]
    samples = [sample[0] for family in data["families"] for sample in family["samples"]]
    assert names
    assert not [n for n in names if n.startswith(("process_", "python_"))]
    assert not [s for s in samples if s.endswith("_created")]


def test_a_failing_collector_is_left_out_and_the_rest_reported() -> None:
    pytest.importorskip("prometheus_client")

    data = report_of(
        """
        import prometheus_client as p
        from prometheus_client.core import GaugeMetricFamily

        class Broken:
            def describe(self):
                return [GaugeMetricFamily("broken", "Broken.")]
            def collect(self):
                raise RuntimeError("this collector fails")

        p.Counter("before", "Before.").inc()
        p.REGISTRY.register(Broken())
        p.Counter("after", "After.").inc(2)
        """
    )

    families = by_name(data)
    assert set(families) == {"before", "after"}
    assert families["after"]["samples"] == [["after_total", {}, 2.0]]
