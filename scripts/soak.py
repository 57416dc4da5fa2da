"""Soak: a busd under relay traffic, reloads, scaling and kills; its growth measured.

Run by hand (bounded; 30 minutes by default), with the project's interpreter::

    .venv/bin/python scripts/soak.py [--duration 1800] [--workers 4] [--json FILE]

A real ``busd -w N busd.examples.hello:main`` (its own session, its own
runtime dir under /tmp, output to a file there) runs while this script:

- relays traffic: a client broadcasts on channel ``soak`` through the master
  (to every worker and back to itself) at ``--rate`` per second, and every
  ``--burst-every`` seconds has the master publish a burst of ``--burst``
  messages at once (the plugin ``busd.examples.burst``: they travel in BATCH
  frames); it counts what came back, each number once;
- reloads every ``--reload-every`` seconds (``graceful``), scales the pool
  up by 2 and back every ``--scale-every`` seconds, SIGKILLs a random
  worker every ``--kill-every`` seconds;
- samples the master every second: RSS, open fds, threads, and the round
  trip of a ``ping`` on the control socket.

Then it prints each series at start and end and its slope (least squares,
per minute, after a warm-up) and fails (exit status 1) on growth:

- RSS less the bytes the master's replay window holds (the window fills
  by design up to its bound, 64 MiB by default; ``status`` says how much it
  holds): slope over ``--rss-slope`` MiB/min *and* growth (median of the
  last tenth over median of the first tenth) over ``--rss-growth`` MiB;
- fds and threads: more at the end than at the start at the same pool size;
- round trip: the median of the last quarter over 3x that of the first
  quarter plus 5 ms;
- any message that did not come back exactly once (each has its own number;
  after the run the client is given 30 s to catch up), or that its link
  counted as missed;
- and any busd crash, a lost master, or traffic that stopped coming back.

Exit status: 0 no growth, 1 growth or a failure, 2 usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from busd.client.bus import connect  # noqa: E402
from busd.client.control import Control  # noqa: E402
from busd.core.endpoints import default_endpoints  # noqa: E402 - after the path above
from busd.core.errors import BusError, NoMaster  # noqa: E402

MIB = 1 << 20


@dataclass(frozen=True)
class Sample:
    """One look at the master."""

    t: float
    rss: int
    fds: int
    threads: int
    rtt_ms: float
    size: int
    #: Bytes held by the master's replay window (bounded: 64 MiB by default).
    window: int = 0

    @property
    def rss_net(self) -> int:
        """RSS less the replay window, which fills by design until its bound."""
        return self.rss - self.window


@dataclass
class Tally:
    """What the soak did and saw (each counter has one writing thread)."""

    sent: int = 0
    received: int = 0
    #: Numbers that came back twice; what the client's link counted as missed.
    duplicates: int = 0
    missed: int = 0
    bursts: int = 0
    reloads: int = 0
    scales: int = 0
    kills: int = 0
    errors: list[str] = field(default_factory=list)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Soak a busd pool and fail on growth.")
    p.add_argument("--duration", type=float, default=1800.0, help="seconds [1800]")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--rate", type=float, default=100.0, help="broadcasts per second [100]")
    p.add_argument("--burst", type=int, default=1000, help="messages per burst, 0 for none [1000]")
    p.add_argument("--burst-every", type=float, default=1.0, help="seconds [1]")
    p.add_argument("--reload-every", type=float, default=10.0)
    p.add_argument("--scale-every", type=float, default=30.0)
    p.add_argument("--kill-every", type=float, default=15.0)
    p.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds left out of the slopes [10%% of the run, at most 120]",
    )
    p.add_argument("--rss-slope", type=float, default=1.0, help="MiB/min [1]")
    p.add_argument("--rss-growth", type=float, default=8.0, help="MiB [8]")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--json", help="also write the summary here")
    opts = p.parse_args(argv)
    if opts.duration <= 0 or opts.workers < 1 or opts.rate <= 0 or opts.burst_every <= 0:
        p.error("--duration, --workers, --rate and --burst-every must be positive")
    if opts.burst < 0:
        p.error("--burst must not be negative")
    return opts


def slope_per_min(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (seconds), per minute."""
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return 60.0 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


