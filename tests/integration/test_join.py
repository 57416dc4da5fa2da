"""``busd --join`` on loopback: what needs no second network namespace.

A master with a tcp+CURVE endpoint on 127.0.0.1 (a port the kernel picks;
the joined busd learns the PUB port from the master's status) and a joined
busd with 2 workers, both real commands.  Readiness is a ping that answers
and the workers' probe reports; every wait is bounded.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from busd.client.ctl.busctl import main as busctl
from busd.client.ctl.keygen import write_key_pair
from busd.core.control import Control
from busd.core.errors import NoMaster
from busd.testing import Processes, Sink

TIMEOUT = 20.0
TARGET = "tests.integration.join_targets:main"
POOL_TARGET = "tests.integration.pool_targets:reporter"


def make_keys(root: Path) -> dict[str, Path]:
    paths = {}
    for name in ("server", "host", "stranger"):
        paths[name], paths[f"{name}_secret"] = write_key_pair(root, name)
    authorized = root / "authorized"
    authorized.mkdir(mode=0o700)
    shutil.copy(paths["host"], authorized)
    paths["authorized"] = authorized
    return paths


def busd(runtime: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "busd",
        "--runtime-dir",
        str(runtime),
        "--heartbeat",
        "0.3",
        *args,
    ]


def start_master(
    procs: Processes, base: Path, keys: dict[str, Path], *extra: str
) -> tuple[Path, str]:
    runtime = base / "m"
    proc = procs.spawn(
        busd(
            runtime,
            "--bind",
            "tcp://127.0.0.1:*",
            "--curve-secret",
            str(keys["server_secret"]),
            "--authorized-keys",
            str(keys["authorized"]),
            *extra,
        ),
        name="master",
    )
    with Control(f"ipc://{runtime}/ctl.sock", TIMEOUT) as control:
        try:
            status = control.request("status")
        except NoMaster:
            pytest.fail(f"the master did not start: {procs.output(proc)}")
    ctl = next(e for e in status["endpoints"]["ctl"] if e.startswith("tcp://"))
    return runtime, ctl


def join_argv(
    base: Path, ctl: str, keys: dict[str, Path], secret: str = "host_secret", workers: int = 2
) -> list[str]:
    return busd(
        base / "h",
        "--join",
        ctl,
        "--server-key",
        str(keys["server"]),
        "--curve-secret",
        str(keys[secret]),
        "-w",
        str(workers),
        TARGET,
    )


def graceful_wait(runtime: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``busctl graceful --wait`` on the master: every ack in time."""
    capsys.readouterr()
    code = busctl(["--runtime-dir", str(runtime), "--timeout", str(TIMEOUT), "graceful", "--wait"])
    _, err = capsys.readouterr()
    assert code == 0, err


def test_a_master_that_respawns_its_workers_still_reloads_the_joined_ones(
    busd_procs: Processes,
    busd_sink: Sink,
    busd_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = make_keys(tmp_path)
    runtime, ctl = start_master(busd_procs, busd_dir, keys, "--reload", "respawn")
    host = busd_procs.spawn(join_argv(busd_dir, ctl, keys), name="host")
    pids = sorted(r["pid"] for r in busd_sink.collect("start", 2, TIMEOUT))

    graceful_wait(runtime, capsys)
    assert sorted(r["pid"] for r in busd_sink.collect("graceful", 2, TIMEOUT)) == pids

    code = busctl(["--runtime-dir", str(runtime), "exit"])
    assert code == 0
    assert sorted(r["pid"] for r in busd_sink.collect("exit", 2, TIMEOUT)) == pids
    assert host.wait(TIMEOUT) == 0, busd_procs.output(host)


def test_a_joined_busd_runs_several_pools_from_a_config_file(
    busd_procs: Processes,
    busd_sink: Sink,
    busd_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--join with --config: the joined busd's pools start in ``after`` order, the
    master's graceful reaches every one of their workers, and its exit stops them in
    reverse order."""
    keys = make_keys(tmp_path)
    runtime, ctl = start_master(busd_procs, busd_dir, keys)
    config = tmp_path / "joined.toml"
    config.write_text(
        f"""
[busd]
join = "{ctl}"
server_key = "{keys["server"]}"
curve_secret = "{keys["host_secret"]}"

[pools.web]
target = "{POOL_TARGET}"
workers = 2

[pools.jobs]
target = "{POOL_TARGET}"
after = ["web"]
"""
    )
    host = busd_procs.spawn(busd(busd_dir / "h", "--config", str(config)), name="host")
    starts = busd_sink.collect("start", 3, TIMEOUT)
    web = [r for r in starts if r["pool"] == "web"]
    [jobs] = [r for r in starts if r["pool"] == "jobs"]
    assert len(web) == 2, starts
    assert max(r["at"] for r in web) < jobs["at"]

    graceful_wait(runtime, capsys)
    reloaded = busd_sink.collect("graceful", 3, TIMEOUT)
    assert sorted(r["pid"] for r in reloaded) == sorted(r["pid"] for r in starts)

    assert busctl(["--runtime-dir", str(runtime), "exit"]) == 0
    stops = busd_sink.collect("stop", 3, TIMEOUT)
    exits = busd_sink.collect("exit", 3, TIMEOUT)
    [jobs_exit] = [r for r in exits if r["pool"] == "jobs"]
    assert jobs_exit["at"] < min(r["at"] for r in stops if r["pool"] == "web")
    assert host.wait(TIMEOUT) == 0, busd_procs.output(host)


def test_a_joined_busd_with_a_refused_key_says_so_and_exits(
    busd_procs: Processes, busd_dir: Path, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path)
    _, ctl = start_master(busd_procs, busd_dir, keys)
    done = subprocess.run(
        join_argv(busd_dir, ctl, keys, secret="stranger_secret"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode != 0
    assert "the master refused the key" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--join", "ipc:///tmp/x"], "--join is tcp://HOST:PORT"),
        (["--join", "tcp://127.0.0.1:*"], "--join is tcp://HOST:PORT"),
        (["--wait-for-master"], "--wait-for-master goes with --join"),
    ],
)
def test_bad_join_flags_are_usage_errors(busd_dir: Path, args: list[str], expected: str) -> None:
    done = subprocess.run(
        busd(busd_dir / "x", *args, TARGET),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 2
    assert expected in done.stderr
