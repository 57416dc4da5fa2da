"""The master's CURVE side: its key pair, the keys it lets in, and the ZAP handler.

See :mod:`busd.core.auth` for the picture.  Its own module because
:mod:`zmq.auth` loads asyncio: only a master given ``--curve-secret``
imports it.  The ZAP thread and its socket are pyzmq's; the KeyRing and the
refusal log are used by that thread only once it runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from busd.core.auth import (
    ZAP_DOMAIN,
    KeyDirStamp,
    KeyFileError,
    RefusalLog,
    Role,
    key_dir_stamp,
    load_key_dir,
    load_secret,
)
from busd.core.stats import Stats

log = logging.getLogger(__name__)


class KeyRing:
    """The keys allowed in, by role; re-read when a key file changes (rotation without restart).

    Every handshake compares each dir's ``*.key`` files, names and content,
    with what was loaded (a few small reads): a key added, removed or
    replaced in place counts at once.  A dir or file another user owns or
    may write is refused: at start, busd does not start; later, the keys
    loaded before are kept and the problem is logged once.
    """

    def __init__(self, authorized: Path, readonly: Path | None = None) -> None:
        self.dirs = {Role.FULL: authorized, **({Role.READ_ONLY: readonly} if readonly else {})}
        self._keys: dict[Role, frozenset[bytes]] = {}
        self._stamps: dict[Role, KeyDirStamp] = {}
        self._problems: dict[Role, str] = {}
        for role in self.dirs:
            self._reload(role, strict=True)

    def _reload(self, role: Role, strict: bool) -> None:
        directory = self.dirs[role]
        try:
            stamp = key_dir_stamp(directory)
            if self._stamps.get(role) == stamp:
                return
            self._keys[role] = load_key_dir(directory, stamp)
            self._stamps[role] = stamp
            self._problems.pop(role, None)
        except (OSError, KeyFileError) as exc:
            if strict:
                raise KeyFileError(str(exc)) from exc
            if self._problems.get(role) != str(exc):
                self._problems[role] = str(exc)
                log.error("keeping the keys loaded before: %s", exc)

    def role(self, key: bytes) -> Role | None:
        """The role of z85 public ``key``; a full key wins over a read-only one."""
        for role in self.dirs:
            self._reload(role, strict=False)
        for role in (Role.FULL, Role.READ_ONLY):
            if key in self._keys.get(role, ()):
                return role
        return None

    def counts(self) -> dict[str, int]:
        """How many keys each role has."""
        return {role.name.lower(): len(keys) for role, keys in self._keys.items()}


class Authenticator(ThreadAuthenticator):
    """ZAP for the ``busd`` domain: a key in the ring gets in; its role is in the User-Id."""

    def __init__(self, context: zmq.Context[Any], ring: KeyRing) -> None:
        super().__init__(context, log=logging.getLogger("busd.security.zap"))
        self.ring = ring
        self.denied = RefusalLog("refused the CURVE key")

    def callback(self, domain: str, key: bytes) -> bool:
        """Credentials provider for ``configure_curve_callback``: is ``key`` known?"""
        if self.ring.role(key) is not None:
            return True
        self.denied.refused(key.decode("ascii", "replace"), "not in the authorized keys")
        return False

    def curve_user_id(self, client_public_key: bytes) -> str:
        """``rw:<z85>`` or ``ro:<z85>``: the hub reads the role from there."""
        key = z85.encode(client_public_key)
        role = self.ring.role(key) or Role.READ_ONLY
        return f"{role.value}:{key.decode('ascii')}"


@dataclass(frozen=True, eq=False)
class CurveStats(Stats):
    """The keys a master lets in, and the handshakes it refused."""

    #: Authorised keys per role (``{"full": 2, "readonly": 1}``); not named
    #: ``keys``, which would hide the mapping's ``keys()``.
    keys_per_role: dict[str, int]
    #: CURVE handshakes refused so far, and how many of those went unlogged.
    refused: int
    refusals_not_logged: int


class CurveServer:
    """A master's own key pair and the keys it lets in; the ZAP thread once started."""

    def __init__(
        self, secret_file: str | Path, authorized: str | Path, readonly: str | Path | None = None
    ) -> None:
        self.keys = load_secret(secret_file)
        self.ring = KeyRing(Path(authorized), Path(readonly) if readonly else None)
        self._auth: Any = None

    def start(self, context: zmq.Context[Any]) -> None:
        """Start the ZAP handler on ``context`` (the one the master's sockets belong to)."""
        auth = Authenticator(context, self.ring)
        auth.start()
        auth.configure_curve_callback(ZAP_DOMAIN.decode(), credentials_provider=auth)
        self._auth = auth

    def secure(self, sock: zmq.Socket[Any]) -> None:
        """Make the next bind of ``sock`` a CURVE server endpoint."""
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.keys.secret)
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)

    @staticmethod
    def plain(sock: zmq.Socket[Any]) -> None:
        """Make the next bind of ``sock`` plain again (options are copied at bind time).

        The ZAP domain stays (libzmq refuses an empty one): a later plain bind
        asks ZAP too, which lets NULL peers in as ``anonymous`` (full role).
        """
        sock.setsockopt(zmq.CURVE_SERVER, 0)

    def stop(self) -> None:
        """Stop the ZAP thread (before the context is terminated)."""
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def statistics(self) -> CurveStats:
        """Keys per role and the refused handshakes."""
        return CurveStats(
            keys_per_role=self.ring.counts(),
            refused=self._auth.denied.total if self._auth else 0,
            refusals_not_logged=self._auth.denied.suppressed if self._auth else 0,
        )
