"""deploy/supervisor.conf run by the real supervisord (from PyPI), with a real busd pool.

The program section is the file's own, with only the command's paths and
TARGET pointed at this checkout, as an installer would edit them.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from busd.testing import Processes, Sink
from tests.integration.test_daemon import gone

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SUPERVISORD = shutil.which("supervisord", path=str(BIN)) or shutil.which("supervisord")
SUPERVISORCTL = shutil.which("supervisorctl", path=str(BIN)) or shutil.which("supervisorctl")
WORKERS = 4

pytestmark = pytest.mark.skipif(
    SUPERVISORD is None or SUPERVISORCTL is None,
    reason="supervisor is not installed (it is in busd[test]: pip install -e '.[test]')",
)


def program_section() -> dict[str, str]:
    parser = configparser.RawConfigParser()
    parser.read(ROOT / "deploy" / "supervisor.conf")
    program = dict(parser["program:app"])
    command = program["command"]
    assert command.startswith("/opt/app/.venv/bin/busd "), command
    program["command"] = (
        command.replace("/opt/app/.venv/bin/busd", f"{sys.executable} -m busd")
        .replace(" -w 4 ", f" -w {WORKERS} ")
        .replace("app.wsgi:main", "tests.integration.targets:main")
    )
    return program


def write_config(directory: Path, logs: Path, program: dict[str, str] | None = None) -> Path:
    sock = directory / "supervisor.sock"
    lines = [
        "[unix_http_server]",
        f"file={sock}",
        "[supervisord]",
        "nodaemon=true",
        f"logfile={logs / 'supervisord.log'}",
        f"pidfile={directory / 'supervisord.pid'}",
        f"childlogdir={logs}",
        "loglevel=info",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "[supervisorctl]",
        f"serverurl=unix://{sock}",
        "[program:app]",
        *(f"{k}={v}" for k, v in (program or program_section()).items()),
        f"stdout_logfile={logs / 'app.log'}",
    ]
    path = directory / "supervisord.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def ctl(config: Path, procs: Processes, *args: str) -> subprocess.CompletedProcess[str]:
    assert SUPERVISORCTL is not None
    return subprocess.run(
        [SUPERVISORCTL, "-c", str(config), *args],
        capture_output=True,
        text=True,
        env=procs.env,
        timeout=60,
        check=False,
    )


def busd_pid(config: Path, procs: Processes) -> int:
    done = ctl(config, procs, "pid", "app")
    assert done.stdout.strip().isdigit(), done.stdout + done.stderr
    return int(done.stdout)


def test_supervisord_runs_reloads_restarts_and_stops_busd(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path, tmp_path: Path
) -> None:
    config = write_config(busd_dir, tmp_path)
    assert SUPERVISORD is not None
    supervisord = busd_procs.spawn([SUPERVISORD, "-c", str(config)], name="supervisord")
    first = {r["pid"] for r in busd_sink.collect("start", WORKERS, timeout=60)}
    master = busd_pid(config, busd_procs)
    assert first <= {p.pid for p in psutil.Process(master).children(recursive=True)}

    # supervisorctl signal HUP: busd's graceful reaches every worker.
    done = ctl(config, busd_procs, "signal", "HUP", "app")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {r["pid"] for r in busd_sink.collect("graceful", WORKERS, timeout=30)} == first

    # busd SIGKILLed: its workers go with it, supervisord starts a new busd.
    os.kill(master, signal.SIGKILL)
    assert gone(list(first), 15), "workers of the killed busd are still running"
    second = {r["pid"] for r in busd_sink.collect("start", WORKERS, timeout=60)}
    assert not second & first
    restarted = busd_pid(config, busd_procs)
    assert restarted != master
    assert second <= {p.pid for p in psutil.Process(restarted).children(recursive=True)}

    # supervisorctl stop: busd exits its workers and itself; nothing is left.
    done = ctl(config, busd_procs, "stop", "app")
    assert done.returncode == 0, done.stdout + done.stderr
    busd_sink.collect("exit", WORKERS, timeout=30)
    assert gone([restarted, *second], 15), "supervisorctl stop left processes"
    assert psutil.Process(supervisord.pid).children(recursive=True) == []
    done = ctl(config, busd_procs, "shutdown")
    assert done.returncode == 0, done.stdout + done.stderr
    assert supervisord.wait(30) == 0


def pools_config(directory: Path, logs: Path) -> Path:
    """deploy/supervisor-pools.conf's program, running deploy/busd.toml (its ports made free)."""
    ports = [free_port(), free_port()]
    toml = (ROOT / "deploy" / "busd.toml").read_text()
    toml = toml.replace("127.0.0.1:8000", f"127.0.0.1:{ports[0]}")
    toml = toml.replace("127.0.0.1:8001", f"127.0.0.1:{ports[1]}").replace(
        '"8001"', f'"{ports[1]}"'
    )
    (directory / "busd.toml").write_text(toml)
    parser = configparser.RawConfigParser()
    parser.read(ROOT / "deploy" / "supervisor-pools.conf")
    program = dict(parser["program:app"])
    assert program["command"] == "/opt/app/.venv/bin/busd --config /opt/app/busd.toml"
    program["command"] = f"{sys.executable} -m busd --config {directory / 'busd.toml'}"
    path = write_config(directory, logs, program)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_supervisord_runs_the_config_of_several_pools(
    busd_procs: Processes, busd_dir: Path, tmp_path: Path
) -> None:
    config = pools_config(busd_dir, tmp_path)
    assert SUPERVISORD is not None
    supervisord = busd_procs.spawn([SUPERVISORD, "-c", str(config)], name="supervisord")
    done = busctl(busd_procs, "--timeout", "60", "wait")
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads(busctl(busd_procs, "--json", "status").stdout)
    assert [p["name"] for p in status["pools"]] == ["web", "files", "jobs"]
    assert sorted(w["pool"] for w in status["workers"]) == ["files", "jobs", "jobs", "web", "web"]
    assert all(w["state"] == "STARTED" for w in status["workers"]), status["workers"]
    master = busd_pid(config, busd_procs)
    workers = [w["pid"] for w in status["workers"]]
    assert set(workers) <= {p.pid for p in psutil.Process(master).children(recursive=True)}

    done = ctl(config, busd_procs, "stop", "app")
    assert done.returncode == 0, done.stdout + done.stderr
    assert gone([master, *workers], 15), "supervisorctl stop left processes"
    assert psutil.Process(supervisord.pid).children(recursive=True) == []
    done = ctl(config, busd_procs, "shutdown")
    assert done.returncode == 0, done.stdout + done.stderr
    assert supervisord.wait(30) == 0


def busctl(procs: Processes, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "busd.client.ctl.busctl", *args],
        capture_output=True,
        text=True,
        env=procs.env,
        timeout=90,
        check=False,
    )
