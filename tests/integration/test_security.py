"""CURVE endpoints, roles and a private runtime dir, against a real ``busd`` process.

One master (``busd --bind tcp://127.0.0.1:* --curve-secret ... --authorized-keys
... --readonly-keys ...``) serves the whole module; every refusal is tried
against it and, after each, an authorised client still gets its answer.
busctl runs in-process (``main([...])``); ``busd`` start-up refusals are
real commands that must fail at once with one clear line.  Waits are
bounded requests; a negative ("no answer") is a poll of a fixed, short
length on a socket that must stay silent.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth

from busd import client
from busd.client.ctl.busctl import main
from busd.client.ctl.keygen import write_key_pair
from busd.core.control import Control
from busd.core.errors import KeyRefused, NoMaster
from busd.core.wire import Kind, encode

TIMEOUT = 8.0
#: How long a socket that must get nothing is watched.
SILENCE_MS = 1000


@dataclass
class Keys:
    """Certificates made by zmq.auth for one test module."""

    root: Path
    server: Path
    server_secret: Path
    client_secret: Path
    reader_secret: Path
    stranger_secret: Path
    authorized: Path
    readonly: Path


def make_keys(root: Path) -> Keys:
    made = {}
    for name in ("server", "client", "reader", "stranger"):
        directory = root / name
        directory.mkdir(mode=0o700)
        made[name] = write_key_pair(directory, name)
    authorized, readonly = root / "authorized", root / "readonly"
    for directory, name in ((authorized, "client"), (readonly, "reader")):
        directory.mkdir(mode=0o700)
        shutil.copy(made[name][0], directory)
    return Keys(
        root,
        made["server"][0],
        made["server"][1],
        made["client"][1],
        made["reader"][1],
        made["stranger"][1],
        authorized,
        readonly,
    )


@dataclass
class Master:
    """The module's master: its process, its log, its endpoints."""

    proc: subprocess.Popen[bytes]
    log: Path
    runtime: Path
    ctl: str
    pub: str
    keys: Keys

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def authorised(self) -> Control:
        return Control(self.ctl, TIMEOUT, curve=client_keys(self.keys, self.keys.client_secret))


def client_keys(keys: Keys, secret: Path, server: Path | None = None) -> Any:
    from busd.core.auth import client_keys as load

    return load(server or keys.server, secret)


def busd_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "busd", "--heartbeat", "0.2", *args]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[Master]:
    base = tmp_path_factory.mktemp("sec")
    runtime, log = base / "rt", base / "master.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            busd_argv(
                "--runtime-dir",
                str(runtime),
                "--bind",
                "tcp://127.0.0.1:*",
                "--curve-secret",
                str(keys.server_secret),
                "--authorized-keys",
                str(keys.authorized),
                "--readonly-keys",
                str(keys.readonly),
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with Control(f"ipc://{runtime}/ctl.sock", TIMEOUT) as local:
            try:
                status = local.request("status")
            except NoMaster:
                pytest.fail(f"the master did not start: {log.read_text()}")
        ctl = next(e for e in status["endpoints"]["ctl"] if e.startswith("tcp://"))
        pub = next(e for e in status["endpoints"]["pub"] if e.startswith("tcp://"))
        yield Master(proc, log, runtime, ctl, pub, keys)
    finally:
        proc.terminate()
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(TIMEOUT)


def busctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def remote(
    master: Master, secret: Path | None, *argv: str, server: Path | None = None
) -> list[str]:
    args = ["--endpoint", master.ctl, "--timeout", "5"]
    if secret is not None:
        args += ["--server-key", str(server or master.keys.server), "--curve-secret", str(secret)]
    return [*args, *argv]


def assert_still_serving(master: Master) -> None:
    with master.authorised() as control:
        assert control.request("ping")["pong"] is True
        assert control.request("status")["state"] == "STARTED"


# -- authorised ------------------------------------------------------------------


