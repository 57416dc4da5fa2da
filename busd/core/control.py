"""The control client: requests to a master over DEALER, replies matched by id.

Part of the core shared by both sides: the master (asking whether another
master already answers), the client's I/O thread (which uses the framing
helpers) and ``busctl`` (which uses :class:`Control` directly).  Never REQ:
a lost reply must not wedge the client; every request has one deadline.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any

import zmq

from busd.core.endpoints import CTL_HWM, configure
from busd.core.errors import NoMaster, ProtocolError
from busd.core.wire import Kind, Message, decode, encode, error_from_wire

if TYPE_CHECKING:
    from busd.core.auth import ClientKeys, HandshakeWatch

DEFAULT_TIMEOUT = 5.0
_REPLY = frozenset({Kind.REPLY})


def request_frame(req_id: int, cmd: str, args: dict[str, Any]) -> bytes:
    """Encode a REQUEST for command ``cmd``."""
    return encode(Kind.REQUEST, req_id, {"cmd": cmd, **args})


def reply_result(msg: Message) -> Any:
    """The result of a REPLY, or raise the error it carries, rebuilt."""
    _req_id, ok, payload = msg.items
    if ok is True:
        return payload
    raise error_from_wire(payload)


class Control:
    """A synchronous control connection to one master (for busctl and tools).

    With ``curve`` keys a tcp connection is a CURVE client; over tcp the
    handshake is watched, so a refused key raises :class:`KeyRefused` at once.
    """

    def __init__(
        self,
        endpoint: str,
        timeout: float = DEFAULT_TIMEOUT,
        context: zmq.Context[Any] | None = None,
        curve: ClientKeys | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._own_context = context is None
        self._ctx = context or zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._ids = itertools.count(1)
        self._watch: HandshakeWatch | None = None
        try:
            configure(self._sock, CTL_HWM)
            if endpoint.startswith("tcp://"):  # CURVE and its handshake: loaded only for tcp
                from busd.core.auth import secure_client, watch_handshakes

                secure_client(self._sock, curve, endpoint)
                self._watch = watch_handshakes(self._sock, endpoint, curve)
            self._sock.connect(endpoint)
        except BaseException:
            self.close()
            raise

    @property
    def context(self) -> zmq.Context[Any]:
        """The ZeroMQ context this connection's socket belongs to."""
        return self._ctx

    def request(self, cmd: str, timeout: float | None = None, **args: Any) -> Any:
        """Send ``cmd`` with ``args`` and return its result.

        ``timeout`` is how long to wait for the answer (NoMaster past it); a
        command's own ``timeout`` argument (an ack wait) goes through :meth:`call`.
        """
        return self.call(cmd, args, self.timeout if timeout is None else timeout)

    def call(self, cmd: str, body: dict[str, Any], deadline: float) -> Any:
        """Send ``cmd`` with ``body``; its result, or NoMaster past ``deadline`` seconds."""
        req_id = next(self._ids)
        self._sock.send(request_frame(req_id, cmd, body))
        until = time.monotonic() + deadline
        while True:
            remaining = until - time.monotonic()
            if remaining <= 0 or not self._wait_readable(remaining):
                raise NoMaster(f"no busd answered at {self.endpoint} within {deadline:g}s")
            try:
                msg = decode(self._sock.recv(zmq.NOBLOCK), allowed=_REPLY)
            except ProtocolError:
                continue
            if msg.req_id == req_id:
                return reply_result(msg)
            if msg.req_id == 0:
                # An unsolicited error about an earlier message of ours.
                reply_result(msg)

    def _wait_readable(self, timeout: float) -> bool:
        """Wait for a reply; over tcp, raise KeyRefused if the handshake fails meanwhile."""
        if self._watch is None:
            return bool(self._sock.poll(int(timeout * 1000) + 1, zmq.POLLIN))
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._watch.socket, zmq.POLLIN)
        until = time.monotonic() + timeout
        while (remaining := until - time.monotonic()) > 0:
            ready = dict(poller.poll(int(remaining * 1000) + 1))
            if self._watch.socket in ready:
                self._watch.check()
            if self._sock in ready:
                return True
        return False

    def close(self) -> None:
        """Close the socket (linger 0) and the context if it is ours."""
        if self._watch is not None:
            self._watch.close()
        self._sock.close(linger=0)
        if self._own_context and not self._ctx.closed:
            self._ctx.term()

    def __enter__(self) -> Control:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
