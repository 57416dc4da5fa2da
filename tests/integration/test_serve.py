"""asgi: (uvicorn) and wsgi: (waitress) TARGETs under load, across respawn reloads."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.request

import psutil
import pytest

from busd.testing import Processes
from tests.integration.test_daemon import busctl, start_busd, states, wait_status

WRK = shutil.which("wrk") or "/usr/bin/wrk"
RELOADS = 3
CONNECTIONS = 16


def wrk_counts(output: str) -> dict[str, int]:
    """Requests, socket errors (all kinds) and non-2xx/3xx answers from wrk's report."""
    done = re.search(r"(\d+) requests in", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), "
        r"timeout (\d+)",
        output,
    )
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    assert done, output
    return {
        "requests": int(done.group(1)),
        "socket_errors": sum(int(n) for n in errors.groups()) if errors else 0,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def wait_loading(proc: subprocess.Popen[str], timeout: float = 10) -> None:
    """Until wrk holds its 16 sockets open (it is sending requests).

    Its connections last a millisecond each (Connection: close), too short to
    be matched in /proc/net/tcp; the count of its descriptors is steady.
    """
    deadline = time.monotonic() + timeout
    while psutil.Process(proc.pid).num_fds() < CONNECTIONS:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "wrk opened no connection"


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed (.ci/run installs it)")
@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_respawn_reloads_under_load_lose_no_request(busd_procs: Processes, kind: str) -> None:
    pytest.importorskip({"asgi": "uvicorn", "wsgi": "waitress"}[kind])
    busd = start_busd(
        busd_procs,
        "-w",
        "4",
        "--reload",
        "respawn",
        "--listen",
        "tcp:127.0.0.1:0",
        f"{kind}:tests.integration.apps:{kind}_app",
    )
    doc = wait_status(busd_procs, lambda d: states(d) == ["STARTED"] * 4, timeout=30)
    url = "http://" + doc["listen"][0].removeprefix("tcp:") + "/"
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.status == 200
        assert reply.read() == b"ok\n"
    generations = [{w["pid"] for w in doc["workers"]}]
    load = subprocess.Popen(
        [WRK, "-t2", f"-c{CONNECTIONS}", "-d10s", "-H", "Connection: close", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_loading(load)
        for _ in range(RELOADS):
            done = busctl(busd_procs, "graceful", "--wait", timeout=60)
            assert done.returncode == 0, done.stderr
            doc = wait_status(
                busd_procs,
                lambda d: (
                    states(d) == ["STARTED"] * 4
                    and not {w["pid"] for w in d["workers"]} & generations[-1]
                ),
            )
            generations.append({w["pid"] for w in doc["workers"]})
        output, _ = load.communicate(timeout=30)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait(5)
    assert load.returncode == 0, output
    counts = wrk_counts(output)
    assert counts["requests"] > 1000, output
    assert counts["socket_errors"] == 0, output
    assert counts["non_2xx"] == 0, output
    assert len(set().union(*generations)) == 4 * (RELOADS + 1), "each reload made new workers"
    assert busctl(busd_procs, "exit").returncode == 0
    assert busd.wait(30) == 0
