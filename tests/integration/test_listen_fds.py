"""Socket activation: busd started as systemd would, with LISTEN_FDS, serves on those sockets."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from busd.pool.listen import ListenError, from_systemd
from busd.testing import Processes
from tests.integration.test_daemon import busctl, states, wait_status

ROOT = Path(__file__).resolve().parents[2]
#: Plays systemd's part after the fork: the sockets at fds 3 and 4, the
#: variables naming this very process, then exec busd (same pid).
EXEC_AS_SYSTEMD = """
import os, sys
fds = [int(fd) for fd in sys.argv[1].split(",")]
for index, fd in enumerate(fds):
    os.dup2(fd, 3 + index)
os.environ.update(LISTEN_FDS=str(len(fds)), LISTEN_PID=str(os.getpid()),
                  LISTEN_FDNAMES="http:local")
os.execv(sys.executable, [sys.executable, "-m", "busd", *sys.argv[2:]])
"""


def test_busd_serves_on_the_sockets_systemd_passed(busd_procs: Processes, tmp_path: Path) -> None:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(64)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(tmp_path / "u.sock"))
    unix.listen(64)
    with tcp, unix:
        fds = [tcp.fileno(), unix.fileno()]
        busd = busd_procs.spawn(
            [
                sys.executable,
                "-c",
                EXEC_AS_SYSTEMD,
                ",".join(map(str, fds)),
                "--heartbeat",
                "0.2",
                "--log-level",
                "INFO",
                "-w",
                "2",
                "busd.examples.http:main",
            ],
            name="busd",
            pass_fds=fds,
        )
        port = tcp.getsockname()[1]
        doc = wait_status(busd_procs, lambda d: states(d) == ["STARTED"] * 2, timeout=30)
        assert doc["listen"] == [f"tcp:127.0.0.1:{port}", f"unix:{tmp_path / 'u.sock'}"]
        # The test's own copy closes: only busd's keeps the port open now.
    served = set()
    for _ in range(20):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
            assert reply.status == 200
            served.add(reply.read().split()[1])
    assert served <= {b"0", b"1"}
    assert busctl(busd_procs, "exit").returncode == 0
    assert busd.wait(15) == 0
    log = busd_procs.output(busd)
    assert f"listening on tcp:127.0.0.1:{port} from systemd (http)" in log
    assert "from systemd (local)" in log


def test_listen_fds_for_another_pid_are_ignored_and_removed() -> None:
    env = {
        "LISTEN_FDS": "1",
        "LISTEN_PID": str(os.getpid() + 1),
        "LISTEN_FDNAMES": "x",
        "OTHER": "kept",
    }
    assert from_systemd(env) == []
    assert env == {"OTHER": "kept"}


def test_a_bad_listen_fds_is_one_clear_error() -> None:
    with pytest.raises(ListenError, match="LISTEN_FDS is a count, not 'two'"):
        from_systemd({"LISTEN_FDS": "two", "LISTEN_PID": str(os.getpid())})


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (.ci/run installs it as root)",
)
def test_socket_unit_verifies_clean(tmp_path: Path) -> None:
    venv = Path(sys.executable).parent.parent
    for unit, name in (("busd.service", "app.service"), ("busd.socket", "app.socket")):
        text = (ROOT / "deploy" / unit).read_text().replace("/opt/app/.venv", str(venv))
        (tmp_path / name).write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "app.socket")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (done.stdout + done.stderr).strip() == ""