def test_an_authorised_key_runs_commands_and_receives_the_relay(
    master: Master, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = busctl(capsys, *remote(master, master.keys.client_secret, "--json", "status"))
    assert code == 0, out
    assert '"state": "STARTED"' in out

    got = threading.Event()
    bus = client.connect(
        ctl=master.ctl,
        pub=master.pub,
        server_key=master.keys.server,
        curve_secret=master.keys.client_secret,
        mirror=True,
        timeout=TIMEOUT,
    )
    try:
        bus.subscribe("secret-channel", lambda value: got.set() if value == 42 else None)
        code, _, err = busctl(
            capsys, *remote(master, master.keys.client_secret, "publish", "secret-channel", "42")
        )
        assert code == 0, err
        assert got.wait(TIMEOUT), "the CURVE subscriber never got the published message"
    finally:
        bus.close()


def test_the_environment_gives_busctl_its_keys(
    master: Master, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUSD_SERVER_KEY", str(master.keys.server))
    monkeypatch.setenv("BUSD_CURVE_SECRET", str(master.keys.client_secret))
    code, out, err = busctl(capsys, "--endpoint", master.ctl, "--timeout", "5", "ping")
    assert code == 0, err
    assert "pong" in out


# -- refused handshakes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("no key", "this client has none and the master requires CURVE"),
        ("wrong server key", "is --server-key the master's public key?"),
        ("unknown key", "not in the master's --authorized-keys"),
    ],
)
def test_a_refused_client_is_told_at_once_and_the_master_serves_on(
    master: Master, capsys: pytest.CaptureFixture[str], who: str, expected: str
) -> None:
    keys = master.keys
    argv = {
        "no key": remote(master, None, "stop"),
        "wrong server key": remote(master, keys.client_secret, "stop", server=keys.stranger_secret),
        "unknown key": remote(master, keys.stranger_secret, "stop"),
    }[who]

    code, out, err = busctl(capsys, *argv)

    assert code == 3, (out, err)
    assert "the master refused the key" in err
    assert expected in err
    assert_still_serving(master)


