"""``busd --config``: a bad file refused at start; ``busctl reload-config`` applying only
the difference, and a broken file on reload changing nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from busd.__main__ import main as busd_main
from busd.testing import PoolFactory
from busd.testing.pool import BusdPool
from busd.testing.procs import Processes
from busd.testing.sink import Sink

TARGET = "tests.integration.pool_targets:reporter"

BEFORE = f"""
[pools.a]
target = "{TARGET}"

[pools.b]
target = "{TARGET}"

[pools.c]
target = "{TARGET}"
workers = 2

[pools.d]
target = "{TARGET}"
"""

AFTER = f"""
[pools.a]
target = "{TARGET}"

[pools.b]
target = "{TARGET}"
env = {{ B_VERSION = "2" }}

[pools.c]
target = "{TARGET}"
workers = 3
flap_limit = 9
backoff = 0.2

[pools.e]
target = "{TARGET}"
after = ["a"]
"""


def busctl(pool: BusdPool, *argv: str) -> subprocess.CompletedProcess[str]:
    """The real busctl against ``pool``, run to its end."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "busd.client.ctl.busctl",
            "--runtime-dir",
            str(pool.runtime_dir),
            *argv,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def pids(status: dict[str, Any]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for row in status["workers"]:
        found.setdefault(row["pool"], []).append(row["pid"])
    return found


def test_reload_config_applies_only_the_difference(
    busd_pool: PoolFactory, busd_sink: Sink, tmp_path: Path
) -> None:
    path = tmp_path / "busd.toml"
    path.write_text(BEFORE)
    pool = busd_pool(None, config=path)
    busd_sink.collect("start", 5, timeout=30)
    before = pids(pool.status())
    path.write_text(AFTER)

    done = busctl(pool, "--timeout", "40", "reload-config", "--wait")

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.splitlines() == [
        "added: e",
        "changed: b (replaced: env)",
        "resized: c 2 -> 3",
        "updated: c (backoff, flap_limit)",
        "removed: d",
        "unchanged: a",
        "started: yes",
    ]
    status = pool.status()
    after = pids(status)
    assert after["a"] == before["a"]  # untouched
    assert after["b"] != before["b"]  # replaced
    assert set(before["c"]) < set(after["c"])  # resized in place: the two kept
    assert len(after["c"]) == 3
    assert "d" not in after
    assert len(after["e"]) == 1
    assert {p["name"] for p in status["pools"]} == {"a", "b", "c", "e"}
    assert all(w["state"] == "STARTED" for w in status["workers"]), status["workers"]
    # The new b and c and e started; the old b and d stopped and exited.
    busd_sink.collect("start", 3, timeout=30)
    gone = busd_sink.collect("exit", 2, timeout=30)
    assert {r["pid"] for r in gone} == {*before["b"], *before["d"]}
    # Whatever a's worker ran came before this publish: it ran no stop listener.
    pool.broadcast("hello", "marker")
    busd_sink.collect("hello", 6, timeout=30)
    assert busd_sink.get("stop", 0.2, where=lambda r: r["pid"] in before["a"]) is None
    assert busd_sink.get("start", 0.2, where=lambda r: r["pid"] in before["a"]) is None
    assert pool.exit() == 0


def test_a_broken_file_on_reload_changes_nothing(
    busd_pool: PoolFactory, busd_sink: Sink, tmp_path: Path
) -> None:
    path = tmp_path / "busd.toml"
    path.write_text(BEFORE)
    pool = busd_pool(None, config=path)
    before = pids(pool.status())
    path.write_text(AFTER + "\n[pools.f]\ntarget = \n")

    done = busctl(pool, "reload-config")

    assert done.returncode == 1, done
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(f"busctl: {path}: line ")
    assert "Traceback" not in done.stderr
    path.write_text(AFTER.replace('after = ["a"]', 'after = ["nope"]'))
    done = busctl(pool, "reload-config", "--wait")
    assert done.returncode == 1, done
    assert done.stderr.splitlines() == [f"busctl: {path}: [pools.e] after: no pool named 'nope'"]
    assert pids(pool.wait_for("STARTED")) == before
    assert busd_sink.get("stop", 0.2) is None


BAD_FILES = {
    "syntax": ("[pools.a]\ntarget = \n", "line 2"),
    "unknown key": (f'[pools.a]\ntarget = "{TARGET}"\nwokers = 2\n', "[pools.a] unknown key"),
    "wrong type": (f'[pools.a]\ntarget = "{TARGET}"\nworkers = "many"\n', "[pools.a] workers"),
    "neither": ("[pools.a]\nworkers = 2\n", "[pools.a]"),
    "both": (f'[pools.a]\ntarget = "{TARGET}"\ncommand = ["true"]\n', "[pools.a]"),
    "after unknown": (f'[pools.a]\ntarget = "{TARGET}"\nafter = ["zz"]\n', "[pools.a] after"),
    "cycle": (
        f'[pools.a]\ntarget = "{TARGET}"\nafter = ["b"]\n'
        f'[pools.b]\ntarget = "{TARGET}"\nafter = ["a"]\n',
        "a cycle",
    ),
    "busd option": ("[busd]\ngraceful_timout = 3\n", "[busd] unknown option"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_every_kind_of_bad_file_at_start_is_one_line_and_exit_2(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text, where = BAD_FILES[kind]
    path = tmp_path / "busd.toml"
    path.write_text(text)
    assert busd_main(["--runtime-dir", str(tmp_path / "run"), "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith(f"busd: {path}: "), line
    assert where in line, line
    assert not (tmp_path / "run").exists()  # nothing made


def test_a_bad_file_at_start_ends_the_busd_command_with_exit_2(
    busd_procs: Processes, tmp_path: Path
) -> None:
    text, where = BAD_FILES["cycle"]
    path = tmp_path / "busd.toml"
    path.write_text(text)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "busd",
            "--runtime-dir",
            str(tmp_path / "run"),
            "--config",
            str(path),
        ],
        capture_output=True,
        text=True,
        env=busd_procs.env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done
    [line] = done.stderr.splitlines()
    assert line.startswith(f"busd: {path}: "), line
    assert where in line, line
    assert not (tmp_path / "run").exists()  # nothing made
