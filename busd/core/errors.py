"""The exceptions busd raises, shared by the master and the client side.

One root, :class:`BusError`; every other class names one way things fail.
Errors that cross the wire travel as ``{code, message, details}`` and are
rebuilt into the same class on the other side (see :mod:`busd.core.wire`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable


class BusError(Exception):
    """The root of every error busd raises on purpose."""


class ChannelFailures(BusError):
    """One or more listeners of a channel raised; all of them still ran.

    Compatible with CherryPy's ``wspbus.ChannelFailures``: ``get_instances()``
    returns the exceptions, the object is truthy when it holds any, and its
    ``str`` is one ``repr`` per line.
    """

    delimiter = "\n"

    def __init__(
        self, *args: object, channel: str | None = None, exceptions: Iterable[BaseException] = ()
    ) -> None:
        super().__init__(*args)
        self.channel = channel
        self._exceptions: list[BaseException] = list(exceptions)

    def handle_exception(self) -> None:
        """Append the exception being handled (wspbus API)."""
        exc = sys.exc_info()[1]
        if exc is not None:
            self._exceptions.append(exc)

    def get_instances(self) -> list[BaseException]:
        """Return a copy of the collected exceptions."""
        return self._exceptions[:]

    def __str__(self) -> str:
        return self.delimiter.join(repr(e) for e in self._exceptions)

    __repr__ = __str__

    def __bool__(self) -> bool:
        return bool(self._exceptions)


class IllegalTransition(BusError, RuntimeError):
    """A lifecycle method was called in a state that does not allow it."""


class WaitTimeout(BusError, TimeoutError):
    """A bounded wait ran out before its condition held."""


class ProtocolError(BusError):
    """A message broke the wire protocol (malformed, oversized, unknown, wrong version)."""


class RemoteError(BusError):
    """The other side answered a request with an error it could not map to a class."""


class NoMaster(BusError, TimeoutError):
    """No master answered within the timeout."""


class Forbidden(BusError):
    """The master refused a request that this client's key is not allowed to make."""


class Busy(BusError):
    """The master is at a resource bound (open files, unread replies): try again later."""


class KeyRefused(NoMaster):
    """The master refused this client's CURVE handshake (its key, or no key)."""


class AlreadyRunning(BusError):
    """Another master answers on the endpoints this one was asked to bind."""


class MasterLost(BusError):
    """The master stopped answering, or a new master incarnation replaced it."""