def test_an_unknown_key_is_logged_once_per_peer(
    master: Master, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(3):
        code, _, _ = busctl(capsys, *remote(master, master.keys.stranger_secret, "ping"))
        assert code == 3
    public = zmq.auth.load_certificate(master.keys.stranger_secret)[0].decode()
    lines = [line for line in master.log_text().splitlines() if public in line]
    assert len(lines) == 1, lines
    assert "refused the CURVE key" in lines[0]


def test_client_connect_with_a_refused_key_raises_key_refused(master: Master) -> None:
    with pytest.raises(KeyRefused, match="refused the key"):
        client.connect(
            ctl=master.ctl,
            pub=master.pub,
            server_key=master.keys.server,
            curve_secret=master.keys.stranger_secret,
            timeout=TIMEOUT,
        )
    assert_still_serving(master)


def test_a_plain_client_gets_no_answer_and_no_published_data(master: Master) -> None:
    ctx = zmq.Context()
    dealer, sub = ctx.socket(zmq.DEALER), ctx.socket(zmq.SUB)
    try:
        for sock in (dealer, sub):
            sock.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(master.pub)
        dealer.connect(master.ctl)
        dealer.send(encode(Kind.REQUEST, 7, {"cmd": "ping"}))
        with master.authorised() as control:  # published while the plain SUB listens
            control.call("broadcast", {"channel": "leak", "args": [1]}, TIMEOUT)
            control.request("ping")
        assert dealer.poll(SILENCE_MS) == 0, "a plain client got an answer"
        assert sub.poll(0) == 0, "a plain subscriber got published data"
    finally:
        dealer.close()
        sub.close()
        ctx.term()


# -- roles ---------------------------------------------------------------------


def test_a_read_only_key_reads_but_may_not_change_anything(
    master: Master, capsys: pytest.CaptureFixture[str]
) -> None:
    reader = master.keys.reader_secret
    for command in (["status"], ["workers"], ["ping"]):
        code, _, err = busctl(capsys, *remote(master, reader, *command))
        assert code == 0, (command, err)

    for command in (["stop"], ["publish", "chan", "1"], ["stop"]):
        code, out, err = busctl(capsys, *remote(master, reader, *command))
        assert code == 1, (command, out, err)
        assert "forbidden" in err
        assert "read-only" in err

    assert_still_serving(master)
    public = zmq.auth.load_certificate(reader)[0].decode()
    lines = [line for line in master.log_text().splitlines() if "forbidden" in line]
    assert len(lines) == 1, f"refusals are logged once per peer: {lines}"
    assert public in lines[0]


def test_a_read_only_key_may_read_the_metrics(
    master: Master, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = busctl(capsys, *remote(master, master.keys.reader_secret, "metrics"))
    assert code == 0, err
    assert 'busd_state{state="STARTED"} 1.0' in out.splitlines()


def test_a_read_only_client_may_watch(master: Master, capsys: pytest.CaptureFixture[str]) -> None:
    got = threading.Event()
    bus = client.connect(
        ctl=master.ctl,
        pub=master.pub,
        server_key=master.keys.server,
        curve_secret=master.keys.reader_secret,
        mirror=True,
        timeout=TIMEOUT,
    )
    try:
        bus.subscribe("news", lambda value: got.set())
        code, _, err = busctl(
            capsys, *remote(master, master.keys.client_secret, "publish", "news", "1")
        )
        assert code == 0, err
        assert got.wait(TIMEOUT), "a read-only subscriber never got the message"
    finally:
        bus.close()


# -- refused at start --------------------------------------------------------------


def run_busd(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    runtime = tmp_path / "rt"
    return subprocess.run(
        busd_argv("--runtime-dir", str(runtime), *args),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_plain_tcp_off_loopback_is_refused_without_insecure(master: Master, tmp_path: Path) -> None:
    done = run_busd(tmp_path, "--bind", "tcp://0.0.0.0:7399")
    assert done.returncode != 0
    assert "plain TCP lets anyone who can reach it" in done.stderr
    assert "--insecure" in done.stderr
    assert "Traceback" not in done.stderr
    assert_still_serving(master)


@pytest.mark.parametrize("problem", ["mode 0644", "missing", "unparseable", "public only"])
def test_a_bad_secret_key_is_refused_at_start(master: Master, tmp_path: Path, problem: str) -> None:
    secret = tmp_path / "server.key_secret"
    shutil.copy(master.keys.server_secret, secret)
    expected = {
        "mode 0644": "mode 0644",
        "missing": "cannot read key file",
        "unparseable": "cannot load key file",
        "public only": "holds no secret key",
    }
    if problem == "mode 0644":
        secret.chmod(0o644)
    elif problem == "missing":
        secret.unlink()
    elif problem == "unparseable":
        secret.write_text("this is not a certificate\n")
    else:
        secret.write_text(master.keys.server.read_text())
        secret.chmod(0o600)

    done = run_busd(
        tmp_path,
        "--bind",
        "tcp://127.0.0.1:*",
        "--curve-secret",
        str(secret),
        "--authorized-keys",
        str(master.keys.authorized),
    )

    assert done.returncode != 0
    assert expected[problem] in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert_still_serving(master)


def test_busctl_refuses_a_secret_key_others_can_read(
    master: Master, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loose = tmp_path / "client.key_secret"
    shutil.copy(master.keys.client_secret, loose)
    loose.chmod(0o644)
    code, _, err = busctl(capsys, *remote(master, loose, "ping"))
    assert code == 2
    assert "mode 0644" in err
    assert "chmod 600" in err


def test_a_writable_authorized_keys_dir_is_refused(master: Master, tmp_path: Path) -> None:
    loose = tmp_path / "keys"
    shutil.copytree(master.keys.authorized, loose)
    loose.chmod(0o777)
    done = run_busd(
        tmp_path,
        "--bind",
        "tcp://127.0.0.1:*",
        "--curve-secret",
        str(master.keys.server_secret),
        "--authorized-keys",
        str(loose),
    )
    assert done.returncode != 0
    assert "writable by others" in done.stderr


# -- the local runtime dir ----------------------------------------------------------


def test_the_runtime_dir_is_private_and_its_sockets_0600(master: Master) -> None:
    assert stat.S_IMODE(master.runtime.stat().st_mode) == 0o700
    for name in ("ctl.sock", "pub.sock"):
        assert stat.S_IMODE((master.runtime / name).stat().st_mode) == 0o600, name


@pytest.mark.parametrize("problem", ["world-writable", "another user's"])
def test_an_unsafe_runtime_dir_is_refused(master: Master, tmp_path: Path, problem: str) -> None:
    runtime = tmp_path / "rt"
    runtime.mkdir()
    if problem == "world-writable":
        runtime.chmod(0o777)
        expected = "writable by group or others"
    else:
        if os.getuid() != 0:
            pytest.skip("giving a dir to another user needs root (chown)")
        os.chown(runtime, 65534, 65534)
        expected = "belongs to uid 65534"

    done = run_busd(tmp_path)

    assert done.returncode != 0
    assert expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (runtime / "ctl.sock").exists()
    assert_still_serving(master)


# -- key rotation ------------------------------------------------------------------


def test_a_key_added_or_removed_counts_without_a_restart(
    master: Master, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    public, secret = write_key_pair(tmp_path, "newcomer")
    added = master.keys.authorized / "newcomer.key"
    assert busctl(capsys, *remote(master, Path(secret), "ping"))[0] == 3
    shutil.copy(public, added)
    try:
        code, _, err = busctl(capsys, *remote(master, Path(secret), "ping"))
        assert code == 0, err
    finally:
        added.unlink()
    os.utime(master.keys.authorized, ns=(3, 3))  # a new mtime, whatever the clock's resolution
    code, _, err = busctl(capsys, *remote(master, Path(secret), "ping"))
    assert code == 3
    assert "refused the key" in err
    assert_still_serving(master)
