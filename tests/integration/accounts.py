"""Another local user for a test: made with ``useradd``, removed with ``userdel``.

``made_user()`` skips the test without root or ``useradd``; the user (and
what it left under /tmp/busd-UID) is removed on the way out, failure or not.

``as_user(argv, user)`` and ``reachable(argv)`` run this test's Python (the
venv, busd, zmq) where another user can: on a machine where the interpreter
lives under a directory only root may enter (``/root`` is 0700 where pyenv
installs it), the command runs in its own mount namespace in which that one
directory is a read-only view (a tmpfs holding a bind mount of the one entry
on the interpreter's path), and so is every other such directory on the
way (a checkout in a ``mktemp -d`` directory, as CI makes one).  Nothing
changes outside that namespace, and it goes away with its processes.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Inside a private mount namespace: DIR becomes a tmpfs holding only the entries
#: ENTRY:ENTRY... of the real DIR (bind mounts), then the command runs.
OPEN_DIR = """
set -e
dir=$1; entries=$2; shift 2
held=""
for entry in $(echo "$entries" | tr ':' ' '); do
    hold=$(mktemp -d)
    mount --bind "$dir/$entry" "$hold"
    held="$held $entry=$hold"
done
mount -t tmpfs -o mode=0755 busd-test "$dir"
for pair in $held; do
    entry=${pair%%=*}; hold=${pair#*=}
    mkdir "$dir/$entry"
    mount --bind "$hold" "$dir/$entry"
    umount "$hold"
    rmdir "$hold"
done
exec "$@"
"""


@contextlib.contextmanager
def made_user() -> Iterator[pwd.struct_passwd]:
    """A new user (and its group), removed afterwards with what it left under /tmp."""
    if os.getuid() != 0:
        pytest.skip("making another local user needs root")
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("useradd/userdel are not installed")
    name = f"bt{uuid.uuid4().hex[:10]}"
    made = subprocess.run(
        ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if made.returncode != 0:
        pytest.skip(f"useradd failed: {made.stderr.strip()}")
    user = pwd.getpwnam(name)
    try:
        yield user
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False, timeout=30)
        shutil.rmtree(f"/tmp/busd-{user.pw_uid}", ignore_errors=True)


def needed_paths() -> list[Path]:
    """What another user must reach: this Python (venv and base) and busd's source."""
    import busd

    return [
        Path(p).absolute()
        for p in (
            sys.executable,
            os.path.realpath(sys.executable),
            sys.prefix,
            sys.base_prefix,
            Path(busd.__file__).parents[1],
        )
    ]


def blocked_dirs() -> list[Path]:
    """The directories on the way to what is needed that others may not enter, outermost first.

    There may be several: a pyenv Python under /root, and a checkout (with its
    venv) in a directory made by ``mktemp -d``, as CI makes one.
    """
    found: set[Path] = set()
    for path in needed_paths():
        for directory in reversed(path.parents):
            if directory != Path("/") and not directory.stat().st_mode & stat.S_IXOTH:
                found.add(directory)
    return sorted(found, key=lambda d: len(d.parts))


def reachable(argv: list[str]) -> list[str]:
    """``argv``, run where every user can reach this Python (see the module docstring)."""
    blocked = blocked_dirs()
    if not blocked:
        return argv
    if shutil.which("unshare") is None:
        pytest.skip(f"{blocked[0]} is closed to other users and unshare is not installed")
    # Innermost last: each step opens one directory, then runs the next.
    for directory in reversed(blocked):
        entries = sorted(
            {
                p.relative_to(directory).parts[0]
                for p in needed_paths()
                if p.is_relative_to(directory) and p != directory
            }
        )
        argv = ["sh", "-c", OPEN_DIR, "open-dir", str(directory), ":".join(entries), *argv]
    return ["unshare", "--mount", "--propagation", "private", *argv]


def as_user(argv: list[str], user: pwd.struct_passwd) -> list[str]:
    """``argv`` run as ``user`` (with this Python reachable)."""
    return reachable(["runuser", "-u", user.pw_name, "--", *argv])


def check_reachable(user: pwd.struct_passwd, env: dict[str, str]) -> None:
    """Skip unless ``user`` can run this Python with busd, zmq and psutil importable."""
    done = subprocess.run(
        as_user([sys.executable, "-c", "import busd, zmq, msgpack, psutil"], user),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
        cwd="/",
    )
    if done.returncode != 0:
        pytest.skip(f"another user cannot run {sys.executable} here: {done.stderr.strip()}")
