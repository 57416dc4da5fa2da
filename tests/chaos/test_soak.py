"""The soak script, for 60 seconds: the same checks as the 30-minute run by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "soak.py"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_soak_for_a_minute_shows_no_growth(tmp_path: Path) -> None:
    summary_file = tmp_path / "soak.json"
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--duration",
            "60",
            "--warmup",
            "10",
            "--reload-every",
            "10",
            "--scale-every",
            "15",
            "--kill-every",
            "10",
            "--json",
            str(summary_file),
        ],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(summary_file.read_text())
    assert summary["failures"] == []
    assert summary["samples"] >= 55
    assert summary["reloads"] >= 5
    assert summary["scales"] >= 3
    assert summary["kills"] >= 4
    assert summary["sent"] > 1000
    assert summary["received"] == summary["sent"]
    # Bursts of 1,000 every second, published at once: they travel in BATCH frames.
    assert summary["bursts"] >= 50
    assert summary["duplicates"] == summary["missed"] == 0
    for series in ("rss", "fds", "threads", "rtt_ms"):
        assert "slope_per_min" in summary[series]
    assert "PASS: no growth" in done.stdout


def test_soak_refuses_a_bad_duration() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--duration", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "must be positive" in done.stderr
    assert "Traceback" not in done.stderr