class Soak:
    """Runs one busd and the loads around it."""

    def __init__(self, opts: argparse.Namespace, workdir: Path) -> None:
        self.opts = opts
        self.dir = workdir
        self.rng = random.Random(opts.seed)
        self.tally = Tally()
        self.samples: list[Sample] = []
        self.stop = threading.Event()
        self.size = opts.workers
        self.log = workdir / "busd.log"
        with open(self.log, "wb") as out:
            self.busd = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "busd",
                    "--runtime-dir",
                    str(workdir),
                    "--log-level",
                    "WARNING",
                    "--backoff",
                    "0.05",
                    "--flap-limit",
                    "1000",
                    "--plugin",
                    "busd.examples.burst:plugin",
                    "-w",
                    str(opts.workers),
                    "busd.examples.hello:main",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        self.master = psutil.Process(self.busd.pid)
        self.ctl = Control(default_endpoints(workdir).ctl, timeout=10)

    # -- the loads (each in its own thread) ----------------------------------

    def traffic(self) -> None:
        seen = bytearray()  # one byte per number sent: how often it came back

        def got(i: int) -> None:
            if i >= len(seen):
                seen.extend(bytes(i + 1 - len(seen) + 65536))
            if seen[i]:
                self.tally.duplicates += 1
            else:
                seen[i] = 1
                self.tally.received += 1

        with connect(runtime_dir=self.dir, role="soak") as bus:
            bus.subscribe("soak", got)
            bus.mirror()
            interval = 1.0 / self.opts.rate
            next_at = next_burst = time.monotonic()
            while not self.stop.wait(max(0.0, min(next_at, next_burst) - time.monotonic())):
                try:
                    if self.opts.burst and time.monotonic() >= next_burst:
                        next_burst += self.opts.burst_every
                        first, self.tally.sent = self.tally.sent, self.tally.sent + self.opts.burst
                        bus.broadcast("burst", "soak", first, self.opts.burst)
                        self.tally.bursts += 1
                    else:
                        next_at += interval
                        bus.broadcast("soak", self.tally.sent)
                        self.tally.sent += 1
                except BusError as exc:
                    self.tally.errors.append(f"broadcast: {exc}")
                    return
            # Caught up: every number came back (what is still on its way, within 30 s).
            deadline = time.monotonic() + 30
            while self.tally.received < self.tally.sent and time.monotonic() < deadline:
                threading.Event().wait(0.05)
            self.tally.missed = int(bus.statistics()["link"]["missed"])

    def chaos(self) -> None:
        ctl = Control(default_endpoints(self.dir).ctl, timeout=30)
        o = self.opts
        now = time.monotonic()
        due = {
            "reload": now + o.reload_every,
            "scale": now + o.scale_every,
            "kill": now + o.kill_every,
        }
        try:
            while True:
                action = min(due, key=due.__getitem__)
                if self.stop.wait(max(0.0, due[action] - time.monotonic())):
                    return
                try:
                    self.act(ctl, action)
                except BusError as exc:
                    self.tally.errors.append(f"{action}: {exc}")
                due[action] += {
                    "reload": o.reload_every,
                    "scale": o.scale_every,
                    "kill": o.kill_every,
                }[action]
        finally:
            ctl.close()

    def act(self, ctl: Control, action: str) -> None:
        if action == "reload":
            ctl.request("graceful", timeout=30)
            self.tally.reloads += 1
        elif action == "scale":
            self.size = (
                self.opts.workers + 2 if self.size == self.opts.workers else self.opts.workers
            )
            ctl.request("scale", n=str(self.size))
            self.tally.scales += 1
        else:
            pids = [w["pid"] for w in ctl.request("workers") if w.get("pid")]
            if pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.rng.choice(pids), signal.SIGKILL)
                self.tally.kills += 1

    def sample(self, t0: float) -> None:
        began = time.perf_counter()
        self.ctl.request("ping", timeout=10)
        rtt = (time.perf_counter() - began) * 1000
        window = int(self.ctl.request("status", timeout=10).get("replay", {}).get("bytes", 0))
        with self.master.oneshot():
            self.samples.append(
                Sample(
                    t=time.monotonic() - t0,
                    rss=self.master.memory_info().rss,
                    fds=self.master.num_fds(),
                    threads=self.master.num_threads(),
                    rtt_ms=round(rtt, 3),
                    size=self.size,
                    window=window,
                )
            )

    # -- the run ---------------------------------------------------------------

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.busd.poll() is not None:
                raise SystemExit(
                    f"busd ended at start ({self.busd.returncode}): {self.log.read_text()[-2000:]}"
                )
            with contextlib.suppress(NoMaster):
                workers = self.ctl.request("workers", timeout=1)
                if [w["state"] for w in workers] == ["STARTED"] * self.opts.workers:
                    return
            self.stop.wait(0.1)
        raise SystemExit(f"busd not ready within {timeout}s")

    def run(self) -> None:
        self.wait_ready()
        threads = [
            threading.Thread(target=self.traffic, name="traffic"),
            threading.Thread(target=self.chaos, name="chaos"),
        ]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        end = t0 + self.opts.duration
        try:
            while time.monotonic() < end and self.busd.poll() is None:
                try:
                    self.sample(t0)
                except (NoMaster, psutil.Error) as exc:
                    self.tally.errors.append(f"sample: {exc}")
                    break
                self.stop.wait(max(0.0, 1.0 - (time.monotonic() - t0) % 1.0))
        finally:
            self.stop.set()
            for t in threads:
                t.join(60)

    def close(self) -> list[int]:
        """Exit busd (then SIGKILL its session) and name any process left."""
        with contextlib.suppress(BusError):
            self.ctl.request("exit", timeout=30)
        self.ctl.close()
        try:
            self.busd.wait(30)
        except subprocess.TimeoutExpired:
            self.tally.errors.append("busd did not exit within 30s")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.busd.pid, signal.SIGKILL)
        self.busd.wait(10)
        left = []
        for proc in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
                if os.getsid(proc.pid) == self.busd.pid:
                    left.append(proc.pid)
                    proc.kill()
        return left


