"""The master's graceful: to every client, or to the clients of some pools only.

::

    [busd-commands] _graceful() --PUBLISH graceful, ack true---------------> every client
                    graceful_pools({"web"}) --ack {"ack": true, "pools": ["web"]}--> every
                        client; only those whose HELLO named a listed pool run it and ack

A message meant for some pools carries, in place of PUBLISH's ``ack`` item, a
map ``{"ack": true, "pools": [name, ...]}`` (docs/PROTOCOL.md): a client of
another pool takes its sequence number and runs nothing.  The acks awaited are
those of the listed pools' clients.  Also here: the hooks that run before the
master leaves STARTED (a stop or an exit), where several pools stop one after
another.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from busd.core.bus import State
from busd.master.acks import AckReport

if TYPE_CHECKING:
    from busd.core.errors import ChannelFailures
    from busd.master.clients import ClientTable
    from busd.master.hub import Hub


class Reloads:
    """MasterBus's graceful, and what runs before it stops."""

    hub: Hub
    #: The pools a graceful is relayed to ("" names clients of no pool); None: every
    #: client; none at all: graceful runs here only (keep_graceful_local).
    graceful_audience: frozenset[str] | None = None
    #: Called as a stop or an exit begins (add_stop_hook).
    _stop_hooks: tuple[Callable[[], None], ...] = ()

    if TYPE_CHECKING:
        _state: State

        def _relay(
            self, channel: str, args: Iterable[Any], kwargs: dict[str, Any], ack: Any
        ) -> int: ...

        def _local(self, channel: str, *args: Any, **kwargs: Any) -> ChannelFailures | None: ...

        def _wait(
            self, seqs: list[int], expected: set[int], timeout: float | None
        ) -> AckReport: ...

        def log(self, msg: str = "", level: int = ..., traceback: bool = False) -> None: ...

    def relay_graceful_to(self, pools: Iterable[str] | None) -> None:
        """Relay graceful only to the clients of ``pools`` (None: to every client; none:
        graceful runs here only, as with keep_graceful_local)."""
        self.graceful_audience = None if pools is None else frozenset(pools)

    def relay_asking(
        self, channel: str, kwargs: dict[str, Any] | None = None
    ) -> tuple[int, ClientTable]:
        """Relay ``channel`` (with ``kwargs``, if any) with ack, from any thread, and
        return its seq and the clients then: those of them with a lower ``joined_seq``
        will ack it (:func:`busd.master.acks.wait_acks` on ``self.hub.door`` waits for
        them).  The master's own listeners do not run."""
        table = self.hub.door.client_table()
        return self._relay(channel, (), kwargs or {}, ack=True), table

    def graceful_reaches(self, pool: str) -> bool:
        """Whether a graceful is relayed to the clients of ``pool`` ("": of no pool)."""
        audience = self.graceful_audience
        return audience is None or pool in audience

    def add_stop_hook(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` on the command thread when a stop or an exit begins, while the
        master is still STARTED (nothing relayed yet): pools that stop in order."""
        self._stop_hooks = (*self._stop_hooks, hook)

    def _before_stopping(self) -> None:
        if self._state not in (State.STARTED, State.STARTING):
            return
        for hook in self._stop_hooks:
            try:
                hook()
            except Exception:  # noqa: BLE001 - the stop goes on whatever a hook did
                self.log(f"stop hook {hook!r} failed", level=40, traceback=True)

    def _graceful(self, wait: bool = False, timeout: float | None = None) -> AckReport | None:
        self.log("Bus graceful")
        if self.graceful_audience == frozenset():
            # The pool replaces the workers instead (respawn reload): local only.
            failures = self._local("graceful")
            if failures:
                raise failures
            return None
        return self._send_graceful(self.graceful_audience, wait, timeout, local=True)

    def graceful_pools(
        self, pools: Iterable[str], wait: bool = False, timeout: float | None = None
    ) -> AckReport | None:
        """Relay graceful to the clients of ``pools`` only; the master's own graceful
        listeners do not run (command thread)."""
        return self._send_graceful(frozenset(pools), wait, timeout, local=False)

    def _send_graceful(
        self, pools: frozenset[str] | None, wait: bool, timeout: float | None, local: bool
    ) -> AckReport | None:
        ack: Any = True if pools is None else {"ack": True, "pools": sorted(pools)}
        seq = self._relay("graceful", (), {}, ack=ack)
        expected = self.hub.door.client_table().expected(seq, pools)
        failures = self._local("graceful") if local else None
        report = self._wait([seq], expected, timeout) if wait else None
        if failures:
            raise failures
        return report


__all__ = ["Reloads"]
