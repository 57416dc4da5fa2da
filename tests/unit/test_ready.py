"""The readiness of a program that does not speak the bus: its forms, and real probes.

The probes connect to real sockets (a loopback listener, a unix socket in
tmp_path); each answers within busd.pool.ready.PROBE_TIMEOUT, refused or not.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from busd.pool.ready import PROBE_TIMEOUT, Ready, probe

#: A probe's bound, with room for a busy machine's scheduling.
QUICK = PROBE_TIMEOUT + 0.5


@pytest.fixture
def tcp_listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock
    finally:
        sock.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port that nothing listens on (bound, never listened, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def timed_probe(ready: Ready, alive_for: float = 0.0) -> tuple[bool, float]:
    began = time.monotonic()
    answer = probe(ready, alive_for)
    return answer, time.monotonic() - began


@pytest.mark.parametrize(
    ("written", "ready"),
    [
        (2, Ready(seconds=2.0)),
        (0.5, Ready(seconds=0.5)),
        (0, Ready(seconds=0.0)),
        ("tcp:127.0.0.1:6380", Ready(tcp=("127.0.0.1", 6380))),
        ("tcp:localhost:80", Ready(tcp=("localhost", 80))),
        ("tcp:[::1]:6380", Ready(tcp=("::1", 6380))),
        ("unix:/run/app.sock", Ready(unix="/run/app.sock")),
    ],
)
def test_parse_and_describe_give_back_the_form_written(
    written: int | float | str, ready: Ready
) -> None:
    parsed = Ready.parse(written)

    assert parsed == ready
    assert parsed.describe() == (written if isinstance(written, str) else f"{written:g}")


@pytest.mark.parametrize(
    "bad",
    [
        -1,
        1e300,
        True,
        "soon",
        "tcp:127.0.0.1",
        "tcp:127.0.0.1:0",
        "tcp:127.0.0.1:70000",
        "tcp:db.example.com:5432",  # a name lookup could block the command thread
        "tcp:[127.0.0.1]:80",
        "unix:",
        ["tcp:127.0.0.1:1"],
    ],
)
def test_parse_refuses_other_forms_naming_them(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^expected a number of seconds .* or unix:PATH, not "):
        Ready.parse(bad)


def test_a_ready_is_exactly_one_check() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Ready()
    with pytest.raises(ValueError, match="exactly one"):
        Ready(seconds=1.0, unix="/x")


def test_seconds_alive() -> None:
    assert not probe(Ready(seconds=1.0), 0.99)
    assert probe(Ready(seconds=1.0), 1.0)
    assert probe(Ready(seconds=0.0), 0.0)


def test_a_listening_loopback_port_is_ready(tcp_listener: socket.socket) -> None:
    port = tcp_listener.getsockname()[1]

    answer, took = timed_probe(Ready(tcp=("127.0.0.1", port)))

    assert answer
    assert took < QUICK
    conn, _ = tcp_listener.accept()  # the probe connected, then closed at once
    with conn:
        assert conn.recv(1) == b""


def test_localhost_is_probed_on_loopback(tcp_listener: socket.socket) -> None:
    port = tcp_listener.getsockname()[1]

    assert probe(Ready.parse(f"tcp:localhost:{port}"), 0.0)


def test_a_closed_port_is_not_ready_quickly(closed_port: int) -> None:
    answer, took = timed_probe(Ready(tcp=("127.0.0.1", closed_port)))

    assert not answer
    assert took < QUICK


def test_an_unanswered_connect_gives_up_within_the_bound() -> None:
    # TEST-NET-1 (RFC 5737): routed nowhere, so a connect neither succeeds nor is refused
    # at once (or, with no route at all, fails at once): either way "not yet", quickly.
    answer, took = timed_probe(Ready(tcp=("192.0.2.1", 9)))

    assert not answer
    assert took < QUICK


def test_a_listening_unix_socket_is_ready(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(8)

        answer, took = timed_probe(Ready(unix=str(path)))

        assert answer
        assert took < QUICK


def test_a_missing_or_dead_unix_socket_is_not_ready(tmp_path: Path) -> None:
    missing = tmp_path / "missing.sock"
    dead = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(dead))  # the file stays; nothing listens on it

    for path in (missing, dead):
        answer, took = timed_probe(Ready(unix=str(path)))

        assert not answer, path
        assert took < QUICK


def test_a_path_too_long_for_a_unix_socket_is_not_ready(tmp_path: Path) -> None:
    assert not probe(Ready(unix=str(tmp_path / ("x" * 200))), 0.0)
