"""What the supervisor's reports make the pool do, on the command thread.

::

    [busd-pool] --WorkerExited / Tick--> inbox --call_soon(drain)--> [busd-commands]
                                           |                          handle(message):
      a wait on the command thread --------+ (takes them itself:       WorkerExited -> reap the
      (exit, wait_exited) until its          _wait_until)               slot, log, worker_exited,
      condition or its deadline                                         restart with backoff or
                                                                        mark it flapping
                                                                      Tick -> due restarts,
                                                                        joined/started, hung
                                                                        workers, recycling

Crash and flap accounting: a crash restarts its slot after an exponential
backoff; a slot that crashes more than ``flap_limit`` times within
``flap_window`` seconds stops restarting and is reported; while no worker
of the pool has ever reached STARTED, ``BOOT_ATTEMPTS`` failures in a row
make the pool give up (:class:`busd.pool.roster.Roster`).
"""

from __future__ import annotations

import os
import queue
import signal
import time
from collections.abc import Callable

from busd.master.clients import ClientInfo
from busd.pool.exits import NEVER_JOINED, ExitReason, describe_status, never_joined
from busd.pool.ready import probe
from busd.pool.roster import DEFAULT_READY, UNSENT, Roster
from busd.pool.slots import Worker
from busd.pool.supervisor import PoolMessage, WorkerExited


class Upkeep(Roster):
    """The command thread's side of the supervisor's messages."""

    def drain(self) -> None:
        """Handle every message the supervisor queued (command thread)."""
        self._handle_all([])

    def _handle_all(self, taken: list[PoolMessage]) -> None:
        """Handle ``taken`` and every message queued after it, in order.

        The clients of all the processes that ended are forgotten first, in
        one round trip to the hub rather than one each (an exit of 32 workers).
        """
        while True:
            try:
                taken.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        ended = [m.pid for m in taken if isinstance(m, WorkerExited) and self._is_ours(m)]
        forgotten = self.master.forget_pids(ended) if ended else {}
        for message in taken:
            self._handle(message, forgotten)

    def _handle(self, message: PoolMessage, forgotten: dict[int, ClientInfo | None]) -> None:
        try:
            if isinstance(message, WorkerExited):
                self._reaped(message, forgotten)
            else:
                self._supervisor.tick_queued.clear()
                # A Tick may come from a deadline (the supervisor forgot it) or from a
                # wake-up (it kept it): either way the next settle tells it the deadline
                # now, so a stale one never wakes an idle pool.
                self._wake_at = UNSENT
                self._tick()
            self._settle()
        except Exception:  # noqa: BLE001 - one bad report must not stop the upkeep
            self.master.log(f"the pool failed to handle {message!r}", level=40, traceback=True)

    def _wait_until(self, done: Callable[[], bool], deadline: float) -> bool:
        """Handle the supervisor's messages here until ``done()`` (False past ``deadline``).

        For waits on the command thread: what they wait for (a reap) is this
        thread's own work, so they do it rather than wait for themselves.
        """
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                message = self._inbox.get(timeout=remaining)
            except queue.Empty:
                return done()
            self._handle_all([message])
        return True

    # -- exits ------------------------------------------------------------------------------

    def _is_ours(self, exited: WorkerExited) -> bool:
        return any(w.pidfd == exited.pidfd and w.pid == exited.pid for w in self._live())

    def _reaped(self, exited: WorkerExited, forgotten: dict[int, ClientInfo | None]) -> None:
        worker = next(
            (w for w in self._live() if w.pidfd == exited.pidfd and w.pid == exited.pid), None
        )
        if worker is None:
            return
        code = exited.code
        with self._pidfds:
            worker.reaped = True
            os.close(worker.pidfd)
        # Its client will not say goodbye now: no ack wait should wait for it.
        if worker.pid in forgotten:  # forgotten with the others of its batch
            client = forgotten[worker.pid]
        else:
            client = self.master.forget_pid(worker.pid)
        if client is not None:
            worker.up = worker.up or client.state == "STARTED"
            self.master.event("client_lost", {"pid": worker.pid, "worker": worker.slot})
        report = self._boot.take(worker.pid)
        now = time.monotonic()
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
        self._log_exit(worker, code, report)
        self.hooks.emit("worker_exited", _exit_info(worker, code, planned))
        if worker.reason is not ExitReason.STOP:  # a replacement follows (or a scale down)
            self.exits[worker.reason.value] += 1
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

    # -- ticks ------------------------------------------------------------------------------

    def _tick(self) -> None:
        now = time.monotonic()
        clients = self.master.clients_by_pid()
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
        hung: list[tuple[Worker, str]] = []
        for worker in self._live():
            client = clients.get(worker.pid) if self.config.bus else None
            worker.heard = client is not None
            if not self.config.bus and not worker.up and not worker.retiring:
                why = self._not_ready(worker, now)
                if why is not None:
                    hung.append((worker, why))
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
                self.config.bus
                and not worker.retiring
                and not self._exiting
                and now - worker.last_seen > self.config.worker_timeout
            ):
                worker.last_seen = now
                hung.append((worker, self._silence(worker)))
                self.master.event("worker_lost", {"worker": worker.slot, "pid": worker.pid})
        for worker, why in hung:
            self._kill_late(worker, why)
        self._recycle(now)

    def _not_ready(self, worker: Worker, now: float) -> str | None:
        """Probe a program's readiness: STARTED once it holds; why it is killed when it
        did not hold within the startup timeout; else None."""
        ready = self.config.ready or DEFAULT_READY
        if probe(ready, now - worker.started):
            self._started(worker)
        elif (
            now - worker.started > self.config.startup_timeout
            and not self._exiting
            and worker.reason is not ExitReason.TIMEOUT  # killed already, not reaped yet
        ):
            return (
                f"was not ready ({ready.describe()}) within --startup-timeout "
                f"{self.config.startup_timeout:g}s"
            )
        return None

    def _silence(self, worker: Worker) -> str:
        """Why a silent worker is killed: it never joined, or it stopped answering."""
        if worker.joined:
            return f"did not answer within --worker-timeout {self.config.worker_timeout:g}s"
        # At boot busd gives up with the explanation; later it is said once here.
        explain = self._booted and self._boot.first_time(NEVER_JOINED)
        return never_joined(self.config.startup_timeout, explain)

    def _recycle(self, now: float) -> None:
        """Queue workers due for a recycle; start replacements; retire the replaced."""
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
        """The retired-but-running workers with these pids."""
        return [w for w in self._retired if w.pid in pids]

    def _started(self, worker: Worker) -> None:
        """``worker`` reached STARTED: its slot and the pool have booted."""
        worker.up = True
        self._booted = True
        slot = self._slots.get(worker.slot)
        if slot is not None:
            slot.booted = True
            slot.boot_failures = 0
        self.master.log(f"{worker.label} started")
        if self.on_started is not None:
            self.on_started()
        self.hooks.emit(
            "worker_started",
            {"worker": worker.slot, "pid": worker.pid, "generation": worker.generation},
        )


def _exit_info(worker: Worker, code: int | None, planned: bool) -> dict[str, object]:
    """The ``worker_exited`` hook's map."""
    return {
        "worker": worker.slot,
        "pid": worker.pid,
        "generation": worker.generation,
        "code": code,
        "status": describe_status(code),
        "exit_status": code if code is not None and code >= 0 else None,
        "signal": signal.Signals(-code).name if code is not None and code < 0 else None,
        "reason": worker.reason.value if worker.reason else None,
        "planned": planned,
    }


__all__ = ["Upkeep"]
