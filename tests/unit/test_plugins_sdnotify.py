"""SdNotify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest

from busd import Bus
from busd.plugins import SdNotify

TIMEOUT = 5.0


class FakeSystemd:
    """A bound datagram socket; ``next()`` returns the next notification's fields."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(TIMEOUT)

    def next(self) -> dict[str, str]:
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            pytest.fail(f"no notification within {TIMEOUT}s", pytrace=False)
        return dict(line.split("=", 1) for line in data.decode().split("\n"))

    def pending(self) -> list[dict[str, str]]:
        """Every notification already queued, without waiting."""
        found = []
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(4096)
                found.append(dict(line.split("=", 1) for line in data.decode().split("\n")))
        except BlockingIOError:
            return found
        finally:
            self.sock.settimeout(TIMEOUT)


@pytest.fixture
def socket_dir() -> Iterator[str]:
    # tmp_path can exceed the 108 bytes an AF_UNIX path may have.
    path = tempfile.mkdtemp(prefix="busd-sd-", dir="/tmp")
    yield path
    shutil.rmtree(path)


@pytest.fixture
def systemd(socket_dir: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    address = os.path.join(socket_dir, "notify")
    fake = FakeSystemd(address)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield fake
    fake.sock.close()


def test_lifecycle_notifications_in_order_around_the_other_listeners(
    systemd: FakeSystemd, bus: Bus
) -> None:
    sd = SdNotify(bus)
    sd.subscribe()
    # Listeners at the default priority mark where they ran in the stream.
    bus.subscribe("start", lambda: sd.notify(MARK="start"))
    bus.subscribe("graceful", lambda: sd.notify(MARK="graceful"))
    bus.subscribe("stop", lambda: sd.notify(MARK="stop"))
    bus.start()
    assert systemd.next() == {"MARK": "start"}
    assert systemd.next() == {"READY": "1"}
    before = time.monotonic_ns() // 1000
    bus.graceful()
    after = time.monotonic_ns() // 1000
    reloading = systemd.next()
    assert reloading["RELOADING"] == "1"
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after
    assert systemd.next() == {"MARK": "graceful"}
    assert systemd.next() == {"READY": "1"}
    bus.stop()  # a stop alone is no STOPPING=1: systemd would end the service
    assert systemd.next() == {"MARK": "stop"}
    bus.subscribe("exit", lambda: sd.notify(MARK="exit"))
    bus.exit()  # stops again (wspbus), then exits: STOPPING=1 before the exit listeners
    assert systemd.next() == {"MARK": "stop"}
    assert systemd.next() == {"STOPPING": "1"}
    assert systemd.next() == {"MARK": "exit"}
    assert systemd.pending() == []
    assert sd.statistics()["sent"] == 9


def test_watchdog_pings_every_half_period_until_exit(
    systemd: FakeSystemd, bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    sd = SdNotify(bus)
    sd.subscribe()
    bus.start()
    assert systemd.next() == {"READY": "1"}
    assert systemd.next() == {"WATCHDOG": "1"}
    assert systemd.next() == {"WATCHDOG": "1"}
    assert sd.statistics()["watchdog"] is True
    bus.exit()
    assert sd.statistics()["watchdog"] is False


def test_watchdog_for_another_pid_is_not_ours(
    systemd: FakeSystemd, bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    sd = SdNotify(bus)
    sd.subscribe()
    bus.start()
    assert systemd.next() == {"READY": "1"}
    assert sd.statistics()["watchdog"] is False


def test_abstract_socket_and_status(bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"busd-test-{uuid.uuid4().hex}"
    fake = FakeSystemd("\0" + name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        sd = SdNotify(bus)
        assert sd.status("serving 3 workers\nand more") is True
        assert fake.next() == {"STATUS": "serving 3 workers and more"}
        assert sd.notify(READY=True, ERRNO=0) is True
        assert fake.next() == {"READY": "1", "ERRNO": "0"}
    finally:
        fake.sock.close()


def test_without_notify_socket_everything_is_inert(
    bus: Bus, logs: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "20000")
    sd = SdNotify(bus)
    sd.subscribe()
    assert not sd.enabled
    bus.start()
    bus.graceful()
    assert sd.status("nobody listens") is False
    bus.exit()
    assert sd.statistics() == {"socket": None, "sent": 0, "errors": 0, "watchdog": False}
    assert not [msg for msg, level in logs if level >= 30]


def test_a_failed_send_is_logged_not_raised(
    socket_dir: str, bus: Bus, logs: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", os.path.join(socket_dir, "nobody-here"))
    sd = SdNotify(bus)
    sd.subscribe()
    bus.start()  # READY=1 fails: the bus starts anyway
    assert bus.state is bus.states.STARTED
    assert sd.errors == 1
    assert any("sd_notify 'READY=1'" in msg and level == 30 for msg, level in logs)


def test_unsubscribe_removes_every_listener(systemd: FakeSystemd, bus: Bus) -> None:
    sd = SdNotify(bus)
    sd.subscribe()
    sd.unsubscribe()
    bus.start()
    bus.graceful()
    bus.exit()
    assert systemd.pending() == []


def test_ready_waits_for_wait_ready_after_start_and_graceful(
    systemd: FakeSystemd, bus: Bus, logs: list[tuple[str, int]]
) -> None:
    import threading

    release = threading.Event()
    answers = iter([True, False])

    def wait_ready() -> bool:
        release.wait(TIMEOUT)
        return next(answers)

    sd = SdNotify(bus, wait_ready=wait_ready)
    sd.subscribe()
    bus.start()  # returns at once: the wait runs in a thread of its own
    assert bus.state is bus.states.STARTED
    assert systemd.pending() == []
    sd.notify(MARK="started")
    release.set()
    assert systemd.next() == {"MARK": "started"}
    assert systemd.next() == {"READY": "1"}
    bus.graceful()  # the second wait gives up: READY=1 all the same, and a warning
    assert systemd.next()["RELOADING"] == "1"
    assert systemd.next() == {"READY": "1"}
    assert any("READY=1 all the same" in msg and level == 30 for msg, level in logs)
