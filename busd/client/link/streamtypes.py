"""What goes into a client's :class:`~busd.client.link.stream.Stream` and what comes out.

::

    link thread --frames, ReplayAnswer, snapshots--> Stream --[Action, ...]--> link thread

Every value is a frozen dataclass: an action is performed by the link thread
in the order the stream returned it; an answer is what the link made of a
reply from the master's replay window.  The frames themselves are
:mod:`busd.core.views` (``StateMsg``, ``PublishMsg``, ...).  The stream's
own states (:class:`StreamState`) and its repair in flight (:class:`Repair`)
are here too; the machine that moves them is ``busd.client.link.stream``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from busd.core.views import Broadcast


class StreamState(enum.Enum):
    """Where a client's stream stands with its master (see the stream module's diagram)."""

    IDLE = "idle"  # no HELLO out and never welcomed
    JOINING = "joining"  # the first HELLO is out; frames are buffered
    LIVE = "live"  # joined, delivering in order
    REPAIRING = "repairing"  # joined, a replay ask is out; newer frames are held
    REJOINING = "rejoining"  # welcomed before, a HELLO is out again; frames are buffered
    LOST = "lost"  # the link counted its master lost; no HELLO is out


class BadTransition(RuntimeError):
    """The stream was asked to move where its table does not allow (a bug)."""


@dataclass
class Repair:
    """The range still to come from the replay window, and the ask in flight for it."""

    next: int
    last: int
    asked: float = 0.0
    #: The request id of the last ask: a reply to an older one (asked again after
    #: REPAIR_RETRY, say) is stale and ignored.
    req_id: int = 0


# -- what the stream asks of the link (actions) -------------------------------------


@dataclass(frozen=True)
class Deliver:
    """Hand these messages (STATE, PUBLISH and EVENT views) on, in order."""

    items: list[Broadcast]


@dataclass(frozen=True)
class Synced:
    """The state to mirror (None: keep it) after a join or a loss of ``missed`` messages.

    The link hands it to the dispatcher as it is, after what came before it.
    """

    epoch: int
    seq: int
    state: str | None
    missed: int


@dataclass(frozen=True)
class AskReplay:
    """Send ``REQUEST {cmd: replay, epoch, from: first, to: last}`` with ``req_id``."""

    epoch: int
    first: int
    last: int
    req_id: int


@dataclass(frozen=True)
class AskStateCheck:
    """Send ``REQUEST {cmd: snapshot}`` (the state check after a loss)."""


@dataclass(frozen=True)
class CountLost:
    """``count`` messages before ``next_seq`` are gone for good (older than the window)."""

    count: int
    next_seq: int


@dataclass(frozen=True)
class SendHello:
    """Say HELLO (``subscribe``: the SUB's join topic must be seen again)."""

    subscribe: bool


@dataclass(frozen=True)
class Heartbeat:
    """A heartbeat of the followed epoch arrived: answer it if a PONG is due."""


@dataclass(frozen=True)
class Closing:
    """The master closes on purpose and every message up to ``seq`` arrived."""

    seq: int


Action = Deliver | Synced | AskReplay | AskStateCheck | CountLost | SendHello | Heartbeat | Closing


# -- what the link hands the stream, besides frames ---------------------------------


@dataclass(frozen=True)
class ReplayPart:
    """A replay answer: ``frames`` (decoded) numbered from ``first``; ``lost`` before it."""

    first: int
    frames: Sequence[Broadcast]
    lost: int
    more: bool


@dataclass(frozen=True)
class ReplayBusy:
    """The master still holds an earlier answer to this client: ask again shortly."""


@dataclass(frozen=True)
class ReplayFailed:
    """The master could not replay (an error reply, another epoch): the range is gone."""


ReplayAnswer = ReplayPart | ReplayBusy | ReplayFailed


#: Messages buffered while a HELLO is unanswered; past this, the oldest go.
JOIN_BUFFER = 1_000_000
#: A repair request unanswered this long is sent again.
REPAIR_RETRY = 5.0
#: A repair the master answered ``busy`` (an earlier answer still on its way) is asked
#: again after this long.
BUSY_RETRY = 0.05


_S = StreamState
#: The allowed moves; ``Stream._enter`` refuses any other.
TRANSITIONS: dict[StreamState, frozenset[StreamState]] = {
    _S.IDLE: frozenset({_S.JOINING, _S.LIVE, _S.LOST}),
    _S.JOINING: frozenset({_S.LIVE, _S.REPAIRING, _S.IDLE, _S.LOST}),
    _S.LIVE: frozenset({_S.REPAIRING, _S.REJOINING, _S.LOST}),
    _S.REPAIRING: frozenset({_S.LIVE, _S.REJOINING, _S.LOST}),
    _S.REJOINING: frozenset({_S.LIVE, _S.REPAIRING, _S.LOST}),
    _S.LOST: frozenset({_S.LIVE, _S.REPAIRING, _S.JOINING, _S.REJOINING}),
}
