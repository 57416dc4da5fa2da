"""What a master says of itself: the status map, for the board and ``busctl status``.

The command thread computes it (the hooks are user code, run there) and
hands it to the hub as the board, after each command and whenever the hub
finds it stale; the hub answers ``status`` and ``workers`` from the board.
The clients and the hub's counters come from the hub's published snapshot.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

from busd.master.calls import IN_COMMAND
from busd.master.clients import ClientInfo
from busd.master.extend import Extensible

#: A board is made again between two commands (or while one waits) once it is this old:
#: a queue of commands never leaves ``status`` and ``workers`` stale for long.
BOARD_MAX_AGE = 0.25

if TYPE_CHECKING:
    from busd.core.bus import State


class Reporting(Extensible):
    """The status map of a MasterBus, and the board made of it."""

    _board_at = 0.0

    if TYPE_CHECKING:
        name: str
        pid: int
        epoch: int
        started_at: float
        _state: State
        _status: dict[str, Any]

        def snapshot(self) -> tuple[int, str]: ...

        def log(self, msg: str = "", level: int = ..., traceback: bool = False) -> None: ...

    def clients(self) -> list[ClientInfo]:
        """The connected clients: id, pid, host, mirrored state, heartbeat, last ack."""
        return list(self.hub.door.client_table().clients)

    def status(self) -> dict[str, Any]:
        """What ``busctl status`` shows (computed now, in the calling thread)."""
        status = self._status_now()
        status["uptime"] = round(time.time() - status.pop("started_at"), 3)
        return status

    def _status_now(self) -> dict[str, Any]:
        seq, _ = self.snapshot()
        now = time.monotonic()
        status = {
            "name": self.name,
            "state": self._state.name,
            "pid": self.pid,
            "host": socket.gethostname(),
            "epoch": self.epoch,
            "seq": seq,
            "started_at": self.started_at,
            "clients": [c.as_dict(now) for c in self.clients()],
            "workers": [],
            "endpoints": {"pub": self.hub.pub_endpoints, "ctl": self.hub.ctl_endpoints},
            # Requests, acks and every rejected frame, by error code (hub thread).
            "counters": dict(self.hub.door.counters()),
        }
        for hook in self._status_hooks:
            hook(status)
        return status

    def _refresh_board(self) -> None:
        """Compute the read-only answers (hooks, quick commands) and hand them to the hub."""
        try:
            status = self._status_now()
        except Exception:  # noqa: BLE001 - a hook is user code: keep the last board
            self.log("a status hook failed", level=40, traceback=True)
            return
        self._publish_board(status)

    def _board_is_old(self) -> bool:
        """Older than BOARD_MAX_AGE: a busy command thread makes a new one between items."""
        return time.monotonic() - self._board_at > BOARD_MAX_AGE

    def _publish_board(self, status: dict[str, Any]) -> None:
        self._board_at = time.monotonic()
        self._status = status
        self.hub.publish_board(
            {"status": status, "workers": status.get("workers", [])},
            frozenset(self._quick_commands),
        )

    def _meanwhile(self) -> None:
        """While the command thread waits inside a command: the upkeep, a fresh board."""
        if not IN_COMMAND.get() or self._in_upkeep:
            return
        self._in_upkeep = True
        try:
            self._run_upkeep()
            if self._board_is_old():
                self._refresh_board()
        finally:
            self._in_upkeep = False
