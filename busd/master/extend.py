"""How a MasterBus is extended: commands, hooks, and the questions about clients.

The pool, joined hosts, log files and ``--plugin`` modules add to a master
only through these methods, never by changing its tables.  The tables are
filled before the master starts, or on the command thread (which alone reads
them); hooks run on the command thread, except client state hooks, which run
on the hub's thread after the snapshot showing the new state is out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from busd.core.wire import ErrorCode, wire_error
from busd.master.clients import ClientInfo
from busd.master.commands import Handler
from busd.master.hubmsg import ClientChange

if TYPE_CHECKING:
    from busd.master.hub import Hub

#: How often a wait for clients on the command thread runs the upkeep.
UPKEEP_EVERY = 0.05
#: Read-only answers the hub makes itself (a quick command of these names never runs).
HUB_ANSWERS = frozenset({"ping", "snapshot", "clients", "status", "replay", "workers"})

ClientHook = Callable[[str, dict[str, Any]], None]
StatusHook = Callable[[dict[str, Any]], None]


class Extensible:
    """The command table, the hooks and the client questions of a MasterBus."""

    hub: Hub
    #: Channels that stay local (set by MasterBus; extended by keep_local).
    no_relay: frozenset[str]
    #: Client events whose relay or hooks failed (logged; the command thread goes on).
    failed_events = 0

    if TYPE_CHECKING:

        def event(self, name: str, data: dict[str, Any]) -> int: ...

        def log(self, msg: str = "", level: int = ..., traceback: bool = False) -> None: ...

        def _meanwhile(self) -> None: ...

        def relay_graceful_to(self, pools: Iterable[str] | None) -> None: ...

    def _setup_extensions(self, defaults: dict[str, Handler]) -> None:
        self._commands_table = dict(defaults)
        #: Read-only commands (a read-only key may send them), run on the
        #: command thread like the others; status and workers come from the board.
        self._quick_commands: dict[str, Handler] = {}
        #: Called on the command thread as hook(event, client) on join/leave/loss.
        self._client_hooks: list[ClientHook] = []
        #: Called on the command thread to add to the status map (the pool adds its workers).
        self._status_hooks: list[StatusHook] = []
        #: Called on the command thread while it waits inside a command (add_upkeep).
        self._upkeep: list[Callable[[], None]] = []
        self._in_upkeep = False
        #: Commands run, by name and result (command thread; see command_counts).
        self._command_counts: dict[str, dict[str, int]] = {}
        self._status_hooks.append(lambda status: status.update(commands=self.command_counts()))

    def add_command(self, name: str, handler: Handler, *, readonly: bool = False) -> None:
        """Answer command ``name`` with ``handler(body)``, on the command thread.

        A ``readonly`` command may be sent with a read-only key.  A name that
        is taken (by busd or an earlier call) is a ValueError.
        """
        if name in self._commands_table or name in self._quick_commands or name in HUB_ANSWERS:
            raise ValueError(f"command {name!r} exists already")
        (self._quick_commands if readonly else self._commands_table)[name] = handler

    def wrap_command(self, name: str, wrapper: Callable[[Handler, dict[str, Any]], Any]) -> None:
        """Answer command ``name`` with ``wrapper(previous_handler, body)`` from now on."""
        previous = self._commands_table[name]
        self._commands_table[name] = lambda body: wrapper(previous, body)

    def keep_local(self, *channels: str) -> None:
        """Never relay ``channels`` to the clients (their listeners here still run)."""
        self.no_relay = self.no_relay | frozenset(channels)

    def keep_graceful_local(self) -> None:
        """Run graceful here only: the clients are replaced instead (a respawn reload)."""
        self.relay_graceful_to(())

    def add_client_hook(self, hook: ClientHook) -> None:
        """Call ``hook(event, client)`` on the command thread on each join, leave and loss."""
        self._client_hooks.append(hook)

    def add_status_hook(self, hook: StatusHook) -> None:
        """Call ``hook(status)`` on the command thread to add to the status map."""
        self._status_hooks.append(hook)

    def add_client_state_hook(self, hook: Callable[[ClientInfo], None]) -> None:
        """Call ``hook(client)`` when a client reports a new state (on the hub's thread:
        keep it to a wake-up)."""
        self.hub.door.add_state_hook(hook)

    def add_upkeep(self, work: Callable[[], None]) -> None:
        """Call ``work()`` on the command thread while it waits inside a command (for
        acks, for clients): the pool reaps and restarts its workers meanwhile."""
        self._upkeep.append(work)

    def _run_upkeep(self) -> None:
        for work in self._upkeep:
            try:
                work()
            except Exception:  # noqa: BLE001 - upkeep is a boundary: logged, the wait goes on
                self.log(f"upkeep {work!r} failed", level=40, traceback=True)

    def wait_for_clients(
        self, predicate: Callable[[list[ClientInfo]], bool], timeout: float
    ) -> bool:
        """Wait until ``predicate(clients)`` holds (False past ``timeout`` seconds).

        On the command thread, the upkeep runs meanwhile, as in every wait there.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            step = min(remaining, UPKEEP_EVERY) if self._upkeep else remaining
            if self.hub.door.wait_clients(predicate, max(0.0, step)):
                return True
            if remaining <= step:
                return False
            self._meanwhile()

    def clients_by_pid(self) -> dict[int, ClientInfo]:
        """The connected clients by process id."""
        return self.hub.door.client_table().by_pid()

    def excuse_pid(self, pid: int) -> ClientInfo | None:
        """The client of process ``pid`` is going away on purpose: no ack is awaited from it."""
        return self.hub.door.excuse_pids((pid,))[pid]

    def excuse_pids(self, pids: Iterable[int]) -> dict[int, ClientInfo | None]:
        """:meth:`excuse_pid` for several processes, in one round trip to the hub."""
        return self.hub.door.excuse_pids(pids)

    def forget_pid(self, pid: int) -> ClientInfo | None:
        """Process ``pid`` ended: forget its client (returned, if it had one)."""
        return self.hub.door.forget_pids((pid,))[pid]

    def forget_pids(self, pids: Iterable[int]) -> dict[int, ClientInfo | None]:
        """:meth:`forget_pid` for several processes, in one round trip to the hub."""
        return self.hub.door.forget_pids(pids)

    def _execute(self, body: dict[str, Any]) -> Any:
        cmd = body["cmd"]
        handler = self._commands_table.get(cmd) or self._quick_commands.get(cmd)
        if handler is None:
            self._count_command("unknown", "error")
            known = ", ".join(sorted({*self._commands_table, *self._quick_commands, *HUB_ANSWERS}))
            raise wire_error(ErrorCode.UNKNOWN_COMMAND, f"unknown command {cmd!r} (known: {known})")
        try:
            result = handler(body)
        except BaseException:
            self._count_command(cmd, "error")
            raise
        self._count_command(cmd, "ok")
        return result

    def _count_command(self, cmd: str, result: str) -> None:
        counts = self._command_counts.setdefault(cmd, {"ok": 0, "error": 0})
        counts[result] += 1

    def command_counts(self) -> dict[str, dict[str, int]]:
        """Commands run so far, by name, each ``{"ok": n, "error": n}`` (command thread;
        ``status`` carries a copy as ``"commands"``)."""
        return {cmd: dict(counts) for cmd, counts in self._command_counts.items()}

    def _client_changed(self, item: ClientChange) -> None:
        """Relay a client's join, leave or loss; a failure here never ends the command thread."""
        try:
            self.event(item.event, item.client)
            for hook in self._client_hooks:
                hook(item.event, item.client)
        except Exception:  # noqa: BLE001 - one bad event must not leave the master deaf
            self.failed_events += 1
            self.log(
                f"the {item.event!r} event of client {item.client.get('id')} failed",
                level=40,
                traceback=True,
            )
