"""Helpers for the plugin tests that run real processes, and tests of the helpers.

A child script gets ``report(line)``, which writes one line to a pipe the
test reads with ``Child.expect(prefix)``: the test waits on the pipe, never
on a clock.  Every child runs in its own session; leaving ``child_process``
kills its process group and reaps it.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Upper bound of every wait; the normal case takes milliseconds.
TIMEOUT = 10.0

T = TypeVar("T")

PR_SET_CHILD_SUBREAPER = 36

PRELUDE = """\
import os as _os

def report(line):
    _os.write(int(_os.environ["BUSD_TEST_REPORT_FD"]), (str(line) + "\\n").encode())

"""


def wait_for(predicate: Callable[[], T], timeout: float, message: str, interval: float = 0.01) -> T:
    """Poll ``predicate`` until it is truthy; fail with ``message`` after ``timeout``.

    Only for observations from outside (a file appears, a process is gone):
    each pause is a bounded ``Event.wait``, and so is the whole.
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"{message} (waited {timeout}s)", pytrace=False)
        pause.wait(interval)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment, with the repository importable and ``extra`` added."""
    env = dict(os.environ)
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), existing) if p)
    env.update(extra or {})
    return env


class Child:
    """A running child script: its process, output files and report pipe."""

    def __init__(self, proc: subprocess.Popen[bytes], report_fd: int, out: Path, err: Path) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.out = out
        self.err = err
        self._fd = report_fd
        self._buffer = b""
        self.seen: list[str] = []

    def expect(self, prefix: str, timeout: float = TIMEOUT) -> str:
        """The next reported line, which must start with ``prefix``."""
        line = self._next_line(timeout, f"waiting for a line starting {prefix!r}")
        if not line.startswith(prefix):
            pytest.fail(
                f"expected a line starting {prefix!r}, got {line!r}\n{self.diagnostics()}",
                pytrace=False,
            )
        return line

    def _next_line(self, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._fd], [], [], max(0.0, left))
            if not ready:
                pytest.fail(
                    f"timed out after {timeout}s {what}\n{self.diagnostics()}", pytrace=False
                )
            chunk = os.read(self._fd, 4096)
            if not chunk:
                pytest.fail(f"report pipe closed while {what}\n{self.diagnostics()}", pytrace=False)
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\n", 1)
        line = raw.decode()
        self.seen.append(line)
        return line

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        """Wait for the process to end; its exit status."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"child {self.pid} still running after {timeout}s\n{self.diagnostics()}",
                pytrace=False,
            )

    def stderr(self) -> str:
        """What the child wrote to stderr so far."""
        return self.err.read_text(errors="replace")

    def diagnostics(self) -> str:
        """Reported lines, stdout and stderr, for failure messages."""
        return (
            f"reported: {self.seen}\n--- stdout ---\n{self.out.read_text(errors='replace')}"
            f"\n--- stderr ---\n{self.stderr()}"
        )


@contextmanager
def child_process(
    tmp_path: Path,
    source: str,
    args: Sequence[str] = (),
    name: str = "child",
    env: Mapping[str, str] | None = None,
) -> Iterator[Child]:
    """Run ``source`` (after the prelude) as a script in a new session.

    On leaving, the process group is killed and the child reaped.
    """
    script = tmp_path / f"{name}.py"
    script.write_text(PRELUDE + textwrap.dedent(source))
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    rfd, wfd = os.pipe()
    try:
        with open(out, "wb") as out_f, open(err, "wb") as err_f:
            proc = subprocess.Popen(
                [sys.executable, str(script), *args],
                stdin=subprocess.DEVNULL,
                stdout=out_f,
                stderr=err_f,
                start_new_session=True,
                cwd=tmp_path,
                env=child_env({"BUSD_TEST_REPORT_FD": str(wfd), **(env or {})}),
                pass_fds=(wfd,),
            )
    finally:
        # Only the child keeps the write end: its exit ends our reads.
        os.close(wfd)
    try:
        yield Child(proc, rfd, out, err)
    finally:
        kill_group(proc)
        os.close(rfd)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group led by ``proc`` and reap ``proc`` (bounded)."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)


@contextmanager
def subreaper() -> Iterator[None]:
    """Make this process adopt its orphaned descendants, so a test can reap them.

    Daemons and killed process trees get reparented; this machine's init does
    not reap, so without this they would linger as zombies.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if not sys.platform.startswith("linux") or libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0):
        pytest.skip("needs Linux's PR_SET_CHILD_SUBREAPER")
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def wait_gone(pids: Sequence[int], timeout: float = TIMEOUT) -> None:
    """Wait until none of ``pids`` runs, reaping those that are our children."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _gone, alive = psutil.wait_procs(procs, timeout=timeout)
    assert not alive, f"processes still running after {timeout}s: {alive}"


# -- tests of the helpers --------------------------------------------------------


def test_expect_reads_reported_lines_in_order(tmp_path: Path) -> None:
    with child_process(
        tmp_path,
        """
        report("one")
        report("two")
    """,
    ) as child:
        assert child.expect("one") == "one"
        assert child.expect("two") == "two"
        assert child.wait_exit() == 0


def test_expect_fails_with_stderr_when_the_child_dies(tmp_path: Path) -> None:
    with (
        child_process(
            tmp_path,
            """
        raise SystemExit("boom from the child")
    """,
        ) as child,
        pytest.raises(pytest.fail.Exception, match="boom from the child"),
    ):
        child.expect("never")


def test_leaving_kills_the_whole_process_group(tmp_path: Path) -> None:
    with subreaper():
        with child_process(
            tmp_path,
            """
            import subprocess, sys
            grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            report(f"grandchild {grandchild.pid}")
            grandchild.wait()
        """,
        ) as child:
            grandchild = int(child.expect("grandchild").split()[1])
            assert psutil.Process(grandchild).status() != psutil.STATUS_ZOMBIE
        # Killed with its parent, then adopted by us: reaping it proves it ended.
        wait_gone([grandchild])


def test_wait_for_fails_with_the_message() -> None:
    with pytest.raises(pytest.fail.Exception, match="never true"):
        wait_for(lambda: False, 0.05, "never true")
