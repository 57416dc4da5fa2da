"""Every shell command shown in the README and the user docs, run against a real busd.

A ```console block holds ``$ command`` lines, each followed by the output
it shows.  The commands of one file run in order, in one scratch directory
(``.venv`` there is this environment), with the runtime dir of the test.
A command ending in ``&`` runs in the background; when it is a busd, the
next command waits until every worker is STARTED and connected, as a
reader would before typing it, unless that command is ``busctl wait``
(which must do that waiting itself).  ``; echo $?`` shows the exit status, which
must match; without it the status must be 0.

Output is compared by shape, not text, so wording can change: each
``key: value`` line needs its key, each table (a title such as WORKERS,
then a header) needs as many rows, a JSON document needs its keys, and any
other line needs a line starting with the same word.

The two set-up commands of the README are not run here: ``.ci/run`` runs
the test command, and this test checks it is the README's.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from busd.core.control import Control
from busd.core.endpoints import default_endpoints
from busd.core.errors import NoMaster
from busd.testing import Processes
from busd.testing.pool import Events

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["README.md", "docs/GUIDE.md", "docs/TESTING.md", "deploy/README.md"]
FENCE = re.compile(r"^```console\n(.*?)^```", re.S | re.M)
KEY = re.compile(r"^\s*([A-Za-z][\w-]*):(\s|$)")
TITLE = re.compile(r"^[A-Z][A-Z-]+$")
HEADER = re.compile(r"^[A-Z][A-Z-]*(\s{2,}[A-Z][A-Z-]*)+$")
STATUS_SUFFIX = "; echo $?"


@dataclass(frozen=True)
class Command:
    """One ``$`` line of a doc and the output shown under it."""

    source: str
    line: int
    text: str
    shown: tuple[str, ...]

    @property
    def background(self) -> bool:
        return self.text.rstrip().endswith("&")

    def expected_status(self) -> tuple[str, int, tuple[str, ...]]:
        """The command to run, the exit status it must give, and the rest of the output."""
        command = self.text.split("  #")[0].rstrip()
        if command.endswith(STATUS_SUFFIX):
            assert self.shown, f"{self.where}: '; echo $?' without a status under it"
            assert self.shown[-1].strip().isdigit(), f"{self.where}: no status under it"
            return command[: -len(STATUS_SUFFIX)], int(self.shown[-1]), self.shown[:-1]
        return command, 0, self.shown

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


def commands(relpath: str) -> list[Command]:
    """The ``$`` commands of every console block of a doc, in order."""
    text = (ROOT / relpath).read_text()
    found: list[Command] = []
    for block in FENCE.finditer(text):
        first_line = text[: block.start()].count("\n") + 2
        lines = block.group(1).splitlines()
        current: tuple[int, str, list[str]] | None = None
        for offset, line in enumerate(lines):
            if line.startswith("$ "):
                if current is not None:
                    found.append(Command(relpath, current[0], current[1], tuple(current[2])))
                current = (first_line + offset, line[2:], [])
            else:
                assert current is not None, f"{relpath}:{first_line + offset}: output first"
                current[2].append(line)
        if current is not None:
            found.append(Command(relpath, current[0], current[1], tuple(current[2])))
    return found


def tables(lines: list[str]) -> dict[str, int]:
    """Rows of each titled table (title line, header line, rows up to a blank line)."""
    found: dict[str, int] = {}
    title = None
    for i, line in enumerate(lines):
        if TITLE.match(line.strip()) and i + 1 < len(lines) and HEADER.match(lines[i + 1].strip()):
            title = line.strip()
            found[title] = 0
        elif title is not None and not line.strip():
            title = None
        elif title is not None and not HEADER.match(line.strip()):
            found[title] += 1
    return found


def shape_mismatches(shown: tuple[str, ...], actual: str) -> list[str]:
    """How ``actual`` differs in shape from the output the doc shows (empty: alike)."""
    got = actual.splitlines()
    problems = []
    if shown and shown[0].lstrip().startswith("{"):
        try:
            doc, want = json.loads(actual), json.loads("\n".join(shown))
        except ValueError as exc:
            return [f"not one JSON document ({exc})"]
        return [f"JSON key {k!r} missing" for k in want if k not in doc]
    keys = {m.group(1) for line in got if (m := KEY.match(line))}
    firsts = {line.split()[0] for line in got if line.split()}
    want_tables, got_tables = tables(list(shown)), tables(got)
    for title, rows in want_tables.items():
        if got_tables.get(title) != rows:
            problems.append(f"table {title}: {got_tables.get(title)} rows, the doc shows {rows}")
    in_table = {line for line in shown if HEADER.match(line.strip()) or TITLE.match(line.strip())}
    for line in shown:
        if not line.strip() or line in in_table or _row_of_table(line, shown, want_tables):
            continue
        key = KEY.match(line)
        if key and key.group(1) not in keys:
            problems.append(f"no {key.group(1)!r} line")
        elif not key and line.split()[0] not in firsts:
            problems.append(f"no line starting {line.split()[0]!r}")
    return problems


def _row_of_table(line: str, shown: tuple[str, ...], want_tables: dict[str, int]) -> bool:
    title = None
    for other in shown:
        if other.strip() in want_tables:
            title = other
        elif not other.strip():
            title = None
        if other is line:
            return title is not None
    return False


def wait_pool_ready(
    procs: Processes, runtime: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0
) -> None:
    """Until the busd in ``runtime`` says every worker is STARTED and connected."""
    deadline = time.monotonic() + timeout
    status: dict[str, object] = {}
    where = default_endpoints(runtime)
    with Control(where.ctl, timeout=1.0) as control, Events(where.pub) as events:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"busd exited ({proc.returncode}): {procs.output(proc)}")
            try:
                status = control.request("status")
            except NoMaster:
                continue
            workers = status.get("workers") or []
            clients = status.get("clients") or []
            assert isinstance(workers, list)
            assert isinstance(clients, list)
            if (
                status.get("state") == "STARTED"
                and len(clients) >= len(workers)
                and all(w.get("state") == "STARTED" for w in workers)
            ):
                return
            events.wait_readable(0.05)  # woken by what busd publishes, 50 ms at most
    pytest.fail(f"busd never had all its workers STARTED: {status}")


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    indented = [line.strip() for line in readme.splitlines() if line.startswith("    python3 ")]
    assert len(indented) == 2, indented
    install, test = indented
    assert install.endswith("&& .venv/bin/busd -w 4 busd.examples.hello:main")
    assert test in (ROOT / ".ci" / "run").read_text()


def test_every_doc_shows_commands() -> None:
    for doc in DOCS:
        assert commands(doc), f"{doc} shows no console block"


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS)
def test_doc_commands(doc: str, busd_procs: Processes, busd_dir: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.executable).parent.parent)
    runtime = busd_dir / "rt"
    env = {
        **busd_procs.env,
        "BUSD_RUNTIME_DIR": str(runtime),
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
    }
    env.pop("BUSD_NAME", None)
    failures = []
    found = commands(doc)
    for index, cmd in enumerate(found):
        text, status, shown = cmd.expected_status()
        after = found[index + 1].text if index + 1 < len(found) else ""
        if cmd.background:
            proc = subprocess.Popen(
                ["bash", "-c", text.rstrip("& ")],
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            busd_procs.started.append(proc)
            proc.log_path = work / "busd.log"  # type: ignore[attr-defined]
            if "busd " in text and "busctl wait" not in after:
                wait_pool_ready(busd_procs, runtime, proc)
            continue
        done = subprocess.run(
            ["bash", "-c", text],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        output = done.stdout + done.stderr
        if done.returncode != status:
            failures.append(
                f"{cmd.where}: `{text}` exited {done.returncode}, the doc shows {status}:\n{output}"
            )
            continue
        failures += [
            f"{cmd.where}: `{text}`: {p}\n{output}" for p in shape_mismatches(shown, output)
        ]
    assert not failures, "\n\n".join(failures)
