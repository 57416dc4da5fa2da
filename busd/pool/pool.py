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
from busd.pool.commands import Reload, install_commands
from busd.pool.exits import ExitReason
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
        #: An in-place reload begun and not yet ended; a graceful command is running.
        self._reloading = False
        self._in_graceful_command = False

    # -- wiring -------------------------------------------------------------

    def subscribe(self) -> None:
        """Listen on the master's start/graceful/exit and add the pool's commands."""
        self.master.subscribe("start", self.start, priority=70)
        self.master.subscribe("exit", self.exit, priority=30)
        if self.config.reload == "respawn":
            self.master.keep_graceful_local()
            self.master.subscribe("graceful", self.respawn)
        # Client joins and leaves (command thread) and new states (hub): a Tick.
        self.master.add_upkeep(self.drain)  # reaps and restarts while a command waits
        self.master.add_client_hook(lambda event, client: self._supervisor.wake())
        self.master.add_client_state_hook(lambda client: self._supervisor.wake())
        install_commands(self)
        if self.config.reload != "respawn":
            self.master.subscribe("graceful", self._reload_begins, priority=1)
            self.master.subscribe("graceful", self._reload_ran, priority=99)
            self.master.wrap_command("graceful", self._graceful_command)
        self.master.add_status_hook(
            lambda status: status.update(workers=self.workers(), master=self.master_stats())
        )
        self._boot.prepare()
        self._supervisor.start()

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
        deadline = time.monotonic() + self.config.graceful_timeout
        if not self._wait_until(self._all_gone, deadline):
            for worker in self._live():
                self._kill_late(
                    worker,
                    f"did not exit within --graceful-timeout {self.config.graceful_timeout:g}s",
                )
            self._wait_until(self._all_gone, time.monotonic() + 5.0)
        self.hooks.flush()  # the workers' worker_exited, before the exit listeners after us
        self._settle()

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

    # -- the in-place reload's hooks (command thread) -------------------------------

    def _reload_begins(self) -> None:
        self._reloading = True
        self.hooks.emit_here("reload_begin", {"mode": "inplace"})

    def _reload_ran(self) -> None:
        """The master's graceful listeners ran; the workers' acks are still to come."""
        if not self._in_graceful_command:
            # MasterBus.graceful() called as a method: end after that call returned.
            self.master.call_soon(lambda: self._reload_ends(None, waited=None))

    def _graceful_command(
        self, graceful: Callable[[dict[str, Any]], Any], body: dict[str, Any]
    ) -> Any:
        """``graceful`` in place: reload_end once the command returned (with the acks)."""
        self._in_graceful_command = True
        try:
            result = graceful(body)
        except Exception:
            self._in_graceful_command = False
            self._reload_ends(False, waited=body.get("wait") is True)
            raise
        self._in_graceful_command = False
        acks = result.get("acks") if isinstance(result, Mapping) else None
        ok = bool(acks.get("ok")) if isinstance(acks, Mapping) else True
        self._reload_ends(ok, waited=acks is not None)
        return result

    def _reload_ends(self, ok: bool | None, waited: bool | None) -> None:
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
            rows.append(slot.row(client.state if client else None, stats, time.time()))
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
