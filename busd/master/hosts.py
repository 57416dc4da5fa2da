"""The master's record of joined hosts: pools on other machines that follow it.

::

    joined busd (busd --join) --REQUEST host_report {host, client_id, workers, missed}--+
                                                                                         v
    [ busd-hub ] --Request / ClientChange--> [ busd-commands ]
                                               quick command "host_report" --> HostTable
                                               client hooks (joined/left/lost) --^  |
                                               status hook --> board --> status["hosts"]
                                               graceful listener (respawn masters)
                                               EVENT host_updated, host_lost, host_left

A joined busd is one client of the master (role ``host``); it relays to its
own workers and reports them.  Everything here runs on the master's command
thread (quick commands, client hooks, status hooks and listeners all do),
so the table has one owner and no lock.  A host whose client is lost stays
listed, marked ``lost`` with each of its workers, until it joins again or
leaves.

Both sides count the other lost after the same silence: the master's
heartbeat x liveness (the hub holds clients of role ``host`` to it, and the
joined busd takes it from its welcome).  ``missed`` is what the host says it
never delivered, counted exactly on its side (older than the replay window
when its link came back, or relayed while it was away after an exit).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from busd.core.errors import BusError
from busd.core.wire import ErrorCode, wire_error

HOST_ROLE = "host"
#: Relayed instead of graceful when the master does not relay graceful
#: (``--reload respawn`` replaces its own workers): only joined hosts listen.
HOST_GRACEFUL = "busd.host_graceful"
#: A report is cut to this many workers (a status reply has a size limit).
MAX_REPORTED_WORKERS = 512


class HostMaster(Protocol):
    """What the table needs from the MasterBus."""

    def graceful_reaches(self, pool: str) -> bool:
        """Whether a graceful is relayed to the clients of ``pool`` ("": of no pool)."""

    def add_command(self, name: str, handler: Any, *, readonly: bool = False) -> None:
        """Answer a command."""

    def add_client_hook(self, hook: Any) -> None:
        """Follow joins, leaves and losses."""

    def add_status_hook(self, hook: Any) -> None:
        """Add to the status map."""

    def subscribe(self, channel: str, callback: Any = None, priority: int | None = None) -> Any:
        """Add a listener."""

    def broadcast_and_wait(
        self, channel: str, args: Any = (), kwargs: Any = None, timeout: float | None = None
    ) -> Any:
        """Publish everywhere and wait for every client's ack."""

    def event(self, name: str, data: dict[str, Any]) -> int:
        """Send an EVENT to every client."""


class HostTable:
    """Joined hosts by name: their client, state and last reported workers."""

    def __init__(self, master: HostMaster) -> None:
        self.master = master
        self._hosts: dict[str, dict[str, Any]] = {}
        self._clients: dict[int, str] = {}
        #: Clients that joined as hosts, reported yet or not.
        self._host_clients: set[int] = set()

    def install(self) -> None:
        """Answer reports, follow joined hosts' clients, add ``hosts`` to status."""
        self.master.add_command("host_report", self._report, readonly=True)
        self.master.add_client_hook(self._client_event)
        self.master.add_status_hook(self._status)
        self.master.subscribe("graceful", self._graceful_hosts, priority=60)

    def _graceful_hosts(self) -> None:
        # Joined hosts are clients of no pool: told apart when the graceful skips them.
        if self.master.graceful_reaches("") or not self._host_clients:
            return
        report = self.master.broadcast_and_wait(HOST_GRACEFUL)
        if not report.ok:
            raise BusError("; ".join(report.failures()))

    def _report(self, body: dict[str, Any]) -> dict[str, Any]:
        host, client_id, workers = body.get("host"), body.get("client_id"), body.get("workers")
        if not (
            isinstance(host, str)
            and host
            and isinstance(client_id, int)
            and isinstance(workers, list)
        ):
            raise wire_error(
                ErrorCode.BAD_ARGUMENTS,
                "host_report needs 'host' (str), 'client_id' (int), 'workers' (list)",
            )
        missed = body.get("missed", 0)
        if type(missed) is not int or missed < 0:
            raise wire_error(ErrorCode.BAD_ARGUMENTS, "host_report: 'missed' is an integer >= 0")
        rows = [_worker_row(w) for w in workers[:MAX_REPORTED_WORKERS] if isinstance(w, dict)]
        entry = self._hosts.get(host)
        joined = entry is not None and entry["state"] == "joined" and entry["client"] == client_id
        if joined and entry is not None and entry["workers"] == rows and entry["missed"] == missed:
            return {"ok": True}
        since = entry["since"] if joined and entry is not None else time.time()
        self._hosts[host] = {
            "host": host,
            "client": client_id,
            "state": "joined",
            "since": since,
            "workers": rows,
            "missed": missed,
        }
        self._clients[client_id] = host
        self.master.event("host_updated", dict(self._hosts[host]))
        return {"ok": True}

    def _client_event(self, event: str, client: dict[str, Any]) -> None:
        if client.get("role") != HOST_ROLE:
            return
        client_id = int(client.get("id") or 0)
        if event == "client_joined":
            self._host_clients.add(client_id)
            return
        self._host_clients.discard(client_id)
        host = self._clients.pop(client_id, None)
        entry = self._hosts.get(host) if host is not None else None
        if host is None or entry is None or entry["client"] != client.get("id"):
            return
        if event == "client_lost":
            workers = [{**w, "state": "lost"} for w in entry["workers"]]
            self._hosts[host] = {**entry, "state": "lost", "since": time.time(), "workers": workers}
            self.master.event("host_lost", dict(self._hosts[host]))
        elif event == "client_left":
            del self._hosts[host]
            self.master.event("host_left", {"host": host, "client": entry["client"]})

    def _status(self, status: dict[str, Any]) -> None:
        status["hosts"] = [
            dict(h) for h in sorted(self._hosts.values(), key=lambda h: str(h["host"]))
        ]

    def hosts(self) -> list[dict[str, Any]]:
        """The table as status shows it."""
        status: dict[str, Any] = {}
        self._status(status)
        return list(status["hosts"])


def _worker_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row.get("id"), "pid": row.get("pid"), "state": str(row.get("state"))}
