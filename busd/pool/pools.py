"""Several named pools on one master: the lifecycle staged by ``after``, one bus.

::

    master channels (command thread)            the pools, in start order
      start    -> fill the pools that come after none; the others once every
                  worker of the pools they come after is STARTED (on each
                  worker that starts: _advance)
      stop, exit begun (a stop hook, still STARTED)
               -> the pools that come after others stop first, highest level
                  first, each waited for (its workers leave: stop, exit listeners)
      exit     -> every pool left waits for its workers, reaps them
      graceful -> in-place pools: relayed to their workers only (reload_begin/end)
                  respawn pools: new workers first; programs: reload_signal or respawn
    status hook -> "workers" (every pool's, each naming its "pool") and "pools"

One command thread owns every pool and this table; the supervisor of each
pool reports to it (:mod:`busd.pool.pool`).  Other threads (sd_notify's
readiness wait, a joined host's report, a forced shutdown) only read the
table: the command thread replaces it whole, never changes it in place, so a
reader sees one table or the next, each complete.  With one pool (the command
line's ``main``) busd behaves as it always has: a graceful reaches every
client, and the commands need no ``--pool``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from busd.commands import graceful, lifecycle
from busd.commands.checks import bad
from busd.core.bus import State
from busd.core.wire import ErrorCode, wire_error
from busd.master.bus import MasterBus
from busd.master.clients import ClientInfo
from busd.pool.commands import Reload, install_commands
from busd.pool.pool import Pool

#: Upper bounds (s) of the buckets of graceful --wait's duration.
RELOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    """Counts of observations by upper bound, their count and sum (one thread's)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation."""
        for at, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[at] += 1
        self.count += 1
        self.sum += value

    def as_dict(self) -> dict[str, Any]:
        """``{"buckets": [[le, cumulative count], ...], "count", "sum"}``."""
        return {
            "buckets": [[b, c] for b, c in zip(self.bounds, self.counts, strict=True)],
            "count": self.count,
            "sum": round(self.sum, 6),
        }


class Pools:
    """Every pool of a master, by name, in start order (the command thread owns it)."""

    def __init__(self, master: MasterBus) -> None:
        self.master = master
        self._pools: dict[str, Pool] = {}
        #: The master's start ran (the pools are to run); False once it stops.
        self._running = False
        self._in_graceful_command = False
        #: Some pool waits to start: one bool the hub's thread reads (_client_state).
        self._waiting = False
        #: How long each ``graceful --wait`` took (a histogram; in status as "reloads").
        self.reload_times = Histogram(RELOAD_BUCKETS)

    # -- the table --------------------------------------------------------------------

    @property
    def pools(self) -> Mapping[str, Pool]:
        """Every pool by name, in start order."""
        return dict(self._pools)

    def add(self, pool: Pool) -> None:
        """Attach ``pool`` (after the others: it must come after no later one); it starts
        now if the master runs and the pools it comes after are STARTED."""
        self._pools = {**self._pools, pool.name: pool}
        self._attach(pool)
        self._set_audience()
        if self._running:
            self._advance()

    def reorder(self, names: Iterable[str]) -> None:
        """Put the pools in this start order (the names are the pools')."""
        self._pools = {name: self._pools[name] for name in names}

    def remove(self, name: str) -> Pool:
        """Stop pool ``name`` (bounded), forget it, and return it (the caller closes it)."""
        pool = self._pools[name]
        pool.stop_workers()
        self._pools = {n: p for n, p in self._pools.items() if n != name}
        pool.retired = True
        self._set_audience()
        return pool

    def replace(self, new: Pool) -> Pool:
        """Start ``new`` in place of the pool of its name: its workers first (STARTED,
        bounded by its startup timeout), then the old pool's stop (a program's: the
        old one's stop first).  The old one is
        returned (the caller closes it); if the new workers did not start, they are
        stopped, the old pool is kept, and a BusError says so."""
        old = self._pools[new.name]
        self._attach(new)
        running = old.active
        if not (old.config.bus and new.config.bus):
            # A program may hold a port the new one could not bind: never both at once.
            old.stop_workers()
        if running:
            new.start()
            deadline = time.monotonic() + new.config.startup_timeout
            if not new.wait_started(deadline):
                new.stop_workers()
                new.retired = True
                if not old.active:  # stopped first (a program): started again
                    old.start()
                raise wire_error(
                    ErrorCode.TIMEOUT,
                    f"pool {new.name}: the new workers did not reach STARTED within "
                    f"--startup-timeout {new.config.startup_timeout:g}s; the old ones kept",
                )
        self._pools = {**self._pools, new.name: new}  # its place in the order kept
        old.stop_workers()
        old.retired = True
        self._set_audience()
        return old

    def _attach(self, pool: Pool) -> None:
        """Join ``pool`` to the master; a worker of it that starts may let others start."""
        pool.on_started = lambda: self.master.call_soon(self._advance)
        pool.attach()

    def pick(self, body: Mapping[str, Any]) -> Pool:
        """The pool a command names (``"pool"``); with none, the only pool there is."""
        name = body.get("pool")
        if name is None:
            if len(self._pools) == 1:
                return next(iter(self._pools.values()))
            raise bad(f"several pools: say which with --pool ({', '.join(self._pools)})")
        if not isinstance(name, str) or name not in self._pools:
            raise bad(f"no pool named {name!r} (pools: {', '.join(self._pools) or 'none'})")
        return self._pools[name]

    def owner_of(self, pid: int) -> Pool:
        """The pool whose running worker has process id ``pid``."""
        for pool in self._pools.values():
            if any(w.pid == pid for w in pool.running().values()):
                return pool
        raise wire_error(ErrorCode.BAD_ARGUMENTS, f"no running worker has pid {pid!r}")

    # -- wiring ---------------------------------------------------------------------------

    def subscribe(self) -> None:
        """Listen on the master's channels; add the commands and the status."""
        master = self.master
        master.subscribe("start", self.start, priority=70)
        master.subscribe("exit", self.exit, priority=30)
        master.subscribe("graceful", self._reloads_begin, priority=1)
        master.subscribe("graceful", self._replace_or_signal)
        master.subscribe("graceful", self._reloads_ran, priority=99)
        master.wrap_command("graceful", self._graceful_command)
        master.add_stop_hook(self._stop_in_order)
        # A worker STARTED again (a start after a stop): pools waiting for it may start.
        master.add_client_state_hook(self._client_state)
        install_commands(self)
        master.add_status_hook(self._status)

    def refresh(self) -> None:
        """After a pool's settings changed in place: who a graceful reaches."""
        self._set_audience()

    def _client_state(self, client: ClientInfo) -> None:
        """On the hub's thread: a client's new state; STARTED may let a pool start."""
        if client.state == "STARTED" and self._running and self._waiting:
            self.master.call_soon(self._advance)

    def _note_waiting(self) -> None:
        """Whether some pool waits to start (command thread; the hub's hook reads it)."""
        self._waiting = any(not p.active and not p.retired for p in self._pools.values())

    def _set_audience(self) -> None:
        """Who a graceful is relayed to: every client when every pool reloads in place;
        else the in-place pools' workers (and clients of no pool); none: local only."""
        inplace = [p.name for p in self._inplace()]
        if len(inplace) == len(self._pools):
            self.master.relay_graceful_to(None)
        else:
            self.master.relay_graceful_to([*inplace, ""] if inplace else [])

    def _inplace(self) -> list[Pool]:
        return [p for p in self._pools.values() if p.config.bus and p.config.reload != "respawn"]

    # -- lifecycle listeners (command thread) ----------------------------------------------

    def start(self) -> None:
        """Start the pools that come after none; the others follow (_advance)."""
        self._running = True
        self._advance()

    def advance(self) -> None:
        """Start each pool whose ``after`` pools are all STARTED (command thread)."""
        self._advance()

    def _advance(self) -> None:
        """Start each pool whose ``after`` pools are all STARTED."""
        if not self._running or self.master.state not in (State.STARTING, State.STARTED):
            return
        waiting = [p for p in self._pools.values() if not p.active and not p.retired]
        if waiting:
            clients = self.master.clients_by_pid()
            for pool in waiting:
                if all(
                    name in self._pools and self._pools[name].all_started(clients)
                    for name in pool.config.after
                ):
                    pool.start()
        self._note_waiting()

    def _stop_in_order(self) -> None:
        """Before the master leaves STARTED: the pools others come after stop last.

        Each level of ``after``, the highest first, stops and is waited for;
        the pools of level 0 stop with the master, as one pool always has.
        """
        self._running = False
        levels = self.levels()
        for level in sorted(set(levels.values()) - {0}, reverse=True):
            for name, pool in self._pools.items():
                if levels[name] == level and pool.active:
                    self.master.log(f"pool {name}: stopping before the pools it comes after")
                    pool.stop_workers()
        self._note_waiting()

    def levels(self) -> dict[str, int]:
        """Each pool's level: 0 when it comes after none, else one more than theirs."""
        found: dict[str, int] = {}
        for name, pool in self._pools.items():  # start order: theirs are known
            after = [found[a] for a in pool.config.after if a in found]
            found[name] = 1 + max(after) if after else 0
        return found

    def exit(self) -> None:
        """Every pool waits for its workers, the last started first."""
        self._running = False
        for pool in reversed(list(self._pools.values())):
            pool.exit()

    # -- graceful ----------------------------------------------------------------------------

    def _reloads_begin(self) -> None:
        if self.master.graceful_audience != frozenset():
            for pool in self._inplace():
                pool.reload_begins()

    def _replace_or_signal(self) -> None:
        """Respawn pools replace their workers; programs get their reload signal."""
        failed: list[BaseException] = []
        for pool in list(self._pools.values()):
            try:
                if not pool.config.bus:
                    pool.reload_program()
                elif pool.config.reload == "respawn":
                    pool.respawn()
            except Exception as exc:  # noqa: BLE001 - every pool reloads; the first error told
                failed.append(exc)
        if failed:
            raise failed[0]

    def _reloads_ran(self) -> None:
        """The master's graceful listeners ran; the workers' acks are still to come."""
        if not self._in_graceful_command:
            # MasterBus.graceful() called as a method: end after that call returned.
            self.master.call_soon(lambda: self._reloads_end(None, waited=None))

    def _reloads_end(self, ok: bool | None, waited: bool | None) -> None:
        for pool in self._inplace():
            pool.reload_ends(ok, waited)

    def _graceful_command(
        self, graceful_here: Callable[[dict[str, Any]], Any], body: dict[str, Any]
    ) -> Any:
        """``graceful [--pool P] [--wait]``: reload_end once it returned (with the acks);
        with wait, respawn pools' old workers gone too."""
        args = graceful.parse(body)
        if body.get("pool") is not None:
            return self._graceful_pool(self.pick(body), args)
        began = time.monotonic()
        self._in_graceful_command = True
        try:
            result = graceful_here(body)
        except Exception:
            self._in_graceful_command = False
            self._reloads_end(False, waited=args.wait)
            self._take_reloads()
            raise
        self._in_graceful_command = False
        acks = result.get("acks") if isinstance(result, Mapping) else None
        ok = bool(acks.get("ok")) if isinstance(acks, Mapping) else True
        self._reloads_end(ok, waited=acks is not None)
        answer = self._respawned(self._take_reloads(), result, args, began)
        if args.wait:  # a graceful with every ack (and every old worker gone)
            self.reload_times.observe(time.monotonic() - began)
        return answer

    def _graceful_pool(self, pool: Pool, args: graceful.Args) -> Any:
        """``graceful --pool P``: only P reloads (the master's own listeners do not run)."""
        began = time.monotonic()
        self.master.log(f"Bus graceful of pool {pool.name}")
        if pool.config.bus and pool.config.reload != "respawn":
            pool.reload_begins()
            try:
                report = self.master.graceful_pools([pool.name], args.wait, args.timeout)
            except Exception:
                pool.reload_ends(False, waited=args.wait)
                raise
            pool.reload_ends(report.ok if report is not None else True, report is not None)
            return lifecycle.answer(self.master, report)
        if pool.config.bus:
            pool.respawn()
        else:
            pool.reload_program()
        result = lifecycle.answer(self.master, None)
        return self._respawned([(pool, pool.take_last_reload())], result, args, began)

    def _take_reloads(self) -> list[tuple[Pool, Reload]]:
        return [(pool, pool.take_last_reload()) for pool in self._pools.values()]

    def _respawned(
        self, reloads: list[tuple[Pool, Reload]], result: Any, args: graceful.Args, began: float
    ) -> Any:
        """With wait: until every worker the respawns retired has exited (bounded by
        ``args.timeout``, else the master's ack timeout, counted from ``began``)."""
        started = [w for _, r in reloads for w in r.started]
        retired = [w for _, r in reloads for w in r.retired]
        if not args.wait or not (started or retired):
            return result
        limit = self.master.ack_timeout if args.timeout is None else args.timeout
        if not all(
            pool.wait_exited(r.retired, began + limit - time.monotonic()) for pool, r in reloads
        ):
            running = [w.pid for w in retired if not w.reaped]
            raise wire_error(
                ErrorCode.TIMEOUT,
                f"respawn: old workers (pids {', '.join(map(str, running))}) still running "
                f"{limit:g}s after the reload began (they get SIGKILL --graceful-timeout "
                "after SIGTERM)",
                {"running": running},
            )
        if isinstance(result, dict):
            result["reload"] = {
                "mode": "respawn",
                "started": [w.pid for w in started],
                "exited": [w.pid for w in retired],
            }
        return result

    # -- information -------------------------------------------------------------------------

    def workers(self) -> list[dict[str, Any]]:
        """Every pool's workers (any thread: each pool's published view)."""
        return [row for pool in list(self._pools.values()) for row in pool.workers()]

    def _status(self, status: dict[str, Any]) -> None:
        pools = list(self._pools.values())
        workers = [pool.workers() for pool in pools]
        status.update(
            reloads=self.reload_times.as_dict(),
            workers=[row for rows in workers for row in rows],
            pools=[pool.describe(rows) for pool, rows in zip(pools, workers, strict=True)],
            master=pools[0].master_stats() if pools else {},
        )

    @property
    def boot_failure(self) -> str | None:
        """Why a pool gave up at boot (busd then exits EX_BOOT), or None."""
        failures = [
            f"pool {p.name}: {p.boot_failure}" for p in self._pools.values() if p.boot_failure
        ]
        if not failures:
            return None
        return failures[0] if len(self._pools) > 1 else failures[0].partition(": ")[2]

    def kill_all(self) -> None:
        """SIGKILL every worker of every pool (a forced shutdown, from any thread)."""
        for pool in list(self._pools.values()):
            pool.kill_all()

    def close(self) -> None:
        """Close every pool (their supervisors end)."""
        for pool in list(self._pools.values()):
            pool.close()


__all__ = ["Pools"]
