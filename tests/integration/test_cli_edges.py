"""The busd command's edges, each with real processes: where TARGET is imported from,
flags named when mistyped, help in groups, no socket left on a failed start,
process titles, plain TCP as bad usage, one log line per state when joined.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq

from busd.core.control import Control
from busd.core.endpoints import CTL_FILE, PUB_FILE
from busd.core.errors import NoMaster
from busd.testing import PoolFactory, Processes, Sink
from tests.integration.test_join import join_argv, make_keys, start_master

TIMEOUT = 20.0
#: The console script, as an operator runs it (it puts its bin dir first on sys.path,
#: not the working directory: ``python -m busd`` would hide what these tests check).
BUSD = str(Path(sys.executable).with_name("busd"))
APP = """
import os
import sys

from busd.testing.probe import Probe


def main(bus):
    with Probe() as probe:
        probe.report("started", cwd=os.getcwd(), path=sys.path,
                     pythonpath=os.environ.get("PYTHONPATH", ""))
"""


def write_app(directory: Path, name: str = "myapp") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.py").write_text(APP)
    return directory


def run_busd(
    argv: list[str], runtime: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BUSD, "--runtime-dir", str(runtime), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def exit_busd(procs: Processes, proc: subprocess.Popen[bytes], runtime: Path) -> None:
    with Control(f"ipc://{runtime}/{CTL_FILE}", TIMEOUT) as control:
        control.request("exit")
    assert proc.wait(TIMEOUT) == 0, procs.output(proc)


def start_app(
    procs: Processes,
    sink: Sink,
    runtime: Path,
    argv: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run the console script in ``cwd``; the first worker's report, then exit busd."""
    proc = procs.spawn([BUSD, "--runtime-dir", str(runtime), *argv], name="busd", cwd=cwd, env=env)
    report = sink.get("started", TIMEOUT)
    if report is None:
        pytest.fail(f"no worker started:\n{procs.output(proc)}")
    exit_busd(procs, proc, runtime)
    return report


# -- where TARGET is imported from -------------------------------------------------


@pytest.mark.parametrize("spawn", ["fork", "exec"])
def test_a_target_beside_the_working_directory_imports(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path, tmp_path: Path, spawn: str
) -> None:
    app = write_app(tmp_path / "app")
    report = start_app(
        busd_procs, busd_sink, busd_dir / "rt", ["--spawn", spawn, "myapp:main"], cwd=app
    )
    assert report["cwd"] == str(app)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_chdir_runs_busd_and_its_workers_there(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path, tmp_path: Path, how: str
) -> None:
    app = write_app(tmp_path / "app")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    flags = ["--chdir", str(app)] if how == "flag" else []
    env = {"BUSD_CHDIR": str(app)} if how == "env" else {}
    report = start_app(
        busd_procs, busd_sink, busd_dir / "rt", [*flags, "myapp:main"], cwd=elsewhere, env=env
    )
    assert report["cwd"] == str(app)


