"""PIDFile with real files in this process (live and dead pids: tests/integration)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from busd import Bus
from busd.plugins import PIDFile
from busd.plugins.pidfile import PIDFileUnsafe, pid_alive, read_pid


def test_written_on_start_removed_on_exit(tmp_path: Path, bus: Bus) -> None:
    path = tmp_path / "app.pid"
    PIDFile(bus, path).subscribe()
    bus.start()
    assert path.read_text() == f"{os.getpid()}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.pid"], "temp file left"
    bus.exit()
    assert not path.exists()


def test_a_file_without_a_pid_is_replaced_and_logged(
    tmp_path: Path, bus: Bus, logs: list[tuple[str, int]]
) -> None:
    path = tmp_path / "app.pid"
    path.write_text("not a pid\n")
    PIDFile(bus, path).subscribe()
    bus.start()
    assert read_pid(path) == os.getpid()
    assert any(
        msg.startswith(f"Replacing PID file {str(path)!r}: it holds no pid") for msg, _ in logs
    )


def test_a_file_naming_us_is_ours(tmp_path: Path, bus: Bus) -> None:
    # As after a re-exec, which keeps the pid.
    path = tmp_path / "app.pid"
    path.write_text(f"{os.getpid()}\n")
    PIDFile(bus, path).subscribe()
    bus.start()
    assert read_pid(path) == os.getpid()


def test_exit_leaves_a_file_that_names_someone_else(
    tmp_path: Path, bus: Bus, logs: list[tuple[str, int]]
) -> None:
    path = tmp_path / "app.pid"
    PIDFile(bus, path).subscribe()
    bus.start()
    path.write_text("1\n")
    bus.exit()
    assert path.read_text() == "1\n"
    assert any("no longer names us" in msg for msg, _ in logs)


def test_second_start_keeps_the_file(tmp_path: Path, bus: Bus) -> None:
    path = tmp_path / "app.pid"
    plugin = PIDFile(bus, path)
    plugin.start()
    inode = path.stat().st_ino
    plugin.start()
    assert path.stat().st_ino == inode


def test_read_pid_and_pid_alive(tmp_path: Path) -> None:
    path = tmp_path / "x.pid"
    assert read_pid(path) is None
    for text, expected in [
        ("42\n", 42),
        ("  7 ", 7),
        ("0", None),
        ("-3", None),
        ("12abc", None),
        ("", None),
        ("\u0663", None),
    ]:
        path.write_text(text)
        assert read_pid(path) == expected, text
    assert pid_alive(os.getpid())
    assert not pid_alive(0)
    assert not pid_alive(-1)


def test_a_planted_symlink_is_refused_and_its_target_never_read(
    tmp_path: Path, bus: Bus, logs: list[tuple[str, int]]
) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root:SECRET-HASH:19000:0:99999:7:::\n")
    path = tmp_path / "app.pid"
    os.symlink(secret, path)
    plugin = PIDFile(bus, path)
    with pytest.raises(PIDFileUnsafe, match="not a regular file"):
        plugin.start()
    assert path.is_symlink(), "the planted link was replaced, not refused"
    assert secret.read_text().startswith("root:SECRET")
    assert not any("SECRET" in msg or "root:" in msg for msg, _ in logs), logs
    assert read_pid(path) is None, "read_pid followed the link"


def test_a_file_without_a_pid_is_never_quoted_in_the_log(
    tmp_path: Path, bus: Bus, logs: list[tuple[str, int]]
) -> None:
    path = tmp_path / "app.pid"
    path.write_text("private words\n")
    PIDFile(bus, path).subscribe()
    bus.start()
    assert read_pid(path) == os.getpid()
    assert not any("private" in msg for msg, _ in logs), logs


def test_a_fifo_at_the_path_is_refused_without_blocking(tmp_path: Path, bus: Bus) -> None:
    path = tmp_path / "app.pid"
    os.mkfifo(path)
    with pytest.raises(PIDFileUnsafe):
        PIDFile(bus, path).start()
    assert read_pid(path) is None
