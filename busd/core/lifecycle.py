"""The lifecycle half of a bus: the state machine, start, stop, exit and graceful.

Every change goes through one choke point, :meth:`Lifecycle._transition`,
which checks :data:`busd.core.states.TRANSITIONS`, logs ``Bus <STATE>``
once, wakes every waiter and calls :meth:`Lifecycle._state_changed` (the
hook a relaying bus overrides).

Who finishes an exit.  The first ``exit()`` owns it; its call path holds
the bus's *exit* role (see :mod:`busd.core.callpath`) while it stops and
runs the exit listeners.  An ``exit()`` that comes while a stop is running
hands the exit to that stop: its call path, which holds the *stop* role,
runs the exit listeners once the stop listeners are done.  Then::

    exit() from the path that holds the owning role  -> returns at once
        (a stop or exit listener of that exit: it finishes after the listener)
    exit() from anywhere else                        -> waits until the exit
        listeners ran, in bounded slices; if the owner gave up before them
        (an interrupt in a stop listener), it takes the exit over
"""

from __future__ import annotations

import atexit
import threading

from busd.core.callpath import Role, holding, holds
from busd.core.errors import ChannelFailures, IllegalTransition
from busd.core.pubsub import PubSub
from busd.core.states import TRANSITIONS, State

__all__ = ["Lifecycle"]

#: Seconds of each wait for another call path's exit; a notify ends it sooner.
EXIT_WAIT_SLICE = 1.0