@pytest.mark.parametrize(("spawn", "how"), [("fork", "flag"), ("exec", "flag"), ("fork", "env")])
def test_pythonpath_puts_its_dirs_first_for_busd_and_the_workers(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path, tmp_path: Path, spawn: str, how: str
) -> None:
    lib = write_app(tmp_path / "lib", name="libapp")
    other = tmp_path / "other"
    other.mkdir()
    value = f"{other},lib"  # comma separated; a relative dir is relative to the working dir
    flags = ["--pythonpath", value] if how == "flag" else []
    env = {"BUSD_PYTHONPATH": value} if how == "env" else {}
    report = start_app(
        busd_procs,
        busd_sink,
        busd_dir / "rt",
        [*flags, "--spawn", spawn, "libapp:main"],
        cwd=tmp_path,
        env=env,
    )
    # An exec'd worker has its working dir first (python -m), then PYTHONPATH's.
    path = [p for p in report["path"] if p != str(tmp_path)]
    assert path[:2] == [str(other), str(lib)], report["path"][:4]
    assert report["pythonpath"].split(os.pathsep)[:3] == [str(other), str(lib), str(tmp_path)]


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["--chdir", "/nonexistent/dir"], {}, "--chdir: expected an existing directory"),
        ([], {"BUSD_CHDIR": "/nonexistent/dir"}, "BUSD_CHDIR='/nonexistent/dir'"),
        (
            ["--pythonpath", "lib,/nonexistent/dir"],
            {},
            "--pythonpath: expected an existing directory, not '/nonexistent/dir'",
        ),
        ([], {"BUSD_PYTHONPATH": "nowhere"}, "BUSD_PYTHONPATH='nowhere'"),
    ],
)
def test_a_missing_directory_is_one_line_and_exit_2(
    busd_dir: Path, tmp_path: Path, argv: list[str], env: dict[str, str], named: str
) -> None:
    (tmp_path / "lib").mkdir()
    done = run_busd([*argv, "busd.examples.hello:main"], busd_dir / "rt", env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("busd: "), done.stderr
    assert named in done.stderr, done.stderr
    assert not (busd_dir / "rt").exists()


# -- flags -----------------------------------------------------------------------------


def test_a_mistyped_flag_is_named_as_unknown(busd_dir: Path) -> None:
    done = run_busd(["--wokers", "2", "app:main"], busd_dir / "rt")
    assert done.returncode == 2, done.stderr
    assert done.stderr == "busd: unrecognized option --wokers (did you mean --workers?)\n"
    assert not (busd_dir / "rt").exists()


def test_help_shows_the_options_in_groups(busd_dir: Path) -> None:
    done = run_busd(["--help"], busd_dir / "rt")
    assert done.returncode == 0, done.stderr
    sections: dict[str, str] = {}
    for block in re.split(r"\n(?=\S[^\n]*:\n)", done.stdout):
        title, _, body = block.partition("\n")
        sections[title.rstrip(":")] = body
    expected = {
        "pool": "--workers",
        "reload and recycle": "--max-age",
        "logging": "--log-dir",
        "security": "--curve-secret",
        "hosts": "--join",
        "process": "--chdir",
        "timeouts": "--graceful-timeout",
        "where busd is found": "--runtime-dir",
    }
    for title, flag in expected.items():
        assert flag in sections.get(title, ""), f"{flag} not under {title!r}:\n{done.stdout}"
    assert "--pythonpath" in sections["process"]


# -- no socket left behind ---------------------------------------------------------------

PLUGIN = """
def boom(bus):
    raise RuntimeError("this plugin cannot start")
"""


@pytest.fixture
def silent_master() -> Any:
    """A ROUTER on loopback that never answers: a --join there times out."""
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind("tcp://127.0.0.1:*")
    try:
        yield sock.getsockopt_string(zmq.LAST_ENDPOINT)
    finally:
        sock.close(linger=0)
        ctx.term()


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("plugin missing", 2),
        ("plugin raises", 2),
        ("no such command", 70),
        ("boot fails", 3),
        ("join times out", 70),
    ],
)
def test_no_exit_leaves_the_sockets_behind(
    busd_dir: Path, tmp_path: Path, silent_master: str, case: str, status: int
) -> None:
    (tmp_path / "plug.py").write_text(PLUGIN)
    argv = {
        "plugin missing": ["--plugin", "plug:nope", "busd.examples.hello:main"],
        "plugin raises": ["--plugin", "plug:boom", "busd.examples.hello:main"],
        "no such command": ["--", "no-such-command-here"],
        "boot fails": ["--backoff", "0", "nosuchmodule:main"],
        "join times out": [
            "--join",
            silent_master,
            "--insecure",
            "--startup-timeout",
            "1",
            "busd.examples.hello:main",
        ],
    }[case]
    runtime = busd_dir / "rt"
    done = run_busd(argv, runtime, cwd=tmp_path)
    assert done.returncode == status, done.stderr
    if case != "boot fails":  # that one shows the worker's traceback, once, by design
        assert "Traceback" not in done.stderr
    assert not (runtime / CTL_FILE).exists(), done.stderr
    assert not (runtime / PUB_FILE).exists(), done.stderr
    if case == "plugin missing":
        ping = subprocess.run(
            [sys.executable, "-m", "busd.client.ctl.busctl", "--runtime-dir", str(runtime), "ping"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert ping.returncode == 3
        assert "does not exist" in ping.stderr, ping.stderr


def test_a_forced_exit_leaves_no_socket_behind(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    runtime = busd_dir / "rt"
    proc = busd_procs.spawn(
        [BUSD, "--runtime-dir", str(runtime), "-w", "1", "tests.integration.targets:slow_stop"],
        name="busd",
    )
    busd_sink.expect("start", TIMEOUT)
    proc.send_signal(signal.SIGINT)
    busd_sink.expect("stopping", TIMEOUT)  # the worker hangs in its stop listener
    proc.send_signal(signal.SIGINT)  # the second one forces the exit
    assert proc.wait(TIMEOUT) == 70, busd_procs.output(proc)
    assert not (runtime / CTL_FILE).exists()
    assert not (runtime / PUB_FILE).exists()


# -- process titles ------------------------------------------------------------------------


def idle(bus: Any) -> None:
    """A worker that only follows the bus."""


def cmdline(pid: int) -> list[str]:
    """A process's command line from /proc and from psutil (they must agree)."""
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    from_proc = [part.decode() for part in raw.split(b"\0") if part]
    from_psutil = [part for part in psutil.Process(pid).cmdline() if part]
    assert from_proc == from_psutil
    return from_proc


@pytest.mark.parametrize("spawn", ["fork", "exec"])
def test_ps_tells_master_forkserver_and_workers_apart(busd_pool: PoolFactory, spawn: str) -> None:
    pool = busd_pool(idle, "--name", "titled", "--spawn", spawn, workers=2)
    assert cmdline(pool.proc.pid) == ["busd: master titled"]
    status = pool.status()
    if spawn == "fork":
        assert cmdline(status["forkserver"]["pid"]) == ["busd: forkserver titled"]
    else:
        assert "forkserver" not in status
    titles = sorted(cmdline(w["pid"])[0] for w in status["workers"])
    assert titles == ["busd: worker titled 0", "busd: worker titled 1"]


def test_a_command_worker_keeps_its_own_title(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path, tmp_path: Path
) -> None:
    script = tmp_path / "cmd_worker.py"
    script.write_text(
        textwrap.dedent("""
        from busd.client import connect
        from busd.testing.probe import Probe

        bus = connect()
        with Probe() as probe:
            probe.report("started")
        bus.block()
    """)
    )
    runtime = busd_dir / "rt"
    proc = busd_procs.spawn(
        [
            BUSD,
            "--runtime-dir",
            str(runtime),
            "--name",
            "titled",
            "--",
            sys.executable,
            str(script),
        ],
        name="busd",
    )
    pid = busd_sink.expect("started", TIMEOUT)["pid"]
    assert cmdline(proc.pid) == ["busd: master titled"]
    assert cmdline(pid) == [sys.executable, str(script)]
    exit_busd(busd_procs, proc, runtime)


# -- plain TCP, and a joined busd's log ------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--bind", "tcp://192.0.2.1:5555"], {}),
        ([], {"BUSD_BIND": "tcp://192.0.2.1:5555"}),
    ],
)
def test_plain_tcp_off_loopback_is_bad_usage(
    busd_dir: Path, argv: list[str], env: dict[str, str]
) -> None:
    # 192.0.2.1 (TEST-NET-1) is refused before any socket exists: nothing is ever sent.
    done = run_busd([*argv, "busd.examples.hello:main"], busd_dir / "rt", env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("busd: --bind tcp://192.0.2.1:5555: plain TCP "), done.stderr
    assert "--insecure" in done.stderr
    assert not (busd_dir / "rt").exists()


def test_a_joined_busd_logs_each_state_once(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path)
    runtime, ctl = start_master(busd_procs, busd_dir, keys)
    host = busd_procs.spawn(join_argv(busd_dir, ctl, keys, workers=1), name="host")
    busd_sink.expect("start", TIMEOUT)
    with Control(f"ipc://{runtime}/{CTL_FILE}", TIMEOUT) as control:
        try:
            control.request("exit")
        except NoMaster:
            pytest.fail("the master did not answer")
    assert host.wait(TIMEOUT) == 0, busd_procs.output(host)
    text = busd_procs.output(host)
    own = [line for line in text.splitlines() if re.search(r" busd \[\d+\] ", line)]
    for state in ("STARTING", "STARTED", "EXITING", "EXITED"):
        lines = [line for line in own if line.endswith(f"busd: Bus {state}")]
        assert len(lines) == 1, f"Bus {state} logged {len(lines)} times:\n{text}"
