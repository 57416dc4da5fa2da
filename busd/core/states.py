"""The bus's lifecycle states and the transitions between them, as data.

The states are wspbus's; the table is what :meth:`busd.core.lifecycle.Lifecycle._transition`
checks, the one place a bus's state changes::

                 start()             (listeners ok)
     STOPPED ------------> STARTING ---------------> STARTED
      ^  |  ^                 |   ^                    |  |
      |  |  |                 |   +---- start() -------+  |
      |  |  |   stop()        v stop()   (failure: exit)  | stop()
      |  |  +------------- STOPPING <---------------------+
      |  |                    ^
      |  +--- stop() ---------+
      |
      +--(exit(): stop(), even from STOPPED, then)--> EXITING   (terminal)
"""

from __future__ import annotations

import enum

__all__ = ["TRANSITIONS", "State", "states"]


class State(enum.Enum):
    """A lifecycle state of a bus."""

    STOPPED = "STOPPED"
    STARTING = "STARTING"
    STARTED = "STARTED"
    STOPPING = "STOPPING"
    EXITING = "EXITING"

    def __repr__(self) -> str:
        return f"states.{self.name}"

    __str__ = __repr__


#: The wspbus name for the state namespace: ``states.STARTED``.
states = State

TRANSITIONS: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING, State.STOPPING, State.EXITING}),
    State.STARTING: frozenset({State.STARTED, State.STOPPING}),
    State.STARTED: frozenset({State.STARTING, State.STOPPING}),
    State.STOPPING: frozenset({State.STOPPED}),
    State.EXITING: frozenset(),
}
