"""The worker pool: spawn, supervise, reload, scale and reap worker processes.

::

    MasterBus listeners (command thread)         [busd-pool] supervisor thread
      start    -> fill every slot                  select(pidfds + wake pipe, next deadline)
      graceful -> respawn: roll the pool            child exited -> reap, restart with backoff,
      exit     -> wait for workers, kill, reap                      or mark the slot flapping
    commands: scale, signal, recycle               silent worker  -> SIGKILL (hung), replaced
      (busd.pool.commands)                             due for recycling (pool.recycle) -> spawn
                                                     the replacement; once it is STARTED,
    hooks (busd.pool.hooks): worker_spawned/started/      retire the old one
      exited, reload_begin/end -> EVENT now, master listeners on the command thread

The registry's state hooks and the master's client hooks only write a byte
to the wake pipe; everything else here is under the pool's lock.

Workers are started by a :class:`busd.pool.spawn.Spawner`; their exits are seen
through pidfds (no SIGCHLD handler, no polling).  Each slot keeps its
restart history: a crash restarts it after an exponential backoff, and a
slot that crashes more than ``flap_limit`` times within ``flap_window``
seconds stops restarting and is reported.

Fail fast at boot: while no worker of the pool has ever reached STARTED, a
slot whose worker fails ``BOOT_ATTEMPTS`` times in a row (the TARGET does
not import, is missing, not callable or raises) makes the pool give up:
the worker's error is shown once, the master exits, and ``busd`` ends with
:data:`busd.pool.exits.EX_BOOT` ("worker failed to boot").  Once a worker has
started, a failing slot restarts with backoff and may be marked flapping.

Each worker's life is logged at INFO: spawned, started, exited (with its
status or signal and the :class:`busd.pool.exits.ExitReason`), and killed after
a timeout.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from busd.core.errors import BusError
from busd.core.wire import ErrorCode, wire_error
from busd.master.bus import MasterBus
from busd.master.fdbudget import FdBudget
from busd.master.registry import ClientInfo
from busd.pool.commands import Reload, install_commands
from busd.pool.exits import NEVER_JOINED, BootReports, ExitReason, describe_status, never_joined
from busd.pool.hooks import Hooks
from busd.pool.killtree import kill_tree
from busd.pool.orphans import write_pids
from busd.pool.recycle import RecycleConfig, Recycler
from busd.pool.slots import RestartPolicy, Slot, Worker, process_stats
from busd.pool.spawn import Spawner, SpawnerGone


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
    #: Each worker's stdout and stderr to ``<log_dir>/<name>-worker-<slot>.log``.
    log_dir: str | None = None
    name: str = "busd"

    @property
    def policy(self) -> RestartPolicy:
        """How a crashing slot is restarted."""
        return RestartPolicy(self.backoff, self.backoff_max, self.flap_limit, self.flap_window)


#: Failures in a row of a slot that never started, before the pool gives up.
BOOT_ATTEMPTS = 2


class Pool:
    """Keeps ``config.size`` workers running for a master, and reaps every one."""

    def __init__(
        self, master: MasterBus, spawner: Spawner, config: PoolConfig, pids_file: Path | None = None
    ) -> None:
        self.master = master
        self.pids_file = pids_file
        self.spawner = spawner
        self.config = config
        self.size = config.size
        self._cond = threading.Condition()
        self._slots: dict[int, Slot] = {}
        self._retired: list[Worker] = []
        #: Starts of each slot index so far (a slot scaled away and back counts on).
        self._starts: collections.Counter[int] = collections.Counter()
        #: The last respawn reload (command thread only): who it started and retired.
        self.last_reload = Reload((), ())
        self._active = False
        self._exiting = False
        self._closing = False
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._wfd, False)
        self._thread = threading.Thread(target=self._supervise, name="busd-pool", daemon=True)
        self._me = psutil.Process()
        self.hooks = Hooks(master)
        self._recycler = Recycler(config.recycle)
        #: Refuses a start, scale or respawn the open-file limit cannot hold.
        self.budget = FdBudget()
        self._boot = BootReports(Path(master.runtime_dir) / "boot")
        self._booted = False
        #: Set when workers failed to boot and the pool gave up (busd exits EX_BOOT).
        self.boot_failure: str | None = None

    # -- wiring -------------------------------------------------------------

    def subscribe(self) -> None:
        """Listen on the master's start/graceful/exit and add the pool's commands."""
        self.master.subscribe("start", self.start, priority=70)
        self.master.subscribe("exit", self.exit, priority=30)
        if self.config.reload == "respawn":
            self.master.relay_graceful = False
            self.master.subscribe("graceful", self.respawn)
        self.master.add_client_hook(lambda event, client: self._wake())
        self.master.add_client_state_hook(lambda client: self._wake())
        install_commands(self)
        if self.config.reload != "respawn":
            self.master.subscribe(
                "graceful",
                lambda: self.hooks.emit_here("reload_begin", {"mode": "inplace"}),
                priority=1,
            )
            self.master.subscribe(
                "graceful",
                lambda: self.hooks.emit_here("reload_end", {"mode": "inplace", "ok": True}),
                priority=99,
            )
        self.master.add_status_hook(
            lambda status: status.update(workers=self.workers(), master=self.master_stats())
        )
        self._boot.prepare()
        self._thread.start()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full pipe: it is awake already
            os.write(self._wfd, b"\0")

    # -- lifecycle listeners (command thread) ---------------------------------------

    def start(self) -> None:
        """Fill every slot (the first start; later starts find the workers alive)."""
        with self._cond:
            if self._active or self._exiting:
                return
            self.budget.check(self.size, len(self._live()), f"starting {self.size} workers")
            self._active = True
            slots = [self._slots.setdefault(index, Slot(index)) for index in range(self.size)]
        self._spawn(slots)

    def exit(self) -> None:
        """Stop restarting; wait for workers to end, SIGKILL the rest, reap all."""
        with self._cond:
            self._exiting = True
            self._active = False
        deadline = time.monotonic() + self.config.graceful_timeout
        if not self._wait_all_gone(deadline):
            for worker in self._live():
                self._kill_late(
                    worker,
                    f"did not exit within --graceful-timeout {self.config.graceful_timeout:g}s",
                )
            self._wait_all_gone(time.monotonic() + 5.0)
        self.hooks.flush()  # the workers' worker_exited, before the exit listeners after us
        self._wake()

    def respawn(self) -> None:
        """Replace every worker: new ones reach STARTED before the old ones go."""
        with self._cond:
            if not self._active:
                return
            old = [s.worker for s in self._slots.values() if s.worker is not None]
            old += self._pids_to_workers(self._recycler.cancel_all())
            slots = [slot for slot in self._slots.values() if not slot.flapping]
            self.budget.check(len(slots), len(self._live()), "respawn reload")
        self.hooks.emit_here("reload_begin", {"mode": "respawn", "workers": len(slots)})
        new = self._spawn(slots)
        ready = self.master.wait_for_clients(
            lambda clients: _all_started([w.pid for w in new if w], clients),
            self.config.startup_timeout,
        )
        if not ready:
            self.hooks.emit_here("reload_end", {"mode": "respawn", "ok": False})
            raise BusError(
                "respawn: new workers did not reach STARTED within "
                f"--startup-timeout {self.config.startup_timeout:g}s; "
                "old workers kept"
            )
        self.last_reload = Reload(tuple(new), tuple(old))
        self._retire(old, ExitReason.RELOAD)
        self.hooks.emit_here("reload_end", {"mode": "respawn", "ok": True, "workers": len(new)})

    # -- spawning and stopping -------------------------------------------------

    def _spawn(self, slots: list[Slot], event: str = "worker_spawned") -> list[Worker]:
        """Start a worker in each slot; an old one there is retired.

        The processes are made without the pool's lock (32 spawns must not
        hold up a ``workers`` request), in one batch where the spawner can.
        """
        with self._cond:
            plan = []
            for slot in slots:
                self._starts[slot.index] += 1
                generation = self._starts[slot.index]
                plan.append((slot, generation, self._worker_env(slot, generation)))
        results = self.spawner.spawn_many([(slot.index, env) for slot, _, env in plan])
        now = time.monotonic()
        made = []
        with self._cond:
            for (slot, generation, _), result in zip(plan, results, strict=True):
                if isinstance(result, OSError):
                    self._spawn_failed(slot, result, now)
                    continue
                slot.lost_spawns = 0
                made.append(self._place(slot, generation, *result, now))
            self._record_pids()
        for worker in made:
            self.master.log(f"{worker.label} spawned (generation {worker.generation})")
            info = {"worker": worker.slot, "pid": worker.pid, "generation": worker.generation}
            # One event per spawn: worker_restarted or worker_recycling say why.
            self.hooks.emit("worker_spawned", info, event=event)
        self._wake()
        return made

    def _worker_env(self, slot: Slot, generation: int) -> dict[str, str]:
        env = {
            "BUSD_WORKER": str(slot.index),
            "BUSD_WORKER_GENERATION": str(generation),
            "BUSD_GENERATION": str(generation),
            "BUSD_BOOT_DIR": str(self._boot.directory),
        }
        if self.config.log_dir:
            env["BUSD_LOG_FILE"] = str(
                Path(self.config.log_dir) / f"{self.config.name}-worker-{slot.index}.log"
            )
        return env

    def _place(self, slot: Slot, generation: int, pid: int, pidfd: int, now: float) -> Worker:
        """Record a new worker in its slot (lock held)."""
        worker = Worker(
            slot=slot.index,
            pid=pid,
            generation=generation,
            pidfd=pidfd,
            started=now,
            started_wall=time.time(),
            last_seen=now + self.config.startup_timeout - self.config.worker_timeout,
        )
        try:
            worker.proc = psutil.Process(pid)
        except psutil.Error:
            worker.proc = None
        worker.recycle_at = self._recycler.deadline(now)
        if slot.worker is not None:
            self._retired.append(slot.worker)
        slot.worker = worker
        slot.next_start = None
        return worker

    def _record_pids(self) -> None:
        """Keep workers.pids current, so a later master can find orphans (lock held)."""
        if self.pids_file is not None:
            write_pids(self.pids_file, [w.proc for w in self._live() if w.proc is not None])

    def _spawn_failed(self, slot: Slot, error: OSError, now: float) -> None:
        """No process could be made for ``slot`` (lock held)."""
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

    def _retire(self, workers: list[Worker], reason: ExitReason) -> None:
        """SIGTERM workers (they leave on their own); SIGKILL after the graceful timeout."""
        deadline = time.monotonic() + self.config.graceful_timeout
        with self._cond:
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
        for worker in workers:
            # Going because the pool said so: no ack wait should wait for it.
            self.master.excuse_pid(worker.pid)
            self._kill(worker, signal.SIGTERM)
        self._wake()

    def _kill_late(self, worker: Worker, why: str) -> None:
        """SIGKILL a worker that overran a timeout, and say so."""
        worker.reason = ExitReason.TIMEOUT
        self.master.log(f"{worker.label} {why}: killing it (SIGKILL)", level=30)
        self.master.excuse_pid(worker.pid)
        self._kill_tree(worker)

    def _kill_tree(self, worker: Worker) -> None:
        """SIGKILL ``worker`` and every process below it (it cannot end them itself now)."""
        with self._cond:
            if worker.reaped:
                return
            below = kill_tree(worker.pidfd, worker.proc)
        if below:
            self.master.log(
                f"{worker.label}: killed {len(below)} process(es) it left "
                f"running: {', '.join(map(str, below))}",
                level=30,
            )

    def _kill(self, worker: Worker, sig: int) -> None:
        # The pidfd names this very process even if its pid was reused.  Once
        # reaped, its number may be another worker's pidfd or a socket: never
        # use it then (the lock orders this against _reap's close).
        with self._cond, contextlib.suppress(OSError):
            if not worker.reaped:
                signal.pidfd_send_signal(worker.pidfd, sig)

    def _live(self) -> list[Worker]:
        with self._cond:
            workers = [s.worker for s in self._slots.values() if s.worker is not None]
            return [
                w for w in workers + [w for w in self._retired if w not in workers] if not w.reaped
            ]

    def wait_exited(self, workers: Sequence[Worker], timeout: float) -> bool:
        """Wait until each of ``workers`` has exited and been reaped (False past ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(w.reaped for w in workers):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def _wait_all_gone(self, deadline: float) -> bool:
        with self._cond:
            while self._live_locked():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def _live_locked(self) -> bool:
        return bool(self._retired) or any(s.worker for s in self._slots.values())

    # -- the supervisor thread ----------------------------------------------------

    def _supervise(self) -> None:
        while not self._closing:
            with self._cond:
                fds = {w.pidfd: w for w in self._live()}
                timeout = self._next_deadline()
            ready, _, _ = select.select([self._rfd, *fds], [], [], timeout)
            if self._rfd in ready:
                os.read(self._rfd, 4096)
            for fd in ready:
                if fd in fds:
                    self._reap(fds[fd])
            self._tick()

    def _next_deadline(self) -> float | None:
        now = time.monotonic()
        times = [s.next_start for s in self._slots.values() if s.next_start is not None]
        times += [w.kill_at for w in self._retired if w.kill_at is not None]
        times += [w.last_seen + self.config.worker_timeout for w in self._live() if not w.retiring]
        if self._recycler.active and self._active:
            ages = [
                s.worker.recycle_at
                for s in self._slots.values()
                if s.worker is not None and s.worker.recycle_at is not None
            ]
            times += [t for t in [self._recycler.next_time(ages)] if t is not None]
        if not times:
            return None
        return max(0.0, min(times) - now) + 0.001

    def _reap(self, worker: Worker) -> None:
        code: int | None
        try:
            _, status = os.waitpid(worker.pid, os.WNOHANG)
            code = os.waitstatus_to_exitcode(status) if status else 0
        except ChildProcessError:  # a fork server's child: the server reaps it
            code = self.spawner.exit_code(worker.pid)
        with self._cond:
            worker.reaped = True
            os.close(worker.pidfd)
        # Its client will not say goodbye now: no ack wait should wait for it.
        client = self.master.forget_pid(worker.pid)
        if client is not None:
            worker.up = worker.up or client.state == "STARTED"
            self.master.event("client_lost", {"pid": worker.pid, "worker": worker.slot})
        report = self._boot.take(worker.pid)
        now = time.monotonic()
        with self._cond:
            worker.exit_code = code
            slot = self._slots.get(worker.slot)
            planned = worker.retiring or self._exiting or worker in self._retired
            if (
                worker.reason is None
                and code is None
                and not planned
                and client is None
                and not worker.joined
            ):
                # Its fork server died (the new one never had it) before it joined:
                # the server had not let it run (busd.pool.spawn.EX_SPAWN_LOST).
                worker.reason = ExitReason.SPAWN_LOST
            if worker.reason is None:
                worker.reason = (
                    ExitReason.RELOAD
                    if worker.retiring or worker in self._retired
                    else ExitReason.STOP
                    if self._exiting
                    else ExitReason.CRASH
                )
            if worker in self._retired:
                self._retired.remove(worker)
            if slot is not None and slot.worker is worker:
                slot.worker = None
            self._cond.notify_all()
            self._log_exit(worker, code, report)
            self.hooks.emit(
                "worker_exited",
                {
                    "worker": worker.slot,
                    "pid": worker.pid,
                    "generation": worker.generation,
                    "code": code,
                    "status": describe_status(code),
                    "exit_status": code if code is not None and code >= 0 else None,
                    "signal": signal.Signals(-code).name if code is not None and code < 0 else None,
                    "reason": worker.reason.value,
                    "planned": planned,
                },
            )
            if slot is not None and not planned:
                slot.reason = worker.reason.value
            if worker.reason is ExitReason.SPAWN_LOST and slot is not None and self._active:
                slot.spawn_lost(now, self.config.policy)
            elif not planned and slot is not None and self._active:
                if worker.up:
                    slot.booted = True
                self._failed(
                    slot,
                    now,
                    lived=now - worker.started,
                    unjoined=worker.reason is ExitReason.TIMEOUT and not worker.joined,
                )
            self._record_pids()

    def _log_exit(self, worker: Worker, code: int | None, report: str | None) -> None:
        """One line for the exit; the boot report (a traceback) the first time it is seen."""
        crashed = worker.reason in (ExitReason.CRASH, ExitReason.TIMEOUT)
        when = "" if worker.up else " before it started"
        status = "" if code is None else f" with {describe_status(code)}"
        self._tell_exit(
            worker.label,
            f"exited{status}{when} ({worker.reason.value if worker.reason else '?'})",
            30 if crashed else 20,
            report,
        )

    def _tell_exit(self, label: str, what: str, level: int, report: str | None) -> None:
        """``label what``; then its boot report (a traceback), only the first time it is seen."""
        first = report is not None and self._boot.first_time(report)
        same = "; it failed to boot with the same error" if report and not first else ""
        self.master.log(f"{label} {what}{same}", level=level)
        if first:
            self.master.log(f"{label} failed to boot:\n{report}", level=40)

    def _failed(self, slot: Slot, now: float, lived: float = 0.0, unjoined: bool = False) -> None:
        """A worker of ``slot`` failed: give up at boot, else restart it (lock held).

        At boot, a worker that never joined within the startup timeout ends
        busd at once: the same command would not join the next time either.
        """
        if slot.booted or self._booted:
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
        """Schedule a restart with backoff, or give up on a flapping slot (lock held)."""
        if slot.index >= self.size:
            return
        if slot.crash(now, lived, self.config.policy):
            self.master.log(
                f"worker {slot.index} is flapping: {slot.flap_reason}; not "
                "restarting (busctl scale starts it again)",
                level=40,
            )
            self.master.event("worker_flapping", {"worker": slot.index, "reason": slot.flap_reason})

    def _tick(self) -> None:
        now = time.monotonic()
        clients = self.master.clients_by_pid()
        hung: list[tuple[Worker, str]] = []
        with self._cond:
            due = [
                slot
                for slot in self._slots.values()
                if self._active and slot.next_start is not None and slot.next_start <= now
            ]
            for slot in due:
                # A retry of a spawn the fork server lost is not a restart.
                slot.restarts += 0 if slot.retry else 1
                slot.retry = False
                slot.next_start = None
        if due:
            self._spawn(due, event="worker_restarted")
        with self._cond:
            for worker in self._live():
                client = clients.get(worker.pid)
                if client is not None:
                    # Before it joins, a worker has until the startup timeout.
                    worker.last_seen = client.last_seen
                    worker.joined = True
                    if client.state == "STARTED" and not worker.up:
                        self._started(worker)
                if worker.kill_at is not None and worker.kill_at <= now:
                    worker.kill_at = None
                    hung.append(
                        (
                            worker,
                            "did not stop within --graceful-timeout "
                            f"{self.config.graceful_timeout:g}s of SIGTERM",
                        )
                    )
                elif (
                    not worker.retiring
                    and not self._exiting
                    and now - worker.last_seen > self.config.worker_timeout
                ):
                    worker.last_seen = now
                    hung.append((worker, self._silence(worker)))
                    self.master.event("worker_lost", {"worker": worker.slot, "pid": worker.pid})
        for worker, why in hung:
            self._kill_late(worker, why)
        self._recycle(now)

    def _silence(self, worker: Worker) -> str:
        """Why a silent worker is killed: it never joined, or it stopped answering."""
        if worker.joined:
            return f"did not answer within --worker-timeout {self.config.worker_timeout:g}s"
        # At boot busd gives up with the explanation; later it is said once here.
        explain = self._booted and self._boot.first_time(NEVER_JOINED)
        return never_joined(self.config.startup_timeout, explain)

    def _recycle(self, now: float) -> None:
        """Queue workers due for a recycle; start replacements; retire the replaced."""
        with self._cond:
            if not self._active or self._exiting:
                return
            current = {
                s.worker.pid: s.worker
                for s in self._slots.values()
                if s.worker is not None and not s.worker.retiring
            }
            if self._recycler.active:
                self._recycler.check(
                    [w for w in current.values() if w.up],
                    {pid: w.recycle_at for pid, w in current.items()},
                    now,
                )
            done = []
            for index, old_pid in list(self._recycler.running.items()):
                slot = self._slots.get(index)
                new = slot.worker if slot is not None else None
                if slot is None or (new is not None and new.pid != old_pid and new.up):
                    self._recycler.finish(index)
                    done += self._pids_to_workers([old_pid])
            wanted = []
            for index, pid, why in self._recycler.take(dict(current)):
                slot = self._slots[index]
                slot.recycles += 1
                slot.reason = f"recycle ({why})"
                current[pid].reason = ExitReason.RECYCLE
                wanted.append(slot)
                self.master.log(f"{current[pid].label} is recycled: {why}")
        if done:
            self._retire(done, ExitReason.RECYCLE)
        if wanted:
            self._spawn(wanted, event="worker_recycling")

    def _pids_to_workers(self, pids: list[int]) -> list[Worker]:
        """The retired-but-running workers with these pids (lock held)."""
        return [w for w in self._retired if w.pid in pids]

    def _started(self, worker: Worker) -> None:
        """``worker`` reached STARTED: its slot and the pool have booted (lock held)."""
        worker.up = True
        self._booted = True
        slot = self._slots.get(worker.slot)
        if slot is not None:
            slot.booted = True
            slot.boot_failures = 0
        self.master.log(f"{worker.label} started")
        self.hooks.emit(
            "worker_started",
            {"worker": worker.slot, "pid": worker.pid, "generation": worker.generation},
        )

    # -- commands ------------------------------------------------------------------

    def scale(self, size: int) -> int:
        """Run ``size`` workers from now on; returns the new size."""
        if size < 0:
            raise wire_error(ErrorCode.BAD_ARGUMENTS, "a pool cannot have fewer than 0 workers")
        with self._cond:
            if self._active:
                self.budget.check(size - self.size, len(self._live()), f"scale {size}")
            old, self.size = self.size, size
            grow = []
            for index in range(size):
                slot = self._slots.setdefault(index, Slot(index))
                # `scale N` is the operator's word: a flapping slot is started again.
                rearm = slot.flapping
                if rearm:
                    slot.rearm()
                if (
                    self._active
                    and slot.worker is None
                    and (index >= old or rearm)
                    and slot.next_start is None
                ):
                    grow.append(slot)
            retire = [
                self._slots[i].worker
                for i in range(size, old)
                if i in self._slots and self._slots[i].worker is not None
            ]
            for index in range(size, old):
                self._slots.pop(index, None)
        self._retire([w for w in retire if w is not None], ExitReason.SCALE)
        if grow:
            self._spawn(grow)
        self._wake()
        return size

    def running(self) -> dict[int, Worker]:
        """Each slot's current worker, by slot."""
        with self._cond:
            return {s.index: s.worker for s in self._slots.values() if s.worker is not None}

    def recycle(self, pid: int, reason: str) -> Worker:
        """Queue the worker ``pid`` for a recycle (a new one starts first)."""
        with self._cond:
            worker = next(
                (
                    s.worker
                    for s in self._slots.values()
                    if s.worker is not None and s.worker.pid == pid
                ),
                None,
            )
            if worker is None or worker.retiring:
                raise wire_error(ErrorCode.BAD_ARGUMENTS, f"no running worker has pid {pid!r}")
            self._recycler.want(worker.pid, reason)
        self._wake()
        return worker

    def signal(self, worker: Worker, sig: int) -> None:
        """Send ``sig`` to ``worker`` (through its pidfd)."""
        self._kill(worker, sig)

    # -- information ------------------------------------------------------------------

    def workers(self) -> list[dict[str, Any]]:
        """Every slot's worker with its state and resource use (psutil)."""
        clients = self.master.clients_by_pid()
        rows = []
        with self._cond:
            slots = sorted(self._slots.values(), key=lambda s: s.index)
            entries = [(s, s.worker) for s in slots]
        for slot, worker in entries:
            client = clients.get(worker.pid) if worker is not None else None
            stats = process_stats(worker.proc) if worker is not None else {}
            rows.append(slot.row(client.state if client else None, stats, time.time()))
        return rows

    def master_stats(self) -> dict[str, Any]:
        """The master process's own resource use."""
        return {
            "pid": os.getpid(),
            **process_stats(self._me),
            "recycle": self._recycler.statistics(),
            "fd_budget": self.budget.statistics().as_dict(),
        }

    def kill_all(self) -> None:
        """SIGKILL every worker at once (a forced shutdown)."""
        with self._cond:
            self._exiting = True
            self._active = False
        for worker in self._live():
            self._kill_tree(worker)

    def close(self) -> None:
        """End the supervisor thread; release the wake pipe, the pids file, the boot dir."""
        if self.pids_file is not None:
            self.pids_file.unlink(missing_ok=True)
        self._boot.close()
        self._closing = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join(5.0)
        for fd in (self._rfd, self._wfd):
            try:
                os.close(fd)
            except OSError:
                continue


def _all_started(pids: list[int], clients: list[ClientInfo]) -> bool:
    states = {c.pid: c.state for c in clients}
    return all(states.get(pid) == "STARTED" for pid in pids)


__all__ = ["Pool", "PoolConfig"]
