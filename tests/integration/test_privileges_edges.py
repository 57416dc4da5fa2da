"""``--user`` for the whole pool, plain TCP only with ``--insecure``, names that stay put.

- ``busd --user U`` (run as root) switches before it makes anything another
  process could inherit: the master, the fork server and every worker run
  as U (``--spawn fork`` and ``--spawn exec``), in U's default runtime dir;
  busctl works as U, and as root naming the dir.
- Plain TCP, loopback included, needs ``--insecure`` (``busd --bind``,
  ``busd --join``, ``MasterBus(bind=...)``): another local user could
  otherwise command busd.
- ``--name``/``BUSD_NAME`` is a plain file name, checked before anything is made.

Other users are made for the test (tests/integration/accounts.py) and
removed after it.  Waits are bounded: a reply, a status, a process's end.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from busd.core.control import Control
from busd.core.endpoints import EndpointError
from busd.core.errors import NoMaster
from busd.master.bus import MasterBus
from busd.testing import SOURCE_ROOT, Processes, Sink
from busd.testing.pool import BusdPool, PoolLog
from tests.integration.accounts import as_user, check_reachable, made_user, reachable

TIMEOUT = 20.0
TARGET = "busd.examples.hello:main"
BUSCTL = [sys.executable, "-m", "busd.client.ctl.busctl"]


@pytest.fixture
def local_user() -> Iterator[pwd.struct_passwd]:
    """Another local user, made for this test and removed after it."""
    with made_user() as user:
        yield user


def open_dir(prefix: str) -> Path:
    """A root-owned dir under /tmp that everyone may enter but only root may write."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def answering_dir(procs: Processes, proc: subprocess.Popen[bytes], dirs: list[Path]) -> Path:
    """The one of ``dirs`` where busd answers a ping (fail if it exits or stays silent)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        for directory in dirs:
            if proc.poll() is not None:
                pytest.fail(f"busd exited with status {proc.returncode}: {procs.output(proc)}")
            with Control(f"ipc://{directory}/ctl.sock", 0.1) as control:
                try:
                    control.request("ping")
                except NoMaster:
                    continue
                return directory
    pytest.fail(f"busd answered in none of {dirs} within {TIMEOUT}s: {procs.output(proc)}")


def this_busd() -> dict[str, str]:
    """The environment for a busd command run here: this busd, whatever the working dir."""
    return {**os.environ, "PYTHONPATH": SOURCE_ROOT}


def one_line(text: str) -> str:
    assert text.count("\n") == 1, text
    assert "Traceback" not in text
    return text


def groups_of(pid: int) -> list[int]:
    """The supplementary groups of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Groups:"):
            return [int(g) for g in line.split()[1:]]
    raise AssertionError(f"no Groups line for {pid}")


def title(proc: psutil.Process) -> str:
    """A process's title (busd sets its own: "busd: worker NAME SLOT")."""
    return " ".join(part for part in proc.cmdline() if part)


def tree(proc_pid: int) -> list[psutil.Process]:
    """busd and every process under it."""
    busd = psutil.Process(proc_pid)
    return [busd, *busd.children(recursive=True)]


# -- --user: every process of the pool -------------------------------------------------


