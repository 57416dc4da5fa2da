"""Autoreloader's checks in this process, with the restart itself replaced."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import busd.core.bus
from busd import Bus
from busd.plugins import Autoreloader

TIMEOUT = 5.0


@pytest.fixture
def logs() -> list[tuple[str, int]]:
    return []


@pytest.fixture
def restarts() -> list[threading.Thread]:
    return []


@pytest.fixture
def bus(
    logs: list[tuple[str, int]], restarts: list[threading.Thread], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Bus]:
    bus = Bus()
    bus.subscribe("log", lambda msg, level=20: logs.append((msg, level)))
    monkeypatch.setattr(bus, "restart", lambda: restarts.append(threading.current_thread()))
    yield bus
    if bus.state is not bus.states.EXITING:
        bus.exit()


@pytest.fixture
def watched(tmp_path: Path) -> Path:
    path = tmp_path / "settings.conf"
    path.write_text("x = 1\n")
    return path


def _bump(path: Path, seconds: float) -> None:
    st = path.stat()
    os.utime(path, (st.st_atime, st.st_mtime + seconds))


def test_a_changed_file_restarts_once(
    bus: Bus, watched: Path, logs: list[tuple[str, int]], restarts: list[threading.Thread]
) -> None:
    reloader = Autoreloader(bus, frequency=0, match="busd")
    reloader.files.add(str(watched))
    reloader.run()
    reloader.run()
    assert restarts == []
    assert str(watched) in reloader.mtimes
    _bump(watched, 10)
    reloader.run()
    assert len(restarts) == 1
    assert (f"Restarting because {watched} changed.", 20) in logs


def test_an_older_mtime_is_a_change_too(
    bus: Bus, watched: Path, restarts: list[threading.Thread]
) -> None:
    reloader = Autoreloader(bus, frequency=0, match="busd")
    reloader.files.add(str(watched))
    reloader.run()
    _bump(watched, -10)  # as when an older version is checked out
    reloader.run()
    assert len(restarts) == 1


def test_a_deleted_file_restarts(bus: Bus, watched: Path, restarts: list[threading.Thread]) -> None:
    reloader = Autoreloader(bus, frequency=0, match="busd")
    reloader.files.add(str(watched))
    reloader.run()
    watched.unlink()
    reloader.run()
    assert len(restarts) == 1


def test_a_file_missing_from_the_start_is_ignored(
    bus: Bus, tmp_path: Path, restarts: list[threading.Thread]
) -> None:
    reloader = Autoreloader(bus, frequency=0, match="busd")
    reloader.files.add(str(tmp_path / "not-there"))
    reloader.run()
    reloader.run()
    assert restarts == []
    assert reloader.mtimes[str(tmp_path / "not-there")] is None


def test_sysfiles_follows_match(bus: Bus) -> None:
    only_busd = Autoreloader(bus, match=r"busd\.core\.bus$").sysfiles()
    assert only_busd == {os.path.abspath(busd.core.bus.__file__)}
    everything = Autoreloader(bus).sysfiles()
    assert os.path.abspath(os.__file__) in everything
    assert all(os.path.isabs(f) for f in everything)


def test_in_its_thread_it_cancels_itself_before_restarting(
    bus: Bus, watched: Path, restarts: list[threading.Thread]
) -> None:
    first_check = threading.Event()

    class Reloader(Autoreloader):
        def run(self) -> None:
            super().run()
            first_check.set()

    reloader = Reloader(bus, frequency=0.005, match="busd")
    reloader.files.add(str(watched))
    reloader.subscribe()
    bus.start()
    thread = reloader.thread
    assert thread is not None
    assert first_check.wait(TIMEOUT)
    _bump(watched, 10)
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "the reloader kept running after the change"
    # Nobody is in bus.block(): the deferred restart ran in the reloader's thread.
    assert restarts == [thread]


def test_start_forgets_old_times(bus: Bus, watched: Path) -> None:
    reloader = Autoreloader(bus, frequency=60, match="busd")
    reloader.mtimes["/old/file"] = 1.0
    reloader.start()
    assert reloader.mtimes == {}
    reloader.stop()
