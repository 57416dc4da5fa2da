"""DropPrivileges for real, in child processes (the test runner keeps its ids)."""

from __future__ import annotations

import grp
import json
import os
import pwd
from pathlib import Path

import pytest

from tests.integration.test_plugins_support import child_process

APP = """
    import json, os, sys
    from busd import Bus
    from busd.plugins import DropPrivileges

    options = json.loads(sys.argv[1])
    bus = Bus()
    DropPrivileges(bus, **options).subscribe()
    bus.start()
    # The report pipe was opened before the drop: writing to it needs no rights.
    report("ids " + json.dumps({
        "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
        "egid": os.getegid(), "groups": os.getgroups(), "umask": os.umask(0)}))
    bus.exit()
"""

NOBODY = pwd.getpwnam("nobody")


def _run(tmp_path: Path, **options: object) -> dict[str, object]:
    with child_process(tmp_path, APP, args=[json.dumps(options)]) as child:
        ids: dict[str, object] = json.loads(child.expect("ids ")[4:])
        assert child.wait_exit() == 0, child.diagnostics()
    return ids


def test_umask_is_applied(tmp_path: Path) -> None:
    ids = _run(tmp_path, umask=0o027)
    assert ids["umask"] == 0o027


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
@pytest.mark.parametrize("gid", [None, "group-name", "number"])
def test_root_drops_to_nobody(tmp_path: Path, gid: str | None) -> None:
    group = {
        None: None,
        "group-name": grp.getgrgid(NOBODY.pw_gid).gr_name,
        "number": NOBODY.pw_gid,
    }[gid]
    ids = _run(tmp_path, uid="nobody", gid=group)
    assert ids["uid"] == ids["euid"] == NOBODY.pw_uid
    # Without a gid: the user's primary group, never root's.
    assert ids["gid"] == ids["egid"] == NOBODY.pw_gid
    assert ids["groups"] == []
