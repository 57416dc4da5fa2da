"""deploy/Containerfile: its instructions parse, and its health check and command are busd's.

No container runtime is needed: the file is read the way a builder reads it
(instructions, line continuations, exec-form JSON), the CMD's arguments go
through busd's own parser, and the HEALTHCHECK's command is run against a
real busd and against none.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from busd.__main__ import parse
from busd.testing import Processes, Sink
from busd.testing.pool import BusdPool
from busd.testing.probe import Probe

ROOT = Path(__file__).resolve().parents[2]
INSTRUCTIONS = {
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line; comments and blank lines dropped."""
    found, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical, pending = (pending + line).strip(), ""
        keyword, _, args = logical.partition(" ")
        found.append((keyword.upper(), args.strip()))
    assert not pending, "the file ends inside a line continuation"
    return found


def one(parsed: list[tuple[str, str]], keyword: str) -> str:
    values = [args for kw, args in parsed if kw == keyword]
    assert len(values) == 1, f"{keyword}: {values}"
    return values[0]


@pytest.fixture(scope="module")
def parsed() -> list[tuple[str, str]]:
    return instructions((ROOT / "deploy" / "Containerfile").read_text())


def test_every_instruction_is_known(parsed: list[tuple[str, str]]) -> None:
    assert parsed[0][0] == "FROM"
    unknown = [kw for kw, _ in parsed if kw not in INSTRUCTIONS]
    assert not unknown
    assert all(args for _, args in parsed), "an instruction without arguments"


def test_stop_signal_is_busds_exit(parsed: list[tuple[str, str]]) -> None:
    stop = one(parsed, "STOPSIGNAL")
    assert signal.Signals[stop] is signal.SIGTERM  # busd: SIGTERM is `busctl exit`


def test_busd_is_the_main_process(parsed: list[tuple[str, str]]) -> None:
    assert not [kw for kw, _ in parsed if kw == "ENTRYPOINT"], "nothing may wrap busd"
    cmd = json.loads(one(parsed, "CMD"))  # exec form: no shell between PID 1 and busd
    assert isinstance(cmd, list)
    assert Path(cmd[0]).name == "busd"
    opts, command = parse(cmd[1:])
    assert opts.target == "busd.examples.http:main"
    assert opts.listen == ["tcp:0.0.0.0:8000"]
    assert not command
    env = shlex.split(one(parsed, "ENV"))
    settings = dict(item.split("=", 1) for item in env)
    assert float(settings["BUSD_GRACEFUL_TIMEOUT"]) < 10, "docker stop kills after 10 s"


def health_command(parsed: list[tuple[str, str]]) -> str:
    check = one(parsed, "HEALTHCHECK")
    options, _, command = check.partition(" CMD ")
    assert all(o.startswith("--") for o in options.split()), options
    return command


def test_health_check_pings_busd(
    parsed: list[tuple[str, str]], busd_pool: object, busd_dir: Path
) -> None:
    command = health_command(parsed)
    assert "busctl" in command
    assert " ping" in command
    # Run it as the image would (sh -c), with this checkout's busctl.
    local = command.replace("/venv/bin/busctl", f"{sys.executable} -m busd.client.ctl.busctl")
    env = {"PATH": "/usr/bin:/bin", "BUSD_RUNTIME_DIR": str(busd_dir / "none")}
    # No busd: the same command, told to give up sooner than the image's 3 s.
    quick = local.replace("--timeout 3", "--timeout 0.5")
    assert quick != local
    down = subprocess.run(
        ["sh", "-c", quick], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert down.returncode == 1, "a health check must say 1 (unhealthy) with no busd"
    pool: BusdPool = busd_pool(None)  # type: ignore[operator]
    env["BUSD_RUNTIME_DIR"] = str(pool.runtime_dir)
    up = subprocess.run(
        ["sh", "-c", local], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert up.returncode == 0, up.stdout + up.stderr


UNSHARE = shutil.which("unshare")


def orphan_maker(bus: Any) -> None:
    """A worker that leaves a process behind: started by a shell that is gone at once."""
    subprocess.run(["sh", "-c", "sleep 60 > /dev/null 2>&1 &"], check=True)
    with Probe() as probe:
        probe.report("orphaned")


@pytest.mark.skipif(UNSHARE is None, reason="no unshare(1) to make a PID namespace")
def test_busd_as_pid_1_leaves_no_zombie(busd_procs: Processes, busd_sink: Sink) -> None:
    assert UNSHARE is not None
    namespace = [UNSHARE, "--pid", "--fork", "--mount-proc"]
    tried = subprocess.run(
        [*namespace, "true"], capture_output=True, text=True, timeout=30, check=False
    )
    if tried.returncode != 0:
        pytest.skip(f"this machine cannot make a PID namespace: {tried.stderr.strip()}")
    outer = busd_procs.spawn(
        [
            *namespace,
            sys.executable,
            "-m",
            "busd",
            "--heartbeat",
            "0.2",
            "-w",
            "1",
            f"{__name__}:orphan_maker",
        ],
        name="busd",
    )
    busd_sink.expect("orphaned", timeout=30)
    (busd,) = psutil.Process(outer.pid).children()  # PID 1 of the namespace
    orphans = [p for p in busd.children(recursive=True) if p.cmdline()[:2] == ["sleep", "60"]]
    assert len(orphans) == 1, busd_procs.output(outer)
    orphan = orphans[0]
    assert orphan.ppid() != busd.pid, "the orphan went to busd (PID 1), which does not reap it"
    orphan.terminate()
    orphan.wait(10)  # a zombie still exists: this returns only once it was reaped
    done = subprocess.run(
        [sys.executable, "-m", "busd.client.ctl.busctl", "exit"],
        env=busd_procs.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert outer.wait(30) == 0
