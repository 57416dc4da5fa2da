"""The runtime-dir lock and endpoint repair, and the fd budget, in one process."""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from busd.errors import AlreadyRunning
from busd.fdbudget import FdBudget, FdBudgetExceeded, open_fds, raise_nofile
from busd.rundir import DirLock, EndpointGuard, holder_pid, lock_name


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
        assert holder_pid(first.name) == os.getpid()
        with pytest.raises(AlreadyRunning, match=rf"pid {os.getpid()}"):
            second.acquire()
        other = DirLock(short_dir / "pub.sock")
        other.acquire()  # another path, another lock
        other.release()
    finally:
        first.release()
    second.acquire()
    assert second.held
    second.release()
    assert not second.held
    assert lock_name("/a/b") != lock_name("/a/c")
    assert lock_name("/a/b") == lock_name("/a/./b")


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