@pytest.mark.parametrize("spawn", ["fork", "exec"])
def test_user_applies_to_the_master_the_fork_server_and_every_worker(
    local_user: pwd.struct_passwd, busd_procs: Processes, busd_dir: Path, spawn: str
) -> None:
    user = local_user
    env = {
        "BUSD_RUNTIME_DIR": "",
        "BUSD_PROBE": "",
        # root's: busd must not keep it for the new user (it could not use it)
        "XDG_RUNTIME_DIR": str(busd_dir),
    }
    check_reachable(user, {**busd_procs.env, **env})
    name = f"priv-{uuid.uuid4().hex[:8]}"
    logs = open_dir("btlog")
    pidfile = logs / "busd.pid"
    log_dir = logs / "logs"
    proc = busd_procs.spawn(
        reachable(
            [
                sys.executable,
                "-m",
                "busd",
                "--user",
                user.pw_name,
                "--name",
                name,
                "--heartbeat",
                "0.2",
                "--spawn",
                spawn,
                "-w",
                "2",
                "--pidfile",
                str(pidfile),
                "--log-dir",
                str(log_dir),
                TARGET,
            ]
        ),
        name="busd",
        env=env,
        cwd="/",
    )
    runtime = Path(f"/tmp/busd-{user.pw_uid}/{name}")
    # Where a busd that kept root's dir would be (root's XDG_RUNTIME_DIR first).
    roots = busd_dir / "busd" / name
    found = answering_dir(busd_procs, proc, [runtime, roots])
    pool = BusdPool(
        proc,
        found,
        PoolLog(proc.log_path, log_dir, name),  # type: ignore[attr-defined]
        2,
        TIMEOUT,
    )
    try:
        status = pool.wait_for("STARTED")

        ids = {(p.pid, title(p)): (tuple(p.uids()), tuple(p.gids())) for p in tree(proc.pid)}
        mine = ((user.pw_uid,) * 3, (user.pw_gid,) * 3)
        assert all(both == mine for both in ids.values()), ids
        titles = [title for _, title in ids]
        assert titles.count(f"busd: worker {name} 0") == 1, titles
        assert titles.count(f"busd: worker {name} 1") == 1, titles
        assert (f"busd: forkserver {name}" in titles) == (spawn == "fork"), titles
        assert {w["pid"] for w in status["workers"]} <= {pid for pid, _ in ids}
        assert all(groups_of(pid) == [] for pid, _ in ids), "root's groups were kept"

        assert found == runtime  # U's default dir, not root's XDG_RUNTIME_DIR's
        info = runtime.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (user.pw_uid, 0o700)
        assert pidfile.read_text() == f"{proc.pid}\n"
        assert pidfile.stat().st_uid == 0  # written as root, before the switch
        for path in (log_dir, log_dir / f"{name}.log", log_dir / f"{name}-worker-0.log"):
            assert path.stat().st_uid == user.pw_uid, path

        # busctl as that user finds the dir by default; root names it.
        done = subprocess.run(
            as_user(
                [*BUSCTL, "--name", name, "--timeout", str(TIMEOUT), "graceful", "--wait"], user
            ),
            capture_output=True,
            text=True,
            timeout=TIMEOUT + 30,
            check=False,
            env={**busd_procs.env, **env, "XDG_RUNTIME_DIR": ""},
            cwd="/",
        )
        assert done.returncode == 0, done.stderr
        assert "2 clients acked" in done.stdout, done.stdout
        done = subprocess.run(
            [*BUSCTL, "--runtime-dir", str(runtime), "--timeout", str(TIMEOUT), "exit", "--wait"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT + 30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert proc.wait(TIMEOUT) == 0, pool.log.everything()
        text = "\n".join(
            [busd_procs.output(proc), pool.log.everything(), (log_dir / f"{name}.log").read_text()]
        )
        assert "cannot rebind" not in text, text
        assert "Traceback" not in text, text
        assert f"PID file {pidfile} left" in text, text
    finally:
        pool.close()
        shutil.rmtree(logs, ignore_errors=True)
        shutil.rmtree(roots, ignore_errors=True)


def test_user_with_a_runtime_dir_the_user_cannot_use_is_one_line(
    local_user: pwd.struct_passwd, busd_procs: Processes, busd_dir: Path
) -> None:
    check_reachable(local_user, busd_procs.env)
    runtime = busd_dir / "rt"  # under root's 0700 dir
    done = subprocess.run(
        reachable(
            [
                sys.executable,
                "-m",
                "busd",
                "--user",
                local_user.pw_name,
                "--runtime-dir",
                str(runtime),
                "-w",
                "1",
                TARGET,
            ]
        ),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env=busd_procs.env,
        cwd="/",
    )
    assert done.returncode != 0
    assert str(runtime) in one_line(done.stderr)
    assert not runtime.exists()


def test_user_with_a_runtime_dir_of_that_user_serves_root_naming_it(
    local_user: pwd.struct_passwd, busd_procs: Processes
) -> None:
    check_reachable(local_user, busd_procs.env)
    base = open_dir("btrt")
    runtime = base / "rt"
    runtime.mkdir(mode=0o700)
    os.chown(runtime, local_user.pw_uid, local_user.pw_gid)
    try:
        proc = busd_procs.spawn(
            reachable(
                [
                    sys.executable,
                    "-m",
                    "busd",
                    "--user",
                    local_user.pw_name,
                    "--runtime-dir",
                    str(runtime),
                    "--heartbeat",
                    "0.2",
                    "-w",
                    "1",
                    "--spawn",
                    "exec",
                    TARGET,
                ]
            ),
            name="busd",
            env={"BUSD_PROBE": ""},
            cwd="/",
        )
        pool = BusdPool(
            proc,
            runtime,
            PoolLog(proc.log_path),
            1,  # type: ignore[attr-defined]
            TIMEOUT,
        )
        try:
            pool.wait_answering()
            pool.wait_for("STARTED")
            assert {p.uids().effective for p in tree(proc.pid)} == {local_user.pw_uid}
            assert pool.exit() == 0
            assert "cannot rebind" not in busd_procs.output(proc)
        finally:
            pool.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_only_root_may_switch_user(local_user: pwd.struct_passwd, busd_procs: Processes) -> None:
    check_reachable(local_user, busd_procs.env)
    done = subprocess.run(
        as_user([sys.executable, "-m", "busd", "--user", "root", TARGET], local_user),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env=busd_procs.env,
        cwd="/",
    )
    assert done.returncode == 2, done.stderr
    assert one_line(done.stderr).startswith("busd: --user: only root may switch")
    assert not Path(f"/tmp/busd-{local_user.pw_uid}").exists()


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--user", "busd-no-such-user"], {}, "busd: --user: no user 'busd-no-such-user'"),
        (
            [],
            {"BUSD_GROUP": "busd-no-such-group"},
            "busd: BUSD_GROUP='busd-no-such-group': no group 'busd-no-such-group'",
        ),
    ],
)
def test_an_unknown_user_or_group_is_usage(
    busd_dir: Path, argv: list[str], env: dict[str, str], expected: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "busd", "--runtime-dir", str(busd_dir / "rt"), *argv, TARGET],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env={**this_busd(), **env},
    )
    assert done.returncode == 2, done.stderr
    assert one_line(done.stderr).startswith(expected), done.stderr
    assert not (busd_dir / "rt").exists()


