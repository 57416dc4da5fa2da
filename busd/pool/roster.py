"""The pool's slots and their workers: spawning, retiring, killing, failure accounting.

::

    [busd-commands] owns all of it ---------------------------> [busd-pool] supervisor
      _spawn   -> spawner.spawn_many -> Watch(pid, pidfd) ----->   (watches, reports)
      _retire  -> SIGTERM, kill_at deadline                  |
      _settle  -> WakeAt(next deadline), publishes the view -+
    any thread: the published PoolView (workers(), kill_all) -- read only

Only the command thread changes a slot, a worker or the counters here; the
supervisor is told what to watch and when to wake (:mod:`busd.pool.supervisor`).
Other threads read the :class:`PoolView` the command thread publishes after
each change (one attribute, replaced whole).  The one lock orders the close
of a reaped worker's pidfd against :meth:`Pool.kill_all`, the forced shutdown
that may run on any thread while the command thread is busy.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from busd.master.bus import MasterBus
from busd.master.fdbudget import FdBudget
from busd.pool.exits import BootReports, ExitReason, never_joined
from busd.pool.hooks import Hooks
from busd.pool.killtree import kill_tree
from busd.pool.orphans import write_pids
from busd.pool.ready import Ready
from busd.pool.recycle import RecycleConfig, Recycler
from busd.pool.slots import RestartPolicy, Slot, Worker
from busd.pool.spawn import Spawner, SpawnerGone
from busd.pool.supervisor import PoolMessage, Supervisor, WakeAt, Watch


@dataclass(frozen=True)
class PoolConfig:
    """How the pool behaves; every field has a ``busd`` flag."""

    size: int = 1
    graceful_timeout: float = 10.0
    worker_timeout: float = 30.0
    startup_timeout: float = 30.0
    reload: str = "inplace"
    backoff: float = 0.1
    backoff_max: float = 10.0
    flap_limit: int = 5
    flap_window: float = 60.0
    recycle: RecycleConfig = field(default_factory=RecycleConfig)
    #: Each worker's stdout and stderr to ``<log_dir>/<name>-worker-<slot>.log``
    #: (a pool of a config file: ``<log_dir>/<name>-<pool>-<slot>.log``).
    log_dir: str | None = None
    name: str = "busd"
    #: The pool's name (the command line's pool is ``main``).
    pool: str = "main"
    #: What it runs: a TARGET, or a command (for status).
    target: str | None = None
    command: tuple[str, ...] = ()
    #: False: a program that does not speak the bus (``command`` with ``bus = false``).
    bus: bool = True
    #: What STARTED means for such a program (None: alive for a second).
    ready: Ready | None = None
    #: Sent to such a program on graceful (None: it is respawned); and on stop.
    reload_signal: int | None = None
    stop_signal: int = signal.SIGTERM
    #: The pools whose workers must be STARTED before this one's start.
    after: tuple[str, ...] = ()
    #: A pool of a config file: log files and log lines name the pool.
    from_file: bool = False

    @property
    def policy(self) -> RestartPolicy:
        """How a crashing slot is restarted."""
        return RestartPolicy(self.backoff, self.backoff_max, self.flap_limit, self.flap_window)


@dataclass(frozen=True)
class PoolView:
    """What other threads may read: each slot with its worker, and every live worker."""

    slots: tuple[tuple[Slot, Worker | None], ...] = ()
    live: tuple[Worker, ...] = ()


#: How often the readiness of a program that does not speak the bus is probed.
PROBE_EVERY = 0.1
#: What STARTED means for a program that does not speak the bus when nothing says.
DEFAULT_READY = Ready(seconds=1.0)

#: The supervisor's deadline as the pool knows it when it does not: the next settle
#: sends the deadline whatever it is (no deadline is ever equal to this one).
UNSENT = -math.inf
#: Failures in a row of a slot that never started, before the pool gives up.
BOOT_ATTEMPTS = 2


class Roster:
    """The slots and workers of one pool (the command thread owns them)."""

    def __init__(
        self, master: MasterBus, spawner: Spawner, config: PoolConfig, pids_file: Path | None
    ) -> None:
        self.master = master
        self.pids_file = pids_file
        self.spawner = spawner
        self.config = config
        self.size = config.size
        self._slots: dict[int, Slot] = {}
        self._retired: list[Worker] = []
        #: Starts of each slot index so far (a slot scaled away and back counts on).
        self._starts: collections.Counter[int] = collections.Counter()
        #: Workers that ended other than by a stop, by reason (crash, reload, ...).
        self.exits: collections.Counter[str] = collections.Counter()
        self._active = False
        self._exiting = False
        self.hooks = Hooks(master, config.pool if config.from_file else None)
        self._recycler = Recycler(config.recycle)
        #: Refuses a start, scale or respawn the open-file limit cannot hold.
        self.budget = FdBudget()
        self._boot = BootReports(Path(master.runtime_dir) / "boot")
        self._booted = False
        #: Set when workers failed to boot and the pool gave up (busd exits EX_BOOT).
        self.boot_failure: str | None = None
        #: False for a pool added to a running busd (reload-config): a worker that fails
        #: to boot is restarted with backoff (and may flap), never the end of busd.
        self.gives_up_at_boot = True
        #: The supervisor's reports, for the command thread (see Upkeep.drain).
        self._inbox: queue.SimpleQueue[PoolMessage] = queue.SimpleQueue()
        self._supervisor = Supervisor(spawner, self._report)
        self._wake_at: float | None = None
        self._view = PoolView()
        #: Set by kill_all (any thread): nothing is spawned any more.
        self._halted = threading.Event()
        self._pidfds = threading.Lock()
        #: Called (command thread) when one of its workers reaches STARTED.
        self.on_started: Callable[[], None] | None = None

    def _report(self, message: PoolMessage) -> None:
        """On the supervisor thread: queue ``message`` for the command thread."""
        self._inbox.put(message)
        self.master.call_soon(self.drain)

    def drain(self) -> None:
        """Handle every message the supervisor queued (command thread)."""
        raise NotImplementedError

    def _next_deadline(self) -> float | None:
        """When the supervisor should send the next Tick (monotonic; None: no deadline)."""
        times = [w.kill_at for w in self._retired if w.kill_at is not None]
        if self._active:
            times += [s.next_start for s in self._slots.values() if s.next_start is not None]
        if not self._exiting and self.config.bus:
            # The hub drops a silent client sooner than --worker-timeout (as a rule), and
            # that loss wakes the pool (a client hook): a worker whose client it holds
            # needs no deadline of its own, so an idle pool sleeps.
            watched = self.config.worker_timeout > self._hub_loss_after()
            times += [
                w.last_seen + self.config.worker_timeout
                for w in self._live()
                if not w.retiring and not (watched and w.heard)
            ]
        elif not self._exiting:  # a program's readiness is probed until it holds
            times += [self._probe_at(w) for w in self._live() if not w.retiring and not w.up]
        if self._recycler.active and self._active:
            ages = [
                s.worker.recycle_at
                for s in self._slots.values()
                if s.worker is not None and s.worker.recycle_at is not None
            ]
            times += [t for t in [self._recycler.next_time(ages)] if t is not None]
        return min(times) if times else None

    def _hub_loss_after(self) -> float:
        """The longest silence of a client the hub allows: it drops the client at its
        first heartbeat past ``pong_interval`` x ``liveness``."""
        hub = self.master.hub
        return hub.pong_interval * hub.liveness + hub.heartbeat

    @property
    def _who(self) -> str:
        """``pool NAME `` in log lines of a config file's pool, else nothing."""
        return f"pool {self.config.pool} " if self.config.from_file else ""

    def _probe_at(self, worker: Worker) -> float:
        """When to look again whether a program is ready (``ready`` seconds: then)."""
        ready = self.config.ready
        if ready is not None and ready.seconds is not None:
            return worker.started + ready.seconds
        return time.monotonic() + PROBE_EVERY

    def _settle(self) -> None:
        """After a change: publish the view; tell the supervisor the next deadline."""
        live = self._live()
        slots = sorted(self._slots.values(), key=lambda s: s.index)
        self._view = PoolView(tuple((s, s.worker) for s in slots), tuple(live))
        when = self._next_deadline()
        if when != self._wake_at:
            self._wake_at = when
            self._supervisor.order(WakeAt(when))

    # -- spawning ---------------------------------------------------------------------

    def _spawn(self, slots: list[Slot], event: str = "worker_spawned") -> list[Worker]:
        """Start a worker in each slot, in one batch where the spawner can; an old one
        there is retired."""
        if self._halted.is_set():
            return []
        plan = []
        for slot in slots:
            self._starts[slot.index] += 1
            generation = self._starts[slot.index]
            plan.append((slot, generation, self._worker_env(slot, generation)))
        results = self.spawner.spawn_many([(slot.index, env) for slot, _, env in plan])
        now = time.monotonic()
        made = []
        for (slot, generation, _), result in zip(plan, results, strict=True):
            if isinstance(result, OSError):
                self._spawn_failed(slot, result, now)
                continue
            slot.lost_spawns = 0
            worker = self._place(slot, generation, *result, now)
            self._supervisor.order(Watch(worker.pid, worker.pidfd))
            made.append(worker)
        self._record_pids()
        for worker in made:
            self.master.log(f"{worker.label} spawned (generation {worker.generation})")
            info = {"worker": worker.slot, "pid": worker.pid, "generation": worker.generation}
            # One event per spawn: worker_restarted or worker_recycling say why.
            self.hooks.emit("worker_spawned", info, event=event)
        self._settle()
        return made

    def _worker_env(self, slot: Slot, generation: int) -> dict[str, str]:
        env = {
            "BUSD_WORKER": str(slot.index),
            "BUSD_WORKER_GENERATION": str(generation),
            "BUSD_GENERATION": str(generation),
            "BUSD_BOOT_DIR": str(self._boot.directory),
            "BUSD_POOL": self.config.pool,
        }
        config = self.config
        if config.log_dir:
            file = (
                f"{config.name}-{config.pool}-{slot.index}.log"
                if config.from_file
                else f"{config.name}-worker-{slot.index}.log"
            )
            env["BUSD_LOG_FILE"] = str(Path(config.log_dir) / file)
        return env

    def _place(self, slot: Slot, generation: int, pid: int, pidfd: int, now: float) -> Worker:
        """Record a new worker in its slot."""
        worker = Worker(
            slot=slot.index,
            pid=pid,
            generation=generation,
            pidfd=pidfd,
            started=now,
            started_wall=time.time(),
            pool=self.config.pool if self.config.from_file else "",
            last_seen=now + self.config.startup_timeout - self.config.worker_timeout,
        )
        try:
            worker.proc = psutil.Process(pid)
        except psutil.Error:
            worker.proc = None
        worker.recycle_at = self._recycler.deadline(now)
        worker.joined = not self.config.bus  # a program has no client to join with
        if slot.worker is not None:
            self._retired.append(slot.worker)
        slot.worker = worker
        slot.next_start = None
        return worker

    def _record_pids(self) -> None:
        """Keep workers.pids current, so a later master can find orphans."""
        if self.pids_file is not None:
            write_pids(self.pids_file, [w.proc for w in self._live() if w.proc is not None])

    def _spawn_failed(self, slot: Slot, error: OSError, now: float) -> None:
        """No process could be made for ``slot``."""
        text = str(error).rstrip()
        if isinstance(error, SpawnerGone):
            # Not the slot's fault: tried again once a new fork server is up.
            self.master.log(f"worker {slot.index} not started ({text}): trying again", level=30)
            slot.spawn_lost(now, self.config.policy)
            return
        if self._boot.first_time(text):
            self.master.log(f"cannot start worker {slot.index}: {text}", level=40)
        else:
            self.master.log(f"cannot start worker {slot.index}: the same error", level=40)
        self._failed(slot, now)

    # -- failures -----------------------------------------------------------------------

    def _failed(self, slot: Slot, now: float, lived: float = 0.0, unjoined: bool = False) -> None:
        """A worker of ``slot`` failed: give up at boot, else restart it.

        At boot, a worker that never joined within the startup timeout ends
        busd at once: the same command would not join the next time either.
        """
        if slot.booted or self._booted or not self.gives_up_at_boot:
            slot.boot_failures = 0
            self._crashed(slot, now, lived)
            return
        slot.boot_failures += 1
        if slot.boot_failures < BOOT_ATTEMPTS and not unjoined:
            self._crashed(slot, now, lived)
            return
        if self.boot_failure is None:
            self.boot_failure = (
                f"worker {slot.index} {never_joined(self.config.startup_timeout, True)}"
                if unjoined
                else f"worker {slot.index} failed to boot {slot.boot_failures} times in a row"
            )
            self.boot_failure += "; no worker ever started"
            self.master.log(f"{self.boot_failure}: stopping busd", level=50)
            self._active = False
            self.master.submit("exit")

    def _crashed(self, slot: Slot, now: float, lived: float = 0.0) -> None:
        """Schedule a restart with backoff, or give up on a flapping slot."""
        if slot.index >= self.size:
            return
        if slot.crash(now, lived, self.config.policy):
            self.master.log(
                f"{self._who}worker {slot.index} is flapping: {slot.flap_reason}; not "
                "restarting (busctl scale starts it again)",
                level=40,
            )
            self.master.event(
                "worker_flapping",
                self.hooks.named({"worker": slot.index, "reason": slot.flap_reason}),
            )

    # -- stopping -------------------------------------------------------------------------

    def _retire(self, workers: list[Worker], reason: ExitReason) -> None:
        """SIGTERM workers (they leave on their own); SIGKILL after the graceful timeout."""
        deadline = time.monotonic() + self.config.graceful_timeout
        # One may have died and been reaped since the caller listed it.
        workers = [w for w in workers if not w.reaped]
        for worker in workers:
            worker.retiring = True
            worker.reason = worker.reason or reason
            worker.kill_at = deadline
            if worker not in self._retired:
                self._retired.append(worker)
            for slot in self._slots.values():
                if slot.worker is worker:
                    slot.worker = None
        # Going because the pool said so: no ack wait should wait for them.
        self.master.excuse_pids(w.pid for w in workers)
        for worker in workers:
            self._kill(worker, self.config.stop_signal if not self.config.bus else signal.SIGTERM)
        self._settle()

    def _kill_late(self, worker: Worker, why: str) -> None:
        """SIGKILL a worker that overran a timeout, and say so."""
        worker.reason = ExitReason.TIMEOUT
        self.master.log(f"{worker.label} {why}: killing it (SIGKILL)", level=30)
        self.master.excuse_pid(worker.pid)
        below = self._kill_tree(worker)
        if below:
            self.master.log(
                f"{worker.label}: killed {len(below)} process(es) it left "
                f"running: {', '.join(map(str, below))}",
                level=30,
            )

    def _kill_tree(self, worker: Worker) -> list[int]:
        """SIGKILL ``worker`` and every process below it; the pids below it."""
        # Once reaped, its pidfd number may be another worker's or a socket:
        # never use it then (the lock orders this against the reap's close).
        with self._pidfds:
            if worker.reaped:
                return []
            if not self.config.bus:  # the whole group, those it left behind included
                with contextlib.suppress(OSError):
                    os.killpg(worker.pid, signal.SIGKILL)
            return kill_tree(worker.pidfd, worker.proc)

    def _kill(self, worker: Worker, sig: int) -> None:
        # The pidfd names this very process even if its pid was reused.
        if not worker.reaped:
            try:
                if not self.config.bus:
                    # Its own process group (its session, made at spawn): while it is
                    # not reaped, its pid (the group's id) is still its own.
                    os.killpg(worker.pid, sig)
                else:
                    signal.pidfd_send_signal(worker.pidfd, sig)
            except OSError:
                return

    def _live(self) -> list[Worker]:
        workers = [s.worker for s in self._slots.values() if s.worker is not None]
        return [w for w in workers + [w for w in self._retired if w not in workers] if not w.reaped]

    def _all_gone(self) -> bool:
        return not self._retired and not any(s.worker for s in self._slots.values())


__all__ = ["BOOT_ATTEMPTS", "UNSENT", "PoolConfig", "PoolView", "Roster"]
