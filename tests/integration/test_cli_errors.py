"""One error style for busd and busctl: a bad flag or BUSD_* value is one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import busd

BAD_BUSD = {  # argv or env -> what the one line must name
    "port too big": (["--listen", "tcp:127.0.0.1:99999"], {}, "--listen"),
    "no port": (["--listen", "tcp:127.0.0.1"], {}, "--listen"),
    "unknown kind": (["--listen", "udp:1.2.3.4:5"], {}, "--listen"),
    "workers": (["-w", "abc"], {}, "-w/--workers"),
    "negative workers": (["-w", "-1"], {}, "-w/--workers"),
    "heartbeat": (["--heartbeat", "0"], {}, "--heartbeat"),
    "timeout": (["--graceful-timeout", "soon"], {}, "--graceful-timeout"),
    "target": (["nocolon"], {}, "TARGET"),
    "reload": (["--reload", "sometimes"], {}, "--reload"),
    "env workers": ([], {"BUSD_WORKERS": "abc"}, "BUSD_WORKERS"),
    "env listen": ([], {"BUSD_LISTEN": "tcp:127.0.0.1:99999"}, "BUSD_LISTEN"),
    "env heartbeat": ([], {"BUSD_HEARTBEAT": "-1"}, "BUSD_HEARTBEAT"),
    "max age": (["--max-age", "0"], {}, "--max-age"),
    "max rss": (["--max-rss", "lots"], {}, "--max-rss"),
    "env var": (["--env", "NOEQUALS"], {}, "--env"),
    "env env": ([], {"BUSD_ENV": "A=1 B"}, "BUSD_ENV"),
    "plugin": (["--plugin", "nocolon"], {}, "--plugin"),
    # Durations past a week overflowed a timer in the master's I/O thread.
    "env heartbeat huge": ([], {"BUSD_HEARTBEAT": "1e300"}, "BUSD_HEARTBEAT"),
    "env graceful huge": ([], {"BUSD_GRACEFUL_TIMEOUT": "1e300"}, "BUSD_GRACEFUL_TIMEOUT"),
    "heartbeat infinite": (["--heartbeat", "inf"], {}, "--heartbeat"),
    "max age past a week": (["--max-age", "604801"], {}, "--max-age"),
    "backoff nan": (["--backoff", "nan"], {}, "--backoff"),
    "max rss huge": (["--max-rss", "1e300"], {}, "--max-rss"),
}


def run(
    module: str, argv: list[str], env: dict[str, str], runtime: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "BUSD_RUNTIME_DIR": str(runtime), **env},
    )


@pytest.mark.parametrize("case", list(BAD_BUSD))
def test_busd_refuses_a_bad_value_in_one_line(case: str, busd_dir: Path) -> None:
    argv, env, flag = BAD_BUSD[case]
    done = run("busd", argv, env, busd_dir)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("busd: "), lines[0]
    assert flag in lines[0], lines[0]
    assert "expected" in lines[0] or "invalid choice" in lines[0], lines[0]
    assert not list(busd_dir.iterdir()), "nothing may be made before the flags are checked"


def test_busd_refuses_a_listen_address_it_cannot_bind(busd_dir: Path) -> None:
    path = busd_dir / "nodir" / "app.sock"
    done = run("busd", ["--listen", f"unix:{path}"], {}, busd_dir)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "--listen" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["-w", "1", "app:main", "app:hog"], "busd --config FILE"),
        (["-w", "1", "app:main", "stray"], "unrecognized arguments: stray"),
        (["--bogus", "app:main"], "unrecognized option --bogus"),
    ],
    ids=["second target", "stray word", "unknown flag"],
)
def test_busd_refuses_extra_arguments_in_one_line(
    argv: list[str], said: str, busd_dir: Path
) -> None:
    done = run("busd", argv, {}, busd_dir)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("busd: "), line
    assert said in line, line
    assert not list(busd_dir.iterdir()), "nothing may be made before the flags are checked"


@pytest.mark.parametrize("module", ["busd", "busd.client.ctl.busctl"])
def test_version(module: str, busd_dir: Path) -> None:
    done = run(module, ["--version"], {}, busd_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(busd.__version__), done.stdout
