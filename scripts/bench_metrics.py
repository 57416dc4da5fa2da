"""Metrics benchmark: busd's ``GET /metrics`` and the master's idle cost, beside a floor.

Run by hand (it is not a test), with the project's interpreter and the extra
``busd[metrics]`` installed::

    .venv/bin/python scripts/bench_metrics.py [--quick] [--scrapes N]

Every process is a real subprocess in its own session (output to a file),
each busd in its own short runtime dir under /tmp (removed after).  A busd is
always ended: ``exit`` through the control socket, then SIGKILL to its
process group, every wait bounded; afterwards no process of its session may
be left (psutil), or the run fails.

1. scrape: ``python -m busd --runtime-dir D --metrics 127.0.0.1:PORT -w 32
   busd.examples.metrics:main`` with ``BUSD_EXAMPLE_SERIES=50`` (each worker's
   registry holds 51 counters); once ``busctl wait`` says all 32 workers are
   STARTED and a first scrape shows every worker's series merged, N scrapes
   (``GET /metrics`` with urllib, one after another): p50 and p99 in ms.
   The floor: one process holding the same 32 x 50 series (a counter per
   series, one child per slot) in one prometheus_client registry, served by
   ``prometheus_client.start_http_server`` on another port: the same scrapes,
   alternating with busd's, so other work on the machine weighs on both alike.
   busd gathers those 1600 series from 32 processes and serves them summed
   per pool; the floor serves all 1600 from one: what collecting and writing
   that many costs without a bus in between.
   Goal: p50 <= 50 ms on 2 cores.
2. idle: the master's CPU (the schedstat of each of its threads, summed)
   over 60 s (30 s with --quick) with a scrape every 15 s, against the same
   master without scrapes (a second busd, the same pool, without
   ``--metrics``).  Goal: the difference <= 0.1 % of a core.
3. a pool of 3 (the same worker): N scrapes, p50 and p99.  The bound: well
   under 250 ms, counted as PASS when p99 is at most a fifth of it.

Without the extra (prometheus_client), busd refuses ``--metrics`` and this
bench says so in one line (exit status 1).  A goal missed is printed as MISS
in the summary; the exit status is 1 only when the run itself failed or left
a process behind.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
BUSCTL = [PYTHON, "-m", "busd.client.ctl.busctl"]
TARGET = "busd.examples.metrics:main"
WORKERS = 32
#: The pool of section 3, and the bound its scrape must stay well under (ms).
SMALL = 3
GOAL_SMALL_MS = 250.0
SERIES = 50
SCRAPE_EVERY = 15.0
GOAL_P50_MS = 50.0
GOAL_IDLE_PCT = 0.1
#: Seconds left to a master before its idle window (the start, the scrapes behind it).
SETTLE = 5.0
clock = time.perf_counter

#: The floor: the same 32 x 50 series in one registry, served by prometheus_client itself
#: (without the ``_created`` samples, which busd leaves out of what it merges).
FLOOR = """
import os, sys
os.environ["PROMETHEUS_DISABLE_CREATED_SERIES"] = "True"
from prometheus_client import Counter, start_http_server
port, workers, series = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
counters = [
    Counter(f"busd_example_series_{i}", f"Extra series {i}.", ["pool", "slot"])
    for i in range(series)
]
hits = Counter("busd_example_hits", "Hits.", ["pool", "slot"])
for slot in range(workers):
    hits.labels("main", str(slot))
    for counter in counters:
        counter.labels("main", str(slot)).inc()
start_http_server(port, addr="127.0.0.1")
print("ready", flush=True)
sys.stdin.read()  # until the bench closes our stdin
"""


class BenchError(Exception):
    """The benchmark itself failed (not a slow figure: a broken run)."""


# -- processes ------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def session_members(sid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes in session ``sid``."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def end_session(proc: subprocess.Popen[bytes], problems: list[str], what: str) -> None:
    """SIGKILL what is left of ``proc``'s session, reap it, note any process left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    _, alive = psutil.wait_procs(session_members(proc.pid), timeout=2)
    if alive:
        problems.append(f"left behind by {what} {proc.pid}: {[(p.pid, p.name()) for p in alive]}")
        for other in alive:
            with contextlib.suppress(psutil.Error):
                other.kill()


