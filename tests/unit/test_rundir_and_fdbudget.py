"""The runtime-dir lock and endpoint repair, and the fd budget, in one process."""

from __future__ import annotations

import os
import resource
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from busd.core.endpoints import EndpointError
from busd.core.errors import AlreadyRunning
from busd.master.fdbudget import FdBudget, FdBudgetExceeded, open_fds, raise_nofile
from busd.master.rundir import DirLock, EndpointGuard, holder_pid, lock_path


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ru", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_the_lock_is_one_per_path_and_names_its_holder(short_dir: Path) -> None:
    first, second = DirLock(short_dir / "ctl.sock"), DirLock(short_dir / "ctl.sock")
    first.acquire()
    try:
        assert holder_pid(first.file) == os.getpid()
        with pytest.raises(AlreadyRunning, match=rf"pid {os.getpid()}"):
            second.acquire()
        other = DirLock(short_dir / "pub.sock")
        other.acquire()  # another path, another lock
        other.release()
    finally:
        first.release()
    assert not os.path.exists(first.file), "a released lock leaves no file behind"
    second.acquire()
    assert second.held
    second.release()
    assert not second.held
    assert lock_path("/a/b") != lock_path("/a/c")
    assert lock_path("/a/b") == lock_path("/a/./b") == "/a/b.lock"


def test_the_lock_is_a_private_file_not_a_name_anyone_can_take(short_dir: Path) -> None:
    lock = DirLock(short_dir / "ctl.sock")
    lock.acquire()
    try:
        info = os.stat(lock.file, follow_symlinks=False)
        assert stat.S_ISREG(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o600
        assert info.st_uid == os.getuid()
    finally:
        lock.release()


def test_a_planted_lock_symlink_is_refused(short_dir: Path) -> None:
    target = short_dir / "elsewhere"
    target.write_text("")
    os.symlink(target, short_dir / "ctl.sock.lock")
    with pytest.raises(EndpointError, match="symlink"):
        DirLock(short_dir / "ctl.sock").acquire()


def test_a_lock_removed_with_its_dir_is_taken_again(short_dir: Path) -> None:
    lock = DirLock(short_dir / "rt" / "ctl.sock")
    (short_dir / "rt").mkdir()
    lock.acquire()
    try:
        shutil.rmtree(short_dir / "rt")
        assert not lock.intact()
        (short_dir / "rt").mkdir()
        lock.renew()
        assert lock.intact()
        with pytest.raises(AlreadyRunning):
            DirLock(short_dir / "rt" / "ctl.sock").acquire()
    finally:
        lock.release()


def test_a_removed_socket_file_is_bound_again(short_dir: Path) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    guard = EndpointGuard()
    endpoint = f"ipc://{short_dir}/rt/ctl.sock"
    try:
        (short_dir / "rt").mkdir(mode=0o700)
        guard.claim(endpoint)
        router.bind(endpoint)
        guard.watch(router, endpoint)
        assert guard.check() == []
        shutil.rmtree(short_dir / "rt")
        assert guard.check() == [endpoint]
        assert (short_dir / "rt" / "ctl.sock").exists()
        assert guard.statistics() == {"rebound": 1, "rebind_failed": 0}
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(endpoint)
        dealer.send(b"hello")
        assert router.poll(5000), "a new connection did not reach the rebound socket"
        assert router.recv_multipart()[1] == b"hello"
        dealer.close(0)
    finally:
        guard.close()
        router.close(0)
        ctx.term()


def test_the_budget_refuses_what_the_limit_cannot_hold() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    budget = FdBudget(per_worker=3, reserve=16)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_fds() + 16 + 3 * 4, hard))
        budget.check(4, 0, "scale 4")
        with pytest.raises(FdBudgetExceeded, match=r"scale 5 refused: 5 more worker\(s\)"):
            budget.check(5, 0, "scale 5")
        with pytest.raises(FdBudgetExceeded, match="at most 4 more fit now"):
            budget.check(5, 0, "scale 5")
        budget.check(0, 100, "nothing new")  # no new worker is never refused
        assert budget.statistics()["refused"] == 2
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_raise_nofile_goes_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))
        assert raise_nofile() == (hard, hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_an_accept_event_is_read_without_zmq_utils_monitor() -> None:
    import struct

    import zmq

    from busd.master.fdbudget import accepted_fd

    def frames(event: int, value: int) -> list[bytes]:
        return [struct.pack("=Hi", event, value), b"ipc:///x"]

    assert accepted_fd(frames(zmq.EVENT_ACCEPTED, 17)) == 17
    assert accepted_fd(frames(zmq.EVENT_CLOSED, 17)) is None
    assert accepted_fd([b"short", b"ipc:///x"]) is None
