"""The worker pool: spawn, supervise, reload, scale and reap worker processes.

::

    [busd-commands] owns the Pool                      [busd-pool] supervisor (watches only)
      start    -> fill every slot                        select(pidfds + wake pipe, deadline)
      graceful -> respawn: roll the pool;                  an exit    -> WorkerExited(pid, code)
                  in place: reload_begin/reload_end        a deadline, a client's new state
      exit     -> wait for workers (handling the              -> Tick
                  supervisor's reports), kill, reap               |
      commands: scale, signal, recycle <-- busd.pool.commands     v
      drain: WorkerExited -> reap the slot, log,     <-- inbox + master.call_soon(drain)
               restart with backoff or mark flapping
             Tick -> due restarts, started workers,
               hung workers (SIGKILL), recycling
      --Watch(pid, pidfd), WakeAt(deadline)-------------> the supervisor's orders
      --PoolView (published after each change)----------> other threads: workers(), kill_all()

The command thread alone changes the pool (this class, :class:`busd.pool.upkeep.Upkeep`
and :class:`busd.pool.roster.Roster`): it spawns every worker, reaps every
slot, and logs every line, so the master's listeners (hooks, ``log``) run
there.  The supervisor (:mod:`busd.pool.supervisor`) only reports what it saw.

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

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import psutil

from busd.core.errors import BusError
from busd.core.wire import ErrorCode, wire_error
from busd.master.bus import MasterBus
from busd.master.registry import ClientInfo
from busd.pool.commands import Reload
from busd.pool.exits import ExitReason
from busd.pool.forkserver import ForkServer
from busd.pool.roster import BOOT_ATTEMPTS, PoolConfig
from busd.pool.slots import Slot, Worker, process_stats
from busd.pool.spawn import Spawner
from busd.pool.upkeep import Upkeep

log = logging.getLogger(__name__)

#: How old a worker's psutil figures (cpu, rss, fds, threads) may be in a status: the
#: board is made often while the pool is busy, and reading /proc holds the GIL.
PROC_STATS_EVERY = 1.0


class Pool(Upkeep):
    """Keeps ``config.size`` workers running for a master, and reaps every one."""

    def __init__(
        self, master: MasterBus, spawner: Spawner, config: PoolConfig, pids_file: Path | None = None
    ) -> None:
        super().__init__(master, spawner, config, pids_file)
        #: The last respawn reload (command thread only): who it started and retired.
        self.last_reload = Reload((), ())
        self._me = psutil.Process()
        #: psutil figures of each worker by pid, with when they were taken (a cache).
        self._proc_stats: dict[int, tuple[float, dict[str, Any]]] = {}
        #: An in-place reload begun and not yet ended.
        self._reloading = False
        #: Taken out of its master's pools (removed, or replaced by a new pool).
        self.retired = False

    # -- wiring -------------------------------------------------------------

    def attach(self) -> None:
        """Join the master: reap and restart while it waits, wake on its clients' news,
        start the supervisor.  The channels and commands are the pools' (busd.pool.pools)."""
        self.master.add_upkeep(self.drain)  # reaps and restarts while a command waits
        if self.config.bus:
            # Client joins and leaves (command thread) and new states (hub): a Tick.
            self.master.add_client_hook(self._client_news)
            self.master.add_client_state_hook(lambda client: self._supervisor.wake())
        self._boot.prepare()
        self._supervisor.start()
        # Its slots from now on: a pool waiting for those it comes after shows them WAITING.
        for index in range(self.size):
            self._slots.setdefault(index, Slot(index))
        self._settle()

    def _client_news(self, event: str, client: dict[str, Any]) -> None:
        """A client joined, left or was lost (command thread): note when its worker was
        last heard from (its silence is counted from then, not from the pool's last
        look), and wake the supervisor for a Tick."""
        age = client.get("last_heartbeat")
        if isinstance(age, int | float):
            for worker in self._live():
                if worker.pid == client.get("pid"):
                    worker.last_seen = max(worker.last_seen, time.monotonic() - age)
        self._supervisor.wake()

    @property
    def name(self) -> str:
        """The pool's name (``main`` for the command line's)."""
        return self.config.pool

    @property
    def active(self) -> bool:
        """Started and not stopped: its slots are kept filled."""
        return self._active

    def reconfigure(self, config: PoolConfig) -> None:
        """Take new settings in place (its workers go on; ``size`` is scale's)."""
        self.config = config
        self._recycler.config = config.recycle
        self._settle()

    def take_last_reload(self) -> Reload:
        """The last respawn's workers (started, retired), forgotten here."""
        reload, self.last_reload = self.last_reload, Reload((), ())
        return reload

    def wait_started(self, deadline: float) -> bool:
        """Until every slot's worker reached STARTED (False past ``deadline``), reaping
        and probing meanwhile (command thread)."""
        if not self.config.bus:
            return self._wait_until(self.all_started, deadline)
        pids = [s.worker.pid for s in self._slots.values() if s.worker is not None]
        self.master.wait_for_clients(
            lambda clients: _all_started(pids, clients), max(0.0, deadline - time.monotonic())
        )
        self._tick()  # marks them started
        return self.all_started()

    def describe(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Its entry in ``status``'s ``"pools"`` (``rows``: its workers)."""
        config = self.config
        what = {"target": config.target} if config.target else {"command": list(config.command)}
        return {
            "name": self.name,
            **what,
            "workers": self.size,
            "running": sum(1 for r in rows if r.get("pid") is not None),
            "started": sum(1 for r in rows if r.get("state") == "STARTED"),
            "bus": config.bus,
            "reload": config.reload,
            "after": list(config.after),
            "active": self._active,
            "exits": dict(self.exits),
            "forkserver": self._forkserver_stats(),
        }

    def _forkserver_stats(self) -> dict[str, Any] | None:
        """This pool's fork server (its pid, how often replaced), None if it execs."""
        spawner = self.spawner
        return spawner.statistics().as_dict() if isinstance(spawner, ForkServer) else None

    def all_started(self, clients: Mapping[int, ClientInfo] | None = None) -> bool:
        """Every slot has a worker that reached STARTED (a program: ``ready`` held); given
        the ``clients`` by pid, a bus worker must be STARTED there now (after a stop)."""
        for index in range(self.size):
            slot = self._slots.get(index)
            worker = slot.worker if slot is not None else None
            if worker is None or not worker.up:
                return False
            if clients is not None and self.config.bus:
                client = clients.get(worker.pid)
                if client is None or client.state != "STARTED":
                    return False
        return True

    # -- lifecycle listeners (command thread) ---------------------------------------

    def start(self) -> None:
        """Fill every slot (the first start; later starts find the workers alive)."""
        if self._active or self._exiting:
            return
        self.budget.check(self.size, len(self._live()), f"starting {self.size} workers")
        self._active = True
        self._spawn([self._slots.setdefault(index, Slot(index)) for index in range(self.size)])

    def exit(self) -> None:
        """Stop restarting; wait for workers to end, SIGKILL the rest, reap all.

        Both waits handle the supervisor's reports here (the reaps are this
        thread's work), each bounded: the graceful timeout, then 5 s.
        """
        self._exiting = True
        self._active = False
        if not self.config.bus:  # a program does not follow the master: it is told
            self._retire(self._live(), ExitReason.STOP)
        self._wait_gone(self._all_gone, self._live)
        self.hooks.flush()  # the workers' worker_exited, before the exit listeners after us
        self._settle()

    def _wait_gone(self, done: Callable[[], bool], left: Callable[[], list[Worker]]) -> None:
        """Until ``done()``, at most the graceful timeout; then SIGKILL what is ``left()``
        and wait 5 s more (reaping here, as every wait on the command thread does)."""
        if self._wait_until(done, time.monotonic() + self.config.graceful_timeout):
            return
        for worker in left():
            self._kill_late(
                worker, f"did not exit within --graceful-timeout {self.config.graceful_timeout:g}s"
            )
        self._wait_until(done, time.monotonic() + 5.0)

    def stop_workers(self) -> None:
        """Stop this pool alone, before the pools it comes after (its workers leave: their
        stop and exit listeners run); bounded as an exit is.  A later start fills it again."""
        self._active = False
        self._retire(self._live(), ExitReason.STOP)
        self._wait_gone(self._all_gone, self._live)
        self.hooks.flush()
        self._settle()

    def reload_program(self) -> None:
        """graceful for a program that does not speak the bus: its ``reload_signal``
        to each (with its group), else a respawn."""
        sig = self.config.reload_signal
        if sig is None:
            self.restart_program()
            return
        live = [s.worker for s in self._slots.values() if s.worker is not None]
        self.hooks.emit_here("reload_begin", {"mode": "signal", "workers": len(live)})
        for worker in live:
            self._kill(worker, sig)
        self.hooks.emit_here("reload_end", {"mode": "signal", "ok": True, "workers": len(live)})

    def restart_program(self) -> None:
        """Stop each worker, then start it again (a program may hold a port a second
        one could not bind: never both at once), each bounded by its timeout."""
        if not self._active:
            return
        old = [s.worker for s in self._slots.values() if s.worker is not None]
        slots = [slot for slot in self._slots.values() if not slot.flapping]
        self.hooks.emit_here("reload_begin", {"mode": "restart", "workers": len(slots)})
        self._retire(old, ExitReason.RELOAD)
        self._wait_gone(
            lambda: all(w.reaped for w in old), lambda: [w for w in old if not w.reaped]
        )
        new = self._spawn(slots)
        ok = self._wait_until(
            lambda: all(w.up or w.reaped for w in new),
            time.monotonic() + self.config.startup_timeout,
        ) and all(w.up for w in new)
        self.hooks.emit_here("reload_end", {"mode": "restart", "ok": ok, "workers": len(new)})

    def respawn(self) -> None:
        """Replace every worker: new ones reach STARTED before the old ones go.

        The wait for the new workers is the registry's (the hub records their
        states), bounded by the startup timeout; the supervisor's reports
        meanwhile wait in the inbox, handled after this command.
        """
        if not self._active:
            return
        old = [s.worker for s in self._slots.values() if s.worker is not None]
        old += self._pids_to_workers(self._recycler.cancel_all())
        slots = [slot for slot in self._slots.values() if not slot.flapping]
        self.budget.check(len(slots), len(self._live()), "respawn reload")
        self.hooks.emit_here("reload_begin", {"mode": "respawn", "workers": len(slots)})
        new = self._spawn(slots)
        ready = (
            self.master.wait_for_clients(
                lambda clients: _all_started([w.pid for w in new if w], clients),
                self.config.startup_timeout,
            )
            if self.config.bus
            else self._wait_until(
                lambda: all(w.up for w in new), time.monotonic() + self.config.startup_timeout
            )
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

    # -- the in-place reload's hooks (command thread) -------------------------------

    def reload_begins(self) -> None:
        """An in-place reload begins (its ``reload_begin``)."""
        self._reloading = True
        self.hooks.emit_here("reload_begin", {"mode": "inplace"})

    def reload_ends(self, ok: bool | None, waited: bool | None) -> None:
        """The in-place reload begun is over (its ``reload_end``)."""
        if self._reloading:
            self._reloading = False
            self.hooks.emit_here("reload_end", {"mode": "inplace", "ok": ok, "waited": waited})

    # -- commands (command thread) ---------------------------------------------------

    def scale(self, size: int) -> int:
        """Run ``size`` workers from now on; returns the new size."""
        if size < 0:
            raise wire_error(ErrorCode.BAD_ARGUMENTS, "a pool cannot have fewer than 0 workers")
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
        self._settle()
        return size

    @property
    def slots(self) -> Mapping[int, Slot]:
        """Every slot by index (read-only; for the command thread)."""
        return MappingProxyType(self._slots)

    def running(self) -> dict[int, Worker]:
        """Each slot's current worker, by slot."""
        return {s.index: s.worker for s in self._slots.values() if s.worker is not None}

    def recycle(self, pid: int, reason: str) -> Worker:
        """Queue the worker ``pid`` for a recycle (a new one starts first, on the next Tick)."""
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
        self._supervisor.wake()
        return worker

    def signal(self, worker: Worker, sig: int) -> None:
        """Send ``sig`` to ``worker`` (through its pidfd)."""
        self._kill(worker, sig)

    def wait_exited(self, workers: Sequence[Worker], timeout: float) -> bool:
        """Wait until each of ``workers`` has exited and been reaped (False past ``timeout``).

        On the command thread: it handles the supervisor's reports meanwhile
        (SIGKILL at the graceful timeout included), bounded by ``timeout``.
        """
        return self._wait_until(lambda: all(w.reaped for w in workers), time.monotonic() + timeout)

    # -- information (any thread: the published view) ---------------------------------

    def workers(self) -> list[dict[str, Any]]:
        """Every slot's worker with its state and resource use (psutil)."""
        clients = self.master.clients_by_pid()
        now, known, fresh = time.monotonic(), self._proc_stats, {}
        rows = []
        for slot, worker in self._view.slots:
            client = clients.get(worker.pid) if worker is not None else None
            stats: dict[str, Any] = {}
            if worker is not None:
                taken = known.get(worker.pid)
                if taken is None or now - taken[0] >= PROC_STATS_EVERY:
                    taken = (now, process_stats(worker.proc))
                fresh[worker.pid] = taken
                stats = taken[1]
            state = client.state if client else None
            if worker is not None and not self.config.bus:
                state = "STARTED" if worker.up else "STARTING"
            rows.append({**slot.row(state, stats, time.time()), "pool": self.name})
        self._proc_stats = fresh  # replaced whole: a reader on another thread sees one or the other
        return rows

    def master_stats(self) -> dict[str, Any]:
        """The master process's own resource use."""
        return {
            "pid": os.getpid(),
            **process_stats(self._me),
            "recycle": self._recycler.statistics().as_dict(),
            "fd_budget": self.budget.statistics(),
        }

    def kill_all(self) -> None:
        """SIGKILL every worker at once (a forced shutdown, from any thread).

        It reads the published view, and spawns nothing from now on: the
        command thread may be the one that hangs.
        """
        self._halted.set()
        for worker in self._view.live:
            below = self._kill_tree(worker)
            if below:
                log.warning(
                    "%s: killed %d process(es) it left running: %s",
                    worker.label,
                    len(below),
                    ", ".join(map(str, below)),
                )

    def close(self) -> None:
        """End the supervisor thread; release the wake pipe, the pids file, the boot dir."""
        if self.pids_file is not None:
            self.pids_file.unlink(missing_ok=True)
        self._boot.close()
        self._supervisor.close()


def _all_started(pids: list[int], clients: list[ClientInfo]) -> bool:
    states = {c.pid: c.state for c in clients}
    return all(states.get(pid) == "STARTED" for pid in pids)


__all__ = ["BOOT_ATTEMPTS", "Pool", "PoolConfig"]
