"""The pytest plugin as a user's suite meets it: sample test files run with pytester.

Each sample is a user's test module that uses busd's fixtures against real
processes; pytester runs it (in this process where it can, in a fresh one
for pytest-xdist) and the outcome is checked: passes, a leak named, a
child's traceback shown.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest_plugins = ["pytester"]


def python_blocks(relpath: str) -> str:
    """The Python code blocks of a doc, as one module."""
    text = (ROOT / relpath).read_text()
    return "\n\n".join(re.findall(r"^```python\n(.*?)^```", text, re.S | re.M))


# The user's test module is docs/TESTING.md's examples: the doc cannot drift.
SAMPLE = python_blocks("docs/TESTING.md")

LEAKS = """
import os
import subprocess


def leaky(bus):
    # A daemon of the worker's: in a session of its own, its parent gone at once.
    subprocess.run(["sh", "-c", "setsid sleep 301 > /dev/null 2>&1 &"], check=True)


def test_leaks_processes(busd_pool):
    busd_pool(leaky, workers=1)
    os.spawnlp(os.P_NOWAIT, "sleep", "sleep", "302")  # the test's own, never waited for
"""

RAISES = """
def work(bus, index):
    if index == 2:
        raise ValueError(f"process {index} cannot count")
    return index


def test_child_raises(busd_run):
    busd_run(work, 3)
"""


@pytest.mark.slow
def test_sample_suite_passes(pytester: pytest.Pytester) -> None:
    assert SAMPLE.count("\ndef test_") == 4
    pytester.makepyfile(test_sample=SAMPLE)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_a_leaked_process_fails_the_test_and_is_named(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leak=LEAKS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)  # the body passed; its teardown fails
    result.stdout.fnmatch_lines(["*busd left processes behind (killed now):*"])
    # busd's fork server ends a worker's daemon with its worker, and says so.
    result.stdout.fnmatch_lines(["pid [0-9]*: sleep 301*"])
    result.stdout.fnmatch_lines(["pid [0-9]*: sleep 302"])


def test_a_child_that_raises_fails_with_its_traceback(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_raises=RAISES)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*busd_run: process 2 of 3 (pid [0-9]*) raised:*",
            "*Traceback (most recent call last):*",
            '*test_raises.py", line *, in work*',
            "*ValueError: process 2 cannot count*",
        ]
    )


@pytest.mark.slow
def test_sample_suite_passes_under_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sample=SAMPLE, test_sample_copy=SAMPLE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["*2 workers*"])
