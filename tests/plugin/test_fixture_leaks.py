"""A process a ``busd_pool`` worker leaves running fails the test that started the pool.

The worker ends what it left running when it exits (its own leak guard), so
the process is gone by the time the fixture looks: the fixture still names
it, as docs/TESTING.md says, whether it stayed in the worker's session or
went to one of its own.  A child the worker ends itself in an exit listener
is no leak.  Each user's test module runs with pytester.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

LEAKS = """
import subprocess


def leaves_children(bus):
    subprocess.Popen(["sleep", "311"])  # in the worker's session
    subprocess.Popen(["sleep", "312"], start_new_session=True)  # detached: a session of its own


def tidy(bus):
    child = subprocess.Popen(["sleep", "313"])

    def end_it():
        child.terminate()
        child.wait(10)

    bus.subscribe("exit", end_it)


def test_leaves_children(busd_pool):
    busd_pool(leaves_children, *FLAGS)


def test_tidy(busd_pool):
    busd_pool(tidy, *FLAGS)
"""


@pytest.mark.parametrize("flags", [(), ("--spawn", "exec", "--log-dir", "logs")])
def test_a_process_a_worker_left_running_fails_the_test_and_is_named(
    pytester: pytest.Pytester, flags: tuple[str, ...]
) -> None:
    logs = pytester.path / "logs"
    logs.mkdir()
    flag_values = tuple(str(logs) if f == "logs" else f for f in flags)
    pytester.makepyfile(test_leak=f"FLAGS = {flag_values!r}\n{LEAKS}")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)  # the bodies passed; one teardown fails
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaves_children*",
            "*busd left processes behind (killed now):*",
        ]
    )
    result.stdout.fnmatch_lines(["pid [0-9]*: sleep 311 (left running by its worker*"])
    result.stdout.fnmatch_lines(["pid [0-9]*: sleep 312 (left running by its worker*"])
    assert "sleep 313" not in result.stdout.str()