class Lifecycle(PubSub):
    """A bus's states and the listener runs that move it (wspbus semantics)."""

    states = State

    def __init__(self) -> None:
        super().__init__()
        self._cond = threading.Condition(threading.RLock())
        self._state = State.STOPPED
        #: Transitions so far; ``_transition`` returns the number of its own.
        self._changes = 0
        self._stop_role = Role("stop")
        self._exit_role = Role("exit")
        #: The role whose call path runs the exit: ``_exit_role``, or ``_stop_role``
        #: when a running stop finishes it; None before any exit (and if it gave up).
        self._exit_owner: Role | None = None
        self._exit_pending = False
        self._exit_done = False
        self._atexit_registered = False

    # -- state ---------------------------------------------------------

    @property
    def state(self) -> State:
        """The current state."""
        return self._state

    @state.setter
    def state(self, new: State) -> None:
        self._transition(new)

    def _transition(self, new: State, after: int | None = None) -> int | None:
        """Move to ``new`` if the table allows it; the only place state changes.

        Returns the number of this transition (see :attr:`_changes`), or None,
        changing nothing, when the bus is already in ``new`` (another thread or
        an outer call is doing the same transition), or when ``after`` is given
        and other transitions happened since the transition numbered ``after``.
        """
        with self._cond:
            old = self._state
            if after is not None and after != self._changes:
                return None
            if new is old and new is not State.STARTED:
                return None
            if new not in TRANSITIONS[old]:
                raise IllegalTransition(f"bus cannot go from {old.name} to {new.name}")
            self._state = new
            self._changes += 1
            change = self._changes
            self._cond.notify_all()
        self.log(f"Bus {new.name}")
        self._state_changed(old, new)
        return change

    def _state_changed(self, old: State, new: State) -> None:
        """Called after every transition, outside the lock; for subclasses."""

    # -- lifecycle -----------------------------------------------------

    def start(self) -> None:
        """Start: STARTING, run the start listeners, STARTED.

        If a start listener fails, the bus logs it, exits (stop and exit
        listeners run) and raises the failure to the caller.
        """
        self._do_start()

    def stop(self) -> None:
        """Stop: STOPPING, run the stop listeners, STOPPED (even if some fail)."""
        self._do_stop()

    def exit(self) -> None:
        """Stop, then EXITING and run the exit listeners; EXITING is final.

        As in wspbus, the stop listeners run even when the bus is already
        STOPPED (``Bus STOPPING``, ``Bus STOPPED``, ``Bus EXITING``, ``Bus
        EXITED``): exit listeners may rely on what stop listeners release.
        Failures of stop or exit listeners are raised together after both ran.
        """
        self._do_exit()

    def graceful(self) -> None:
        """Advise every listener to reload."""
        self._do_graceful()

    # The _do_* methods are the local transitions.  Subclasses that forward
    # the public methods elsewhere (a client forwards them to its master)
    # still mirror through these, and they call only each other.

    def _do_start(self) -> None:
        mine = self._transition(State.STARTING)
        if mine is None:
            return
        self._register_atexit()
        try:
            self.publish("start")
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:
            self.log("Shutting down due to error in start listener:", level=40, traceback=True)
            self._abort_start()
            raise
        # Only if no stop (or another start) came in while our listeners ran.
        self._transition(State.STARTED, after=mine)

    def _abort_start(self) -> None:
        """After a failed start: exit, logging (not raising) further failures."""
        try:
            self._do_exit()
        except ChannelFailures:
            self.log("Error while exiting after a failed start", level=40, traceback=True)

    def _do_stop(self) -> None:
        with holding(self._stop_role):
            if self._transition(State.STOPPING) is None:
                return
            try:
                self.publish("stop")
            finally:
                self._transition(State.STOPPED)
                with self._cond:
                    exit_pending, self._exit_pending = self._exit_pending, False
                if exit_pending:
                    # An exit() came in while these stop listeners ran: they
                    # were its stop, so it goes straight on to EXITING.
                    try:
                        self._run_exit_listeners([])
                    finally:
                        self._release_exit(self._stop_role)

    def _do_exit(self, stop: bool = True) -> None:
        """Stop (``stop=False``: the caller's stop listeners just ran), then exit.

        The first caller owns the exit; any other waits for it to finish,
        except a stop or exit listener of that exit, which returns.
        """
        with self._cond:
            if not self._claim_exit():
                return
        failures: list[BaseException] = []
        handed = False
        try:
            with holding(self._exit_role):
                try:
                    if stop:
                        self._do_stop()
                except ChannelFailures as exc:
                    failures.extend(exc.get_instances())
                with self._cond:
                    # Another thread began a stop between our claim and our own stop.
                    handed = self._hand_exit_to_stopper()
                if not handed:
                    self._run_exit_listeners(failures)
        finally:
            self._release_exit(self._exit_role)
        if handed:
            self._do_exit()  # waits for that stop to finish the exit

    def _claim_exit(self) -> bool:
        """Under the lock: True if this call path is now the one to run the exit.

        False once the exit is done, or when it is this call path's own (a
        listener of it called exit()).  While another call path runs it, waits.
        """
        while True:
            owner = self._exit_owner
            if self._exit_done or holds(owner):
                return False
            if owner is None:
                if self._state is State.EXITING:  # set by hand: no exit listeners to wait for
                    return False
                if self._hand_exit_to_stopper():
                    continue
                self._exit_owner = self._exit_role
                return True
            self._cond.wait(EXIT_WAIT_SLICE)

    def _hand_exit_to_stopper(self) -> bool:
        """Under the lock: if a stop is running, its call path finishes the exit."""
        if self._state is not State.STOPPING:
            return False
        self._exit_pending = True
        self._exit_owner = self._stop_role
        self._cond.notify_all()
        return True

    def _release_exit(self, role: Role) -> None:
        """If ``role`` owns an exit it gave up before its listeners ran, let another run it."""
        with self._cond:
            if self._exit_owner is role and not self._exit_done:
                self._exit_owner = None
                self._cond.notify_all()

    def _run_exit_listeners(self, failures: list[BaseException]) -> None:
        if self._transition(State.EXITING) is None:
            return
        try:
            self.publish("exit")
        except ChannelFailures as exc:
            failures.extend(exc.get_instances())
        finally:
            with self._cond:
                self._exit_done = True
                self._cond.notify_all()
        self.log("Bus EXITED")
        if failures:
            raise ChannelFailures(channel="exit", exceptions=failures)

    def _do_graceful(self) -> None:
        self.log("Bus graceful")
        self.publish("graceful")

    # -- interpreter exit ----------------------------------------------

    def _register_atexit(self) -> None:
        with self._cond:
            if self._atexit_registered:
                return
            self._atexit_registered = True
        atexit.register(self._clean_exit)

    def _clean_exit(self) -> None:
        """At interpreter exit, exit a bus that was left running."""
        if self._state is not State.EXITING:
            self.log("busd.Bus was not exited before the interpreter ended; exiting now", level=30)
            self._do_exit()