# -- plain TCP needs --insecure ----------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint", ["tcp://127.0.0.1:*", "tcp://127.0.0.1:0", "tcp://localhost:*", "tcp://[::1]:*"]
)
def test_plain_loopback_tcp_without_insecure_is_usage(busd_dir: Path, endpoint: str) -> None:
    runtime = busd_dir / "rt"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "busd",
            "--runtime-dir",
            str(runtime),
            "--bind",
            endpoint,
            "-w",
            "1",
            TARGET,
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env=this_busd(),
    )
    assert done.returncode == 2, done.stderr
    assert one_line(done.stderr).startswith(f"busd: --bind {endpoint}: plain TCP")
    assert "--insecure" in done.stderr
    assert not runtime.exists(), "busd made its runtime dir before refusing"


def served_tcp(procs: Processes, proc: subprocess.Popen[bytes], runtime: Path) -> str | None:
    """busd's tcp control endpoint once it answers; None if it exits first."""
    with Control(f"ipc://{runtime}/ctl.sock", 0.25) as control:
        for _ in range(int(TIMEOUT / 0.25)):
            if proc.poll() is not None:
                return None
            try:
                status = control.request("status")
            except NoMaster:
                continue
            return next(e for e in status["endpoints"]["ctl"] if e.startswith("tcp://"))
    pytest.fail(f"busd neither answered nor exited: {procs.output(proc)}")


def test_another_user_cannot_command_busd_over_loopback_tcp(
    local_user: pwd.struct_passwd, busd_procs: Processes, busd_dir: Path
) -> None:
    check_reachable(local_user, busd_procs.env)
    runtime = busd_dir / "rt"
    proc = busd_procs.spawn(
        [
            sys.executable,
            "-m",
            "busd",
            "--runtime-dir",
            str(runtime),
            "--heartbeat",
            "0.2",
            "--bind",
            "tcp://127.0.0.1:*",
            "-w",
            "1",
            TARGET,
        ],
        name="busd",
        env={"BUSD_PROBE": ""},
    )
    endpoint = served_tcp(busd_procs, proc, runtime)
    if endpoint is not None:
        ran = {}
        for command in (["signal", "KILL"], ["exit"]):
            done = subprocess.run(
                as_user([*BUSCTL, "--endpoint", endpoint, "--timeout", "5", *command], local_user),
                capture_output=True,
                text=True,
                timeout=TIMEOUT + 30,
                check=False,
                env=busd_procs.env,
                cwd="/",
            )
            ran[" ".join(command)] = (done.returncode, done.stdout.strip(), done.stderr.strip())
        pytest.fail(
            f"busd served plain TCP without --insecure, and uid {local_user.pw_uid} "
            f"commanded it: {ran}"
        )
    assert proc.wait(TIMEOUT) == 2
    out = busd_procs.output(proc)
    assert "--insecure" in one_line(out), out
    assert not runtime.exists()


