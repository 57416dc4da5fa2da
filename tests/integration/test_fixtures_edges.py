"""Edges of the busd_pool and busd_run fixtures, used directly (the plugin is loaded here)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from busd.testing import PoolFactory
from busd.testing.run import Runner


def quiet(bus: Any) -> None:
    print(f"hello from worker {os.environ['BUSD_WORKER']}", flush=True)


def test_pool_log_dir_scale_and_exit(busd_pool: PoolFactory, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    pool = busd_pool(quiet, "--log-dir", str(logs), "--heartbeat", "0.2", workers=2)
    assert "hello from worker 1" in pool.log.worker(1)
    assert "hello from worker 1" not in pool.log.worker(0)
    pool.scale("+1")
    assert [w["state"] for w in pool.workers] == ["STARTED"] * 3
    assert pool.exit() == 0


def forever(bus: Any, index: int) -> None:
    threading.Event().wait(120)


def gone_at_once(bus: Any, index: int) -> None:
    os._exit(3)


def echo(bus: Any, index: int, *args: Any, **kwargs: Any) -> Any:
    return [index, list(args), kwargs]


def test_run_passes_arguments_and_rejects_closures(busd_run: Runner) -> None:
    assert busd_run(echo, 2, "a", 1, flag=True) == [
        [0, ["a", 1], {"flag": True}],
        [1, ["a", 1], {"flag": True}],
    ]
    with pytest.raises(TypeError, match="module-level function"):
        busd_run(lambda bus, index: index, 1)


def test_run_names_a_process_that_ends_without_a_result(busd_run: Runner) -> None:
    with pytest.raises(pytest.fail.Exception) as failed:
        busd_run(gone_at_once, 2)
    assert "exited with status 3 and no result" in str(failed.value)


@pytest.mark.slow
def test_run_shows_the_stack_of_a_process_that_hangs(busd_run: Runner) -> None:
    with pytest.raises(pytest.fail.Exception) as failed:
        busd_run(forever, 1, timeout=3)
    message = str(failed.value)
    assert "processes [0] of 1 did not finish within 3" in message
    assert "in forever" in message  # faulthandler's dump of the hung thread
