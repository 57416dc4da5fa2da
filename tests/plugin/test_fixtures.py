"""The pytest plugin as a user's suite meets it: sample test files run with pytester.

Each sample is a user's test module that uses busd's fixtures against real
processes; pytester runs it (in this process where it can, in a fresh one
for pytest-xdist) and the outcome is checked: passes, a leak named, a
child's traceback shown.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

SAMPLE = '''
import fcntl
import os
import signal

from busd import states


def worker(bus):
    bus.subscribe("ping", lambda: bus.broadcast("pong", int(os.environ["BUSD_WORKER"])))


def test_pool_lifecycle(busd_pool, busd_client):
    pool = busd_pool(worker, "--heartbeat", "0.2", workers=3)
    assert [w["state"] for w in pool.workers] == ["STARTED"] * 3
    report = pool.graceful(wait=True)
    assert len(report["acks"]["acks"]) == 3
    busd_client.listen("pong")  # before the pongs can come
    busd_client.broadcast("ping")
    assert sorted(args[0] for args in busd_client.collect("pong", 3)) == [0, 1, 2]
    with pool.events() as events:
        pool.stop()
        events.expect(kind="state", state="STOPPED")
        pool.start()
        events.expect(kind="state", state="STARTED")
    old = pool.kill_worker(1, signal.SIGKILL)
    pool.wait_for(lambda s: old not in [w["pid"] for w in s["workers"]]
                  and [w["state"] for w in s["workers"]] == ["STARTED"] * 3)
    pool.scale(1)
    assert len(pool.workers) == 1
    assert "worker 0 [" in pool.log.text


def test_client_alone(busd_client):
    busd_client.wait_state("STARTED")
    busd_client.listen("news")
    busd_client.broadcast("news", "hello", n=1)
    assert busd_client.collect("news", 1) == [("hello", {"n": 1})]
    assert busd_client.bus.state is states.STARTED


def bump(bus, index, path, times):
    bus.barrier("start")
    for _ in range(times):
        with open(path, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            n = int(f.read() or 0)
            f.seek(0)
            f.write(str(n + 1))
            f.truncate()
    return index


def test_run_counter(busd_run, tmp_path):
    counter = tmp_path / "counter"
    counter.write_text("0")
    assert busd_run(bump, 8, str(counter), 1000) == list(range(8))
    assert counter.read_text() == "8000"


def line_up(bus, index, directory):
    open(os.path.join(directory, str(index)), "w").close()
    bus.barrier("written")
    seen = sorted(os.listdir(directory))
    bus.barrier("written")  # a barrier used again
    return seen


def test_run_barrier(busd_run, tmp_path):
    results = busd_run(line_up, 4, str(tmp_path))
    assert results == [["0", "1", "2", "3"]] * 4
'''

LEAKS = '''
import subprocess


def leaky(bus):
    subprocess.Popen(["sleep", "300"])  # never reaped, never killed


def test_leaks_a_grandchild(busd_pool):
    busd_pool(leaky, workers=1)
'''

RAISES = '''
def work(bus, index):
    if index == 2:
        raise ValueError(f"process {index} cannot count")
    return index


def test_child_raises(busd_run):
    busd_run(work, 3)
'''


@pytest.mark.slow
def test_sample_suite_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sample=SAMPLE)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_a_leaked_process_fails_the_test_and_is_named(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leak=LEAKS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)  # the body passed; its teardown fails
    result.stdout.fnmatch_lines(["*busd left processes behind (killed now):*",
                                 "*pid [0-9]*: sleep 300*"])


def test_a_child_that_raises_fails_with_its_traceback(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_raises=RAISES)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*busd_run: process 2 of 3 (pid [0-9]*) raised:*",
        "*Traceback (most recent call last):*",
        '*test_raises.py", line *, in work*',
        "*ValueError: process 2 cannot count*",
    ])


@pytest.mark.slow
def test_sample_suite_passes_under_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sample=SAMPLE, test_sample_copy=SAMPLE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["*2 workers*"])