def same_size(samples: list[Sample], attr: str) -> tuple[float, float]:
    """The median of ``attr`` in the first and last third, at the most common pool size."""
    sizes = statistics.multimode([s.size for s in samples])
    size = max(sizes)
    chosen = [s for s in samples if s.size == size]
    third = max(1, len(chosen) // 3)
    return (
        statistics.median(getattr(s, attr) for s in chosen[:third]),
        statistics.median(getattr(s, attr) for s in chosen[-third:]),
    )


def judge(opts: argparse.Namespace, soak: Soak, left: list[str]) -> dict[str, Any]:
    """Slopes, start and end figures, and every reason to fail."""
    warmup = opts.warmup if opts.warmup is not None else min(120.0, opts.duration / 10)
    kept = [s for s in soak.samples if s.t >= warmup] or soak.samples
    failures = list(soak.tally.errors)
    summary: dict[str, Any] = {
        "duration": opts.duration,
        "samples": len(soak.samples),
        "warmup": warmup,
        **asdict(soak.tally),
    }
    if len(kept) < 5:
        failures.append(f"only {len(kept)} samples after the warm-up")
        summary["failures"] = failures
        return summary
    summary.update(series(kept))
    failures += growth(opts, kept, summary)
    tally = soak.tally
    if tally.sent == 0 or tally.received != tally.sent:
        failures.append(f"traffic: {tally.received} of {tally.sent} came back")
    if tally.duplicates or tally.missed:
        failures.append(f"traffic: {tally.duplicates} came back twice, {tally.missed} missed")
    if soak.busd.returncode not in (0, None):
        failures.append(f"busd ended with status {soak.busd.returncode}")
    if left:
        failures.append(f"processes left behind: {left}")
    summary["failures"] = failures
    return summary


def series(kept: list[Sample]) -> dict[str, dict[str, float]]:
    """Start, end, min, max and slope of each sampled figure."""
    xs = [s.t for s in kept]
    out = {}
    for attr in ("rss", "rss_net", "window", "fds", "threads", "rtt_ms"):
        ys = [float(getattr(s, attr)) for s in kept]
        out[attr] = {
            "start": ys[0],
            "end": ys[-1],
            "min": min(ys),
            "max": max(ys),
            "slope_per_min": round(slope_per_min(xs, ys), 4),
        }
    return out


def growth(opts: argparse.Namespace, kept: list[Sample], summary: dict[str, Any]) -> list[str]:
    """Each sign of growth, as a failure (and the figures it was judged on)."""
    failures = []
    tenth = max(1, len(kept) // 10)
    for attr in ("rss", "rss_net"):
        summary[attr]["growth_mib"] = round(
            (
                statistics.median(getattr(s, attr) for s in kept[-tenth:])
                - statistics.median(getattr(s, attr) for s in kept[:tenth])
            )
            / MIB,
            3,
        )
    # Judged net of the replay window: it grows by design, up to its bound.
    net = summary["rss_net"]
    if net["slope_per_min"] / MIB > opts.rss_slope and net["growth_mib"] > opts.rss_growth:
        failures.append(
            f"RSS less the replay window grows {net['slope_per_min'] / MIB:.2f} "
            f"MiB/min ({net['growth_mib']:.1f} MiB over the run)"
        )
    for attr in ("fds", "threads"):
        first, last = same_size(kept, attr)
        summary[attr]["same_size_first_last"] = [first, last]
        if last > first:
            failures.append(f"{attr} grew from {first} to {last} at the same pool size")
    quarter = max(1, len(kept) // 4)
    rtt_first = statistics.median(s.rtt_ms for s in kept[:quarter])
    rtt_last = statistics.median(s.rtt_ms for s in kept[-quarter:])
    summary["rtt_ms"]["median_first_last"] = [rtt_first, rtt_last]
    if rtt_last > 3 * rtt_first + 5:
        failures.append(f"round trip grew from {rtt_first:.2f} to {rtt_last:.2f} ms")
    return failures


def report(summary: dict[str, Any]) -> None:
    print(
        f"soak: {summary['duration']:g}s, {summary['samples']} samples, "
        f"{summary['reloads']} reloads, {summary['scales']} scale changes, "
        f"{summary['kills']} kills, {summary['bursts']} bursts; {summary['received']}/"
        f"{summary['sent']} messages back ({summary['duplicates']} twice, "
        f"{summary['missed']} missed)"
    )
    units = {
        "rss": ("MiB", MIB),
        "rss_net": ("MiB", MIB),
        "window": ("MiB", MIB),
        "fds": ("", 1),
        "threads": ("", 1),
        "rtt_ms": ("ms", 1),
    }
    for attr, (unit, div) in units.items():
        if attr in summary:
            s = summary[attr]
            print(
                f"  {attr:8} start {s['start'] / div:10.2f}{unit}  end {s['end'] / div:10.2f}"
                f"{unit}  max {s['max'] / div:10.2f}{unit}  slope "
                f"{s['slope_per_min'] / div:+.4f}{unit}/min"
            )
    for failure in summary["failures"]:
        print(f"FAIL: {failure}")
    print("PASS: no growth" if not summary["failures"] else "soak failed")


def main(argv: list[str] | None = None) -> int:
    try:
        opts = parse(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    workdir = Path(tempfile.mkdtemp(prefix="soak", dir="/tmp"))
    os.chmod(workdir, 0o700)
    try:
        soak = Soak(opts, workdir)
        try:
            soak.run()
        finally:
            left = soak.close()
        summary = judge(opts, soak, [str(p) for p in left])
        summary["log_tail"] = (
            soak.log.read_text(errors="replace")[-1500:] if summary["failures"] else ""
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(summary)
    if opts.json:
        Path(opts.json).write_text(json.dumps(summary, indent=2))
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
