"""DropPrivileges without changing this process: names, order of calls, non-root."""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

import pytest

from busd import Bus
from busd.plugins import DropPrivileges, UnknownAccount

NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def logs() -> list[tuple[str, int]]:
    return []


@pytest.fixture
def bus(logs: list[tuple[str, int]]) -> Bus:
    bus = Bus()
    bus.subscribe("log", lambda msg, level=20: logs.append((msg, level)))
    return bus


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """Record id changes instead of making them: this is the test runner's process."""
    made: list[tuple[str, object]] = []
    for name in ("setgroups", "setgid", "setuid", "umask"):
        monkeypatch.setattr(os, name, lambda value, name=name: made.append((name, value)) or 0)
    return made


def test_names_and_numbers_resolve(bus: Bus) -> None:
    nogroup = grp.getgrgid(NOBODY.pw_gid).gr_name
    plugin = DropPrivileges(bus, uid="nobody", gid=nogroup)
    assert (plugin.uid, plugin.gid) == (NOBODY.pw_uid, NOBODY.pw_gid)
    plugin.uid = str(NOBODY.pw_uid)
    plugin.gid = 123
    assert (plugin.uid, plugin.gid) == (NOBODY.pw_uid, 123)


def test_unknown_names_are_a_clear_error(bus: Bus) -> None:
    with pytest.raises(UnknownAccount, match="no user named 'busd-no-such-user'"):
        DropPrivileges(bus, uid="busd-no-such-user")
    with pytest.raises(UnknownAccount, match="no group named 'busd-no-such-group'"):
        DropPrivileges(bus, gid="busd-no-such-group")
    plugin = DropPrivileges(bus)
    with pytest.raises(ValueError, match="busd-no-such-user"):
        plugin.uid = "busd-no-such-user"


def test_as_root_groups_then_gid_then_uid(
    bus: Bus, calls: list[tuple[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    DropPrivileges(bus, uid="nobody", gid=4321, umask=0o027).start()
    assert calls == [
        ("setgroups", []),
        ("setgid", 4321),
        ("setuid", NOBODY.pw_uid),
        ("umask", 0o027),
    ]


def test_a_uid_alone_brings_its_primary_group(
    bus: Bus, calls: list[tuple[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    DropPrivileges(bus, uid="nobody").start()
    assert ("setgid", NOBODY.pw_gid) in calls


def test_not_root_leaves_ids_alone_and_says_so(
    bus: Bus,
    logs: list[tuple[str, int]],
    calls: list[tuple[str, object]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    DropPrivileges(bus, uid="nobody", umask=0o022).start()
    assert calls == [("umask", 0o022)]
    assert ("Not running as root (euid 1000): uid/gid left unchanged.", 30) in logs


def test_second_start_changes_nothing(
    bus: Bus,
    logs: list[tuple[str, int]],
    calls: list[tuple[str, object]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    plugin = DropPrivileges(bus, uid="nobody", umask=0o022)
    plugin.start()
    made = len(calls)
    plugin.start()
    assert len(calls) == made
    assert any(msg.startswith("Already running as uid") for msg, _ in logs)


def test_start_listens_at_priority_77(bus: Bus) -> None:
    plugin = DropPrivileges(bus)
    plugin.subscribe()
    assert bus._priorities[("start", plugin.start)] == 77


def test_drop_ids_clears_groups_then_gid_then_uid(calls: list[tuple[str, object]]) -> None:
    from busd.plugins.privileges import drop_ids

    drop_ids(NOBODY.pw_uid, None)
    assert calls == [("setgroups", []), ("setgid", NOBODY.pw_gid), ("setuid", NOBODY.pw_uid)]


def test_environment_for_a_user_is_theirs(tmp_path: Path) -> None:
    from busd.plugins.privileges import environment_for

    mine = str(tmp_path)  # ours, not nobody's: it goes
    environ = {
        "HOME": "/root",
        "USER": "root",
        "LOGNAME": "root",
        "XDG_RUNTIME_DIR": mine,
        "OTHER": "kept",
    }
    environment_for(NOBODY.pw_uid, environ)
    assert environ == {
        "HOME": NOBODY.pw_dir,
        "USER": NOBODY.pw_name,
        "LOGNAME": NOBODY.pw_name,
        "OTHER": "kept",
    }
    environ = {"XDG_RUNTIME_DIR": mine}
    environment_for(os.getuid(), environ)  # our own dir stays
    assert environ["XDG_RUNTIME_DIR"] == mine