def wait_first(procs: Sequence[subprocess.Popen[bytes]], timeout: float) -> None:
    """Until one of ``procs`` ended (pidfds, no polling), at most ``timeout`` seconds."""
    fds = []
    try:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                fds.append(os.pidfd_open(proc.pid))
        if len(fds) == len(procs):
            select.select(fds, [], [], timeout)
    finally:
        for fd in fds:
            os.close(fd)


def child_env(pycache: Path) -> dict[str, str]:
    """The bench's environment without BUSD_*, with a warm bytecode cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUSD_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env["BUSD_EXAMPLE_SERIES"] = str(SERIES)
    return env


# -- scraping --------------------------------------------------------------------------


def scrape(port: int) -> tuple[float, str]:
    """One ``GET /metrics``: seconds it took and the text; BenchError if it fails."""
    began = clock()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            body: bytes = reply.read()
    except (urllib.error.URLError, OSError) as exc:
        raise BenchError(f"GET http://127.0.0.1:{port}/metrics: {exc}") from exc
    return clock() - began, body.decode(errors="replace")


def sample_value(text: str, name: str, labels: str) -> float | None:
    """The value of the sample ``name{labels}`` in Prometheus text (labels as written)."""
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :].split()[0])
    return None


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``, in ms."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank] * 1000


# -- the floor -------------------------------------------------------------------------


class Floor:
    """prometheus_client's own HTTP server with the same series, in a process of its own."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log_path = work / "floor.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [PYTHON, "-c", FLOOR, str(self.port), str(WORKERS), str(SERIES)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 30) -> None:
        """Until it says ready (bounded)."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready or self.proc.stdout.readline().strip() != b"ready":
            raise BenchError(
                f"the floor was not ready within {timeout} s: "
                f"{self.log_path.read_text(errors='replace')[-500:]}"
            )

    def close(self, problems: list[str]) -> None:
        """Close its stdin (it ends), then make sure nothing of it is left."""
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            problems.append(f"the floor {self.proc.pid} did not end in 5 s: killed")
        end_session(self.proc, problems, "the floor")
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -- one busd under test ---------------------------------------------------------------


class Busd:
    """A busd of metrics workers (32), with ``--metrics`` on a port of its own or without."""

    def __init__(
        self, work: Path, env: dict[str, str], metrics: bool, workers: int = WORKERS
    ) -> None:
        self.workers = workers
        self.runtime = Path(tempfile.mkdtemp(prefix="bmd-", dir="/tmp"))
        self.log_path = work / f"{self.runtime.name}.log"
        self.port = free_port() if metrics else None
        flags = ["--metrics", f"127.0.0.1:{self.port}"] if metrics else []
        self.argv = [
            PYTHON,
            "-m",
            "busd",
            "--runtime-dir",
            str(self.runtime),
            "--log-level",
            "WARNING",
            *flags,
            "-w",
            str(workers),
            TARGET,
        ]
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.problems: list[str] = []

    @property
    def pid(self) -> int:
        """busd's pid (also its session and process group id)."""
        assert self.proc is not None
        return self.proc.pid

    def ctl(self, *args: str) -> list[str]:
        """A busctl command line for this busd."""
        return [*BUSCTL, "--runtime-dir", str(self.runtime), *args]

    def launch(self, timeout: float = 120) -> float:
        """Start busd; until ``busctl wait`` says all 32 workers are STARTED (seconds)."""
        began = clock()
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )
        waiter = subprocess.Popen(
            self.ctl("wait", "--timeout", str(timeout)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
        )
        try:
            wait_first([self.proc, waiter], timeout + 5)
            took = clock() - began
            if self.proc.poll() is not None:
                raise self._refused()
        finally:
            if waiter.poll() is None:
                waiter.kill()
            said = waiter.communicate(timeout=5)[0].decode(errors="replace").strip()
        if waiter.returncode != 0:
            raise BenchError(f"busctl wait: {said or waiter.returncode}\n{self.tail()}")
        return took

    def _refused(self) -> BenchError:
        """Why busd ended during its start: one line when it refused a flag."""
        assert self.proc is not None
        self.proc.wait(5)
        lines = self.tail().strip().splitlines()
        if self.proc.returncode == 2 and len(lines) == 1:
            return BenchError(
                f"busd refused its command line ({lines[0]}): this bench needs busd's "
                "--metrics runtime and the extra busd[metrics]"
            )
        return BenchError(
            f"busd exited with {self.proc.returncode} during its start\n{self.tail()}"
        )

    def wait_merged(self, tries: int = 5) -> str:
        """Scrape until every worker's series are in the merged text (a few tries).

        Each worker made its counters before its bus mirrored the master, so
        once all are STARTED the first scrape should hold them all; a worker
        slow to answer one scrape is left out of it, hence a few tries.
        """
        assert self.port is not None
        text = ""
        for _ in range(tries):  # each scrape is bounded by busd (and by urllib's timeout)
            text = scrape(self.port)[1]
            last = sample_value(text, f"busd_example_series_{SERIES - 1}_total", 'pool="main"')
            if last == self.workers:
                return text
        raise BenchError(
            f"busd's /metrics did not show busd_example_series_{SERIES - 1}_total"
            f'{{pool="main"}} {self.workers} in {tries} scrapes; the last one:\n{text[-800:]}'
        )

    def tail(self) -> str:
        """The end of busd's output."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-1500:]
        return ""

    def close(self) -> None:
        """Exit busd (or kill its group), reap it, and check that nothing of it is left."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self._exit()
        finally:
            if self.proc is not None:
                end_session(self.proc, self.problems, "busd")
            shutil.rmtree(self.runtime, ignore_errors=True)

    def _exit(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(
                self.ctl("--timeout", "10", "exit"),
                env=self.env,
                capture_output=True,
                timeout=20,
                check=False,
            )
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.problems.append(f"busd {self.pid} did not exit in 15 s: killed")
            return
        if self.proc.returncode != 0:
            self.problems.append(f"busd {self.pid} exited with {self.proc.returncode}")


@contextlib.contextmanager
def running_busd(bench: Bench, metrics: bool, workers: int = WORKERS) -> Iterator[Busd]:
    """A launched Busd, always closed; its problems go to the bench."""
    busd = Busd(bench.work, bench.env, metrics, workers)
    try:
        took = busd.launch()
        print(f"  busd pid {busd.pid}: {workers} workers STARTED in {took * 1000:.0f} ms")
        yield busd
    finally:
        try:
            busd.close()
        finally:
            bench.problems += busd.problems


# -- the bench's state and results ------------------------------------------------------


@dataclass
class Bench:
    """What every section shares, and what they found."""

    env: dict[str, str]
    work: Path
    quick: bool
    scrapes: int
    busd_times: list[float] = field(default_factory=list)
    floor_times: list[float] = field(default_factory=list)
    small_times: list[float] = field(default_factory=list)
    idle: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def idle_seconds(self) -> float:
        """The idle window."""
        return 30.0 if self.quick else 60.0


# -- 1. scrapes, 2. idle -----------------------------------------------------------------


def bench_scrapes(bench: Bench, busd: Busd) -> None:
    """N scrapes of busd and of the floor, alternating."""
    assert busd.port is not None
    text = busd.wait_merged()
    missing = sample_value(text, "busd_scrape_missing_workers", "")
    print(
        f"  busd's scrape: {len(text)} bytes, {len(text.splitlines())} lines, "
        f"busd_scrape_missing_workers {missing}"
    )
    floor = Floor(bench.work, bench.env)
    try:
        floor.wait_ready()
        floor_text = scrape(floor.port)[1]
        print(f"  the floor's: {len(floor_text)} bytes, {len(floor_text.splitlines())} lines")
        for _ in range(3):  # warm both (connections, caches); not measured
            scrape(busd.port)
            scrape(floor.port)
        for _ in range(bench.scrapes):
            bench.busd_times.append(scrape(busd.port)[0])
            bench.floor_times.append(scrape(floor.port)[0])
    finally:
        floor.close(bench.problems)
    after = sample_value(scrape(busd.port)[1], "busd_scrape_missing_workers", "")
    if after:
        bench.problems.append(f"busd_scrape_missing_workers is {after} after the scrapes")
    for who, times in (("floor", bench.floor_times), ("busd", bench.busd_times)):
        print(
            f"  {who:<5} {len(times)} scrapes: p50 {percentile(times, 50):.1f} ms, "
            f"p99 {percentile(times, 99):.1f} ms, max {max(times) * 1000:.1f} ms"
        )


def master_cpu(pid: int) -> float:
    """The CPU seconds of the master's threads, from schedstat (ns precision: psutil's
    10 ms ticks are 0.017 % steps over 60 s, a sixth of the goal)."""
    ran = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            ran += int((task / "schedstat").read_text().split()[0])
    return ran / 1e9


def idle_cpu(busd: Busd, seconds: float, scrape_every: float | None) -> float:
    """The master's CPU over ``seconds`` in % of a core, scraping every ``scrape_every``."""
    ticker = threading.Event()  # never set: its bounded wait is the window's cadence
    before = master_cpu(busd.pid)
    began = clock()
    end, next_scrape = began + seconds, began
    scrapes = 0
    while (now := clock()) < end:
        if scrape_every is not None and busd.port is not None and now >= next_scrape:
            scrape(busd.port)
            scrapes += 1
            next_scrape += scrape_every
        ticker.wait(max(0.0, min(next_scrape if scrape_every else end, end) - clock()))
    after = master_cpu(busd.pid)
    took = clock() - began
    used = after - before
    print(
        f"  master pid {busd.pid}, {took:.1f} s, {scrapes} scrapes: "
        f"cpu {used / took * 100:.3f} % of a core"
    )
    return used / took * 100


def bench_idle(bench: Bench, busd: Busd, scraped: bool) -> None:
    """One idle window, settled first (the start and the scrapes behind it)."""
    threading.Event().wait(SETTLE)  # the start's and the scrapes' work drains; not measured
    key = "scraped" if scraped else "plain"
    bench.idle[key] = idle_cpu(busd, bench.idle_seconds, SCRAPE_EVERY if scraped else None)


# -- the report ---------------------------------------------------------------------------


def verdict(value: float, goal: float) -> str:
    """PASS or MISS."""
    return "PASS" if value <= goal else "MISS"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain text table."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for row in [list(headers), ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def summary(bench: Bench) -> None:
    """The summary table, ratio lines and goal lines."""
    busd50, floor50 = percentile(bench.busd_times, 50), percentile(bench.floor_times, 50)
    busd99, floor99 = percentile(bench.busd_times, 99), percentile(bench.floor_times, 99)
    scraped, plain = bench.idle["scraped"], bench.idle["plain"]
    extra = scraped - plain
    rows = [
        ["scrape p50", f"{floor50:.1f} ms", f"{busd50:.1f} ms", f"{busd50 / floor50:.2f}x"],
        ["scrape p99", f"{floor99:.1f} ms", f"{busd99:.1f} ms", f"{busd99 / floor99:.2f}x"],
        ["idle master cpu, no --metrics", "-", f"{plain:.3f} %", "-"],
        [f"idle master cpu, scrape/{SCRAPE_EVERY:g} s", "-", f"{scraped:.3f} %", "-"],
        ["idle cost of metrics", "-", f"{extra:+.3f} %", "-"],
        [f"scrape p99, pool of {SMALL}", "-", f"{percentile(bench.small_times, 99):.1f} ms", "-"],
    ]
    print_table(["metric", "floor", "busd", "ratio"], rows)
    print(f"\nratio: busd's scrape p50 is {busd50 / floor50:.2f}x prometheus_client's own server")
    print(f"ratio: busd's scrape p99 is {busd99 / floor99:.2f}x prometheus_client's own server")
    cores = os.cpu_count()
    print(
        f"goal: p50 <= {GOAL_P50_MS:g} ms on 2 cores: {busd50:.1f} ms on {cores} cores: "
        f"{verdict(busd50, GOAL_P50_MS)}"
    )
    print(
        f"goal: idle cost of a scrape every {SCRAPE_EVERY:g} s <= {GOAL_IDLE_PCT:g} % of a core: "
        f"{extra:+.3f} %: {verdict(extra, GOAL_IDLE_PCT)}"
    )
    small99 = percentile(bench.small_times, 99)
    print(
        f"goal: a scrape of a pool of {SMALL} well under {GOAL_SMALL_MS:g} ms: p99 "
        f"{small99:.1f} ms: {verdict(small99, GOAL_SMALL_MS / 5)} (the bar: a fifth of it)"
    )


# -- main ---------------------------------------------------------------------------------


def run_sections(bench: Bench) -> None:
    """The three sections, printing details as they go."""
    subprocess.run(
        [PYTHON, "-c", "import busd.__main__, busd.client.ctl.busctl, busd.examples.metrics"],
        env=bench.env,
        capture_output=True,
        timeout=60,
        check=True,
    )  # compile busd's bytecode into the cache (not measured)
    print(
        f"1. scrapes: busd -w {WORKERS} {TARGET} with BUSD_EXAMPLE_SERIES={SERIES}, "
        f"{bench.scrapes} scrapes alternating with the floor"
    )
    with running_busd(bench, metrics=True) as busd:
        bench_scrapes(bench, busd)
        print(f"2. idle master, {bench.idle_seconds:.0f} s: with a scrape every {SCRAPE_EVERY:g} s")
        bench_idle(bench, busd, scraped=True)
    print(f"2b. the same master without --metrics, idle {bench.idle_seconds:.0f} s")
    with running_busd(bench, metrics=False) as busd:
        bench_idle(bench, busd, scraped=False)
    print(f"3. a pool of {SMALL} workers: {bench.scrapes} scrapes")
    with running_busd(bench, metrics=True, workers=SMALL) as busd:
        assert busd.port is not None
        busd.wait_merged()
        bench.small_times = [scrape(busd.port)[0] for _ in range(bench.scrapes)]
        times = bench.small_times
        print(
            f"  busd  {len(times)} scrapes: p50 {percentile(times, 50):.1f} ms, "
            f"p99 {percentile(times, 99):.1f} ms, max {max(times) * 1000:.1f} ms"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the sections and print the summary; 1 if the run failed or left processes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 scrapes, 30 s idle windows")
    parser.add_argument("--scrapes", type=int, help="scrapes of each (default 200, 50 quick)")
    args = parser.parse_args(argv)
    if args.scrapes is not None and args.scrapes < 1:
        parser.error("--scrapes is at least 1")
    if importlib.util.find_spec("prometheus_client") is None:
        print("bench_metrics: needs the extra busd[metrics] (prometheus_client)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="bm-", dir="/tmp"))
    scrapes = args.scrapes or (50 if args.quick else 200)
    bench = Bench(child_env(work / "pycache"), work, args.quick, scrapes)
    began = clock()
    print(
        f"busd metrics benchmark ({'quick' if args.quick else 'full'}): {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}, Python {sys.version.split()[0]}, prometheus_client "
        f"{_version('prometheus_client')}"
    )
    try:
        run_sections(bench)
    except (BenchError, OSError, psutil.Error, subprocess.SubprocessError) as exc:
        # One line says what failed; busd's output, when it helps, follows it.
        print(f"bench_metrics: {str(exc) or type(exc).__name__}", file=sys.stderr)
        for problem in bench.problems:
            print(f"PROBLEM: {problem}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nsummary ({clock() - began:.0f} s; {bench.scrapes} scrapes each; "
        f"load now {os.getloadavg()[0]:.1f})"
    )
    summary(bench)
    for problem in bench.problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if bench.problems else 0


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
