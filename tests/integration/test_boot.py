"""busd fails fast when its workers cannot boot, and shows their error once."""

from __future__ import annotations

import sys
import time

import pytest

from busd.pool.exits import EX_BOOT
from busd.testing import Processes

BAD_TARGETS = {  # how busd is run, and the last line of the worker's traceback
    "no module": (["nosuchmodule:main"], "ModuleNotFoundError: No module named 'nosuchmodule'"),
    "no function": (
        ["tests.integration.targets:nosuch"],
        "AttributeError: module 'tests.integration.targets' has no attribute 'nosuch'",
    ),
    "not callable": (
        ["tests.integration.targets:NOT_CALLABLE"],
        "TypeError: tests.integration.targets:NOT_CALLABLE is not callable",
    ),
    "raises": (["tests.integration.targets:crash"], "RuntimeError: this worker cannot start"),
    "exec": (
        ["--spawn", "exec", "nosuchmodule:main"],
        "ModuleNotFoundError: No module named 'nosuchmodule'",
    ),
    "preload": (
        ["--preload", "nosuchmodule:main"],
        "ModuleNotFoundError: No module named 'nosuchmodule'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_TARGETS))
def test_a_bad_target_exits_at_once_with_its_error_once(busd_procs: Processes, case: str) -> None:
    args, error = BAD_TARGETS[case]
    began = time.monotonic()
    busd = busd_procs.spawn([sys.executable, "-m", "busd", "-w", "2", *args], name="busd")
    code = busd.wait(15)
    took = time.monotonic() - began
    out = busd_procs.output(busd)
    assert code == EX_BOOT, out
    assert took < 5.0, f"took {took:.1f}s to give up:\n{out}"
    assert out.count(error) == 1, out
    assert out.count("Traceback (most recent call last)") == 1, out
    assert "failed to boot" in out, out
