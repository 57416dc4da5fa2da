"""A pool's slots and workers, and the restart policy of a slot (state under the pool's lock).

::

    worker exits, unplanned ------> Slot.crash(now, lived): restart after a backoff
                                      (0.1 s, 0.2 s, ... up to backoff_max), or,
                                      past flap_limit crashes in flap_window,
                                      FLAPPING: no more restarts
    no process could be made -----> Slot.spawn_lost(): the spawner was gone (the fork
      (the fork server was gone)      server died): retried once a new one is up;
                                      not a crash, not a restart
    ``scale N`` ------------------> Slot.rearm(): a FLAPPING slot restarts again

Only a process that ran and ended counts as a crash of its slot: a slot
whose spawns failed because the fork server was down has restarts 0.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import psutil

from busd.pool.exits import ExitReason


@dataclass(frozen=True)
class RestartPolicy:
    """How a crashing slot is restarted (the pool's ``--backoff`` and ``--flap-*`` flags)."""

    backoff: float = 0.1
    backoff_max: float = 10.0
    flap_limit: int = 5
    flap_window: float = 60.0


@dataclass(eq=False)
class Worker:
    """One worker process (internal, mutable; the pool's lock guards it)."""

    slot: int
    pid: int
    #: Which start of its slot this worker is (1 for the slot's first).
    generation: int
    pidfd: int
    started: float
    started_wall: float
    last_seen: float
    retiring: bool = False
    joined: bool = False
    #: Its client was registered at the pool's last look: the hub reports its loss.
    heard: bool = False
    kill_at: float | None = None
    exit_code: int | None = None
    proc: psutil.Process | None = None
    #: Why the pool ended it (None: it was not asked to go).
    reason: ExitReason | None = None
    #: It reached STARTED.
    up: bool = False
    #: When it is due for a recycle by age.
    recycle_at: float | None = None
    #: Reaped and its pidfd closed: the number may already name another file.
    reaped: bool = False
    #: Its pool, when logs must name it (a pool of a config file), else "".
    pool: str = ""

    @property
    def label(self) -> str:
        """``worker 0 (pid 123)``, ``web worker 0 (pid 123)``: how logs and errors name it."""
        return f"{self.pool + ' ' if self.pool else ''}worker {self.slot} (pid {self.pid})"


@dataclass(eq=False)
class Slot:
    """A place for one worker, with its restart history."""

    index: int
    worker: Worker | None = None
    #: Workers started again after one crashed or was killed for a timeout.
    restarts: int = 0
    #: Workers replaced by a recycle (max-age, max-rss, bus.recycle()).
    recycles: int = 0
    failures: int = 0
    crash_times: collections.deque[float] = field(default_factory=collections.deque)
    next_start: float | None = None
    flapping: bool = False
    #: Why it is flapping (shown by ``busctl status``).
    flap_reason: str | None = None
    #: The next start is a retry of a spawn the spawner lost, not a restart.
    retry: bool = False
    #: Spawns lost in a row (reset when a process is made).
    lost_spawns: int = 0
    booted: bool = False
    boot_failures: int = 0
    #: Why its last worker was replaced.
    reason: str | None = None

    def crash(self, now: float, lived: float, policy: RestartPolicy) -> bool:
        """Its worker crashed: schedule a restart; True if it is flapping now (no restart)."""
        self.crash_times.append(now)
        while self.crash_times and self.crash_times[0] < now - policy.flap_window:
            self.crash_times.popleft()
        if len(self.crash_times) > policy.flap_limit:
            self.flapping = True
            self.flap_reason = (
                f"{len(self.crash_times)} crashes in "
                f"{policy.flap_window:g}s (--flap-limit {policy.flap_limit})"
            )
            self.next_start = None
            return True
        self.failures = 1 if lived > policy.flap_window else self.failures + 1
        delay = min(policy.backoff_max, policy.backoff * 2 ** (self.failures - 1))
        self.next_start = now + delay
        self.retry = False
        return False

    def spawn_lost(self, now: float, policy: RestartPolicy) -> None:
        """No process was made because the spawner was gone: try again, uncounted.

        The delay grows like a crash's (a spawner that cannot come back is
        not asked 10 times a second) but nothing counts toward flapping.
        """
        self.retry = True
        self.lost_spawns += 1
        self.next_start = now + min(
            policy.backoff_max, policy.backoff * 2 ** min(self.lost_spawns - 1, 16)
        )

    def crash_count(self) -> int:
        """Crashes within the flap window at the last crash."""
        return len(self.crash_times)

    def rearm(self) -> None:
        """Forget its crashes: a FLAPPING slot is started again (``scale N``)."""
        self.flapping = False
        self.flap_reason = None
        self.crash_times.clear()
        self.failures = 0

    def row(self, state: str | None, stats: dict[str, Any], now_wall: float) -> dict[str, Any]:
        """Its line of ``workers`` (``state`` from its client; None: it has not joined)."""
        row: dict[str, Any] = {
            "id": self.index,
            "pid": None,
            "state": "FLAPPING" if self.flapping else "WAITING",
            "restarts": self.restarts,
            "recycles": self.recycles,
        }
        if self.reason:
            row["reason"] = self.reason
        if self.flapping:
            row["flapping"] = self.flap_reason or "crashed too often"
            row["reason"] = f"flapping: {self.crash_count()} crashes, not restarted"
        worker = self.worker
        if worker is not None:
            row.update(
                pid=worker.pid,
                generation=worker.generation,
                state=state or "SPAWNED",
                uptime=round(now_wall - worker.started_wall, 3),
                **stats,
            )
        return row


def process_stats(proc: psutil.Process | None) -> dict[str, Any]:
    """cpu % and seconds, rss, open fds and threads of a process (empty when it is gone)."""
    if proc is None:
        return {}
    try:
        with proc.oneshot():
            times = proc.cpu_times()
            return {
                "cpu_percent": proc.cpu_percent(None),
                "cpu_seconds": round(times.user + times.system, 3),
                "rss": proc.memory_info().rss,
                "fds": proc.num_fds(),
                "threads": proc.num_threads(),
            }
    except psutil.Error:
        return {}


__all__ = ["RestartPolicy", "Slot", "Worker", "process_stats"]
