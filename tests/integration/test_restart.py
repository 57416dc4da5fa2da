"""Bus.restart(): a real process re-executes itself from block().

The child program below runs twice in the same process.  Its first run starts
a bus, records itself, opens an inheritable descriptor, changes directory and
calls ``bus.restart()`` from another thread while the main thread is in
``bus.block()``.  The second run (it finds the first run's record) records
itself and exits 0.  Records are JSON lines in a file in ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE = "busd_restart_child"
FLAGS = ["-X", "utf8", "-O", "-B"]
ARGS = ["arg1", "--opt=two words"]

CHILD_SOURCE = r"""
import json
import os
import sys
import threading

RECORDS = os.path.join(os.environ["RESTART_TEST_DIR"], "records.jsonl")


def inherited_fd_state(fd, dev, ino):
    # Checked first, before this run opens any file that could reuse the number.
    try:
        st = os.fstat(fd)
    except OSError:
        return "closed"
    return "inherited" if (st.st_dev, st.st_ino) == (dev, ino) else "reused"


def flags():
    return {"utf8_mode": sys.flags.utf8_mode, "optimize": sys.flags.optimize,
            "dont_write_bytecode": sys.flags.dont_write_bytecode}


def record(**fields):
    fields.update(pid=os.getpid(), argv=sys.argv, flags=flags(), cwd=os.getcwd(),
                  pythonpath=os.environ.get("PYTHONPATH", ""))
    with open(RECORDS, "a", encoding="utf-8") as out:
        out.write(json.dumps(fields) + "\n")


def first_run():
    from busd import Bus

    bus = Bus()
    bus.start()
    marker = os.path.join(os.environ["RESTART_TEST_DIR"], "inherited.txt")
    fd = os.open(marker, os.O_RDWR | os.O_CREAT, 0o600)
    os.set_inheritable(fd, True)
    st = os.fstat(fd)
    record(run=1, fd=fd, dev=st.st_dev, ino=st.st_ino)
    os.chdir(os.environ["RESTART_ELSEWHERE"])
    threading.Thread(target=bus.restart, name="restarter").start()
    bus.block(timeout=10)
    record(run=1, error="block() returned instead of re-executing")
    sys.exit(3)


def second_run(first):
    fd_state = inherited_fd_state(first["fd"], first["dev"], first["ino"])
    record(run=2, fd_state=fd_state)
    sys.exit(0)


def main():
    if not os.path.exists(RECORDS):
        first_run()
    with open(RECORDS, encoding="utf-8") as src:
        runs = [json.loads(line) for line in src]
    if len(runs) != 1:
        record(run=len(runs) + 1, error="ran more than twice")
        sys.exit(4)
    second_run(runs[0])


main()
"""


def child_env(tmp_path: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        # The flags must come from the command line, not from the environment.
        if key not in {"PYTHONUTF8", "PYTHONOPTIMIZE", "PYTHONDONTWRITEBYTECODE", "PYTHONPATH"}
    }
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["RESTART_TEST_DIR"] = str(tmp_path)
    env["RESTART_ELSEWHERE"] = str(tmp_path / "elsewhere")
    return env


def run_child(tmp_path: Path, command: list[str]) -> tuple[int, list[dict[str, Any]]]:
    """Run the child to completion; return its exit code and its records."""
    (tmp_path / "elsewhere").mkdir()
    stdout = (tmp_path / "stdout.txt").open("wb")
    stderr = (tmp_path / "stderr.txt").open("wb")
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=child_env(tmp_path),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the child did not finish within 60 s\n" + child_output(tmp_path))
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        stdout.close()
        stderr.close()
    records_file = tmp_path / "records.jsonl"
    assert records_file.exists(), "the child wrote no record\n" + child_output(tmp_path)
    lines = records_file.read_text(encoding="utf-8").splitlines()
    return code, [json.loads(line) for line in lines]


def child_output(tmp_path: Path) -> str:
    parts = []
    for name in ("stdout.txt", "stderr.txt"):
        path = tmp_path / name
        text = path.read_text(errors="replace") if path.exists() else ""
        parts.append(f"--- child {name} ---\n{text}")
    return "\n".join(parts)


@pytest.mark.parametrize("how", ["module", "script"])
def test_restart_reexecutes_the_same_command_line_in_the_same_process(
    tmp_path: Path, how: str
) -> None:
    (tmp_path / f"{MODULE}.py").write_text(CHILD_SOURCE, encoding="utf-8")
    target = ["-m", MODULE] if how == "module" else [f"{MODULE}.py"]
    command = [sys.executable, *FLAGS, *target, *ARGS]

    code, runs = run_child(tmp_path, command)

    details = json.dumps(runs, indent=1) + "\n" + child_output(tmp_path)
    assert [r["run"] for r in runs] == [1, 2], details
    first, second = runs
    assert code == 0, details
    assert "error" not in first, details
    assert "error" not in second, details
    assert second["pid"] == first["pid"], "restart() must re-exec, not spawn"
    assert second["argv"] == first["argv"], details
    assert first["argv"][1:] == ARGS
    expected_flags = {"utf8_mode": 1, "optimize": 1, "dont_write_bytecode": True}
    assert first["flags"] == expected_flags, details
    assert second["flags"] == expected_flags, "interpreter flags were lost on re-exec"
    startup_dir = os.path.realpath(tmp_path)
    assert os.path.realpath(first["cwd"]) == startup_dir
    assert os.path.realpath(second["cwd"]) == startup_dir, "the startup directory was not restored"
    assert second["fd_state"] == "closed", "an inherited descriptor survived the re-exec"
    if how == "module":
        # The -m fix: the startup directory stays importable whatever the cwd.
        assert startup_dir in [os.path.realpath(p) for p in second["pythonpath"].split(os.pathsep)]