def test_plain_tcp_with_insecure_serves(busd_procs: Processes, busd_dir: Path) -> None:
    runtime = busd_dir / "rt"
    proc = busd_procs.spawn(
        [
            sys.executable,
            "-m",
            "busd",
            "--runtime-dir",
            str(runtime),
            "--heartbeat",
            "0.2",
            "--bind",
            "tcp://127.0.0.1:*",
            "--insecure",
        ],
        name="busd",
    )
    endpoint = served_tcp(busd_procs, proc, runtime)
    assert endpoint is not None, busd_procs.output(proc)
    done = subprocess.run(
        [*BUSCTL, "--endpoint", endpoint, "--timeout", "5", "exit"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert proc.wait(TIMEOUT) == 0


def test_master_bus_refuses_plain_tcp_unless_insecure(busd_dir: Path, busd_master: object) -> None:
    with pytest.raises(EndpointError, match="--insecure"):
        MasterBus(runtime_dir=busd_dir / "a", bind=["tcp://127.0.0.1:*"])
    assert not (busd_dir / "a").exists()
    master = busd_master(
        runtime_dir=busd_dir / "b",
        bind=["tcp://127.0.0.1:*"],  # type: ignore[operator]
        insecure=True,
    )
    assert any(e.startswith("tcp://127.0.0.1:") for e in master.hub.ctl_endpoints)


def test_joining_over_plain_tcp_needs_insecure_on_both_sides(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path
) -> None:
    join = "tests.integration.join_targets:main"
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "busd",
            "--runtime-dir",
            str(busd_dir / "h0"),
            "--join",
            "tcp://127.0.0.1:5555",
            "-w",
            "1",
            join,
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env=this_busd(),
    )
    assert refused.returncode == 2, refused.stderr
    assert one_line(refused.stderr).startswith("busd: --join tcp://127.0.0.1:5555: plain TCP")
    assert "--insecure" in refused.stderr
    assert not (busd_dir / "h0").exists()

    runtime = busd_dir / "m"
    master = busd_procs.spawn(
        [
            sys.executable,
            "-m",
            "busd",
            "--runtime-dir",
            str(runtime),
            "--heartbeat",
            "0.3",
            "--bind",
            "tcp://127.0.0.1:*",
            "--insecure",
        ],
        name="master",
    )
    endpoint = served_tcp(busd_procs, master, runtime)
    assert endpoint is not None, busd_procs.output(master)
    host = busd_procs.spawn(
        [
            sys.executable,
            "-m",
            "busd",
            "--runtime-dir",
            str(busd_dir / "h"),
            "--heartbeat",
            "0.3",
            "--join",
            endpoint,
            "--insecure",
            "-w",
            "1",
            join,
        ],
        name="host",
    )
    busd_sink.expect("start", TIMEOUT)
    with Control(f"ipc://{runtime}/ctl.sock", TIMEOUT) as control:
        control.request("exit")
    assert master.wait(TIMEOUT) == 0, busd_procs.output(master)
    assert host.wait(TIMEOUT) == 0, busd_procs.output(host)


# -- --name ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["--name", "../../{esc}"], {}, "--name"),
        ([], {"BUSD_NAME": "../{esc}"}, "BUSD_NAME='../{esc}'"),
        (["--name", ".{esc}"], {}, "--name"),
        (["--name", "{long}"], {}, "--name"),
    ],
)
def test_a_name_that_is_not_a_plain_file_name_is_refused_before_anything_is_made(
    tmp_path: Path, argv: list[str], env: dict[str, str], named: str
) -> None:
    esc = f"busd-esc-{uuid.uuid4().hex[:8]}"
    long = (esc + "x" * 65)[:65]
    argv = [a.format(esc=esc, long=long) for a in argv]
    env = {k: v.format(esc=esc) for k, v in env.items()}
    log_dir = tmp_path / "a" / "b" / "logs"
    clean = {
        k: v
        for k, v in this_busd().items()
        if k not in ("BUSD_RUNTIME_DIR", "XDG_RUNTIME_DIR", "BUSD_NAME")
    }
    done = subprocess.run(
        [sys.executable, "-m", "busd", "--log-dir", str(log_dir), *argv, TARGET],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env={**clean, **env},
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert one_line(done.stderr).startswith(f"busd: {named.format(esc=esc)}: bad busd name")
    made = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert made == [], made
    for escaped in (
        Path("/tmp") / esc,
        Path("/tmp") / f"{esc}.log",
        Path("/") / esc,
        Path(f"/tmp/busd-{os.getuid()}") / long,
    ):
        assert not escaped.exists(), escaped
