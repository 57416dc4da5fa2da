"""Give up root once the privileged work of starting is done.

Start at priority 77: after the listeners at the default 50 (which bind the
low ports root is needed for), before the ones that should not run as root.
A process that starts others (the busd command: its fork server and
workers) must drop before it starts any: :func:`drop_ids` and
:func:`environment_for` do it at once, without a bus.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import MutableMapping

from busd.core.bus import Bus
from busd.core.errors import BusError
from busd.plugins.base import SimplePlugin

__all__ = ["DropPrivileges", "UnknownAccount", "drop_ids", "environment_for", "target_gid"]


class UnknownAccount(BusError, ValueError):
    """A user or group name that this system does not know."""


class DropPrivileges(SimplePlugin):
    """Switch to ``uid``/``gid`` (names or numbers) and set ``umask`` on start.

    Supplementary groups are cleared before the switch, so none of root's
    stay.  With a ``uid`` and no ``gid``, the gid becomes that user's primary
    group rather than staying root's.  Not running as root, the uid and gid
    are left alone (and that is logged); the umask still applies.
    Unknown names raise :class:`UnknownAccount` when set.
    """

    def __init__(
        self,
        bus: Bus,
        umask: int | None = None,
        uid: int | str | None = None,
        gid: int | str | None = None,
    ) -> None:
        super().__init__(bus)
        self.finalized = False
        self._uid = resolve_uid(uid)
        self._gid = resolve_gid(gid)
        self.umask = umask

    @property
    def uid(self) -> int | None:
        """The uid to run as (set it with a name or a number)."""
        return self._uid

    @uid.setter
    def uid(self, value: int | str | None) -> None:
        self._uid = resolve_uid(value)

    @property
    def gid(self) -> int | None:
        """The gid to run as (set it with a name or a number)."""
        return self._gid

    @gid.setter
    def gid(self, value: int | str | None) -> None:
        self._gid = resolve_gid(value)

    def start(self) -> None:
        """Drop to the uid and gid, then set the umask; once only."""
        if self.finalized:
            self.bus.log("Already running as uid: {!r} gid: {!r}".format(*current_ids()))
            return
        self._drop_ids()
        self._apply_umask()
        self.finalized = True

    start.priority = 77  # type: ignore[attr-defined]

    def _drop_ids(self) -> None:
        if self.uid is None and self.gid is None:
            self.bus.log("uid/gid not set", level=30)
            return
        euid = os.geteuid()
        if euid != 0:
            self.bus.log(f"Not running as root (euid {euid}): uid/gid left unchanged.", level=30)
            return
        self.bus.log("Started as uid: {!r} gid: {!r}".format(*current_ids()))
        drop_ids(self.uid, self.gid)
        self.bus.log("Running as uid: {!r} gid: {!r}".format(*current_ids()))

    def _apply_umask(self) -> None:
        if self.umask is None:
            self.bus.log("umask not set", level=30)
            return
        old = os.umask(self.umask)
        self.bus.log(f"umask old: {old:03o}, new: {self.umask:03o}")


def target_gid(uid: int | None, gid: int | None) -> int | None:
    """The gid to switch to: ``gid``, else ``uid``'s primary group (never root's by default)."""
    return _primary_gid(uid) if gid is None and uid is not None else gid


def drop_ids(uid: int | None, gid: int | None) -> None:
    """As root: no supplementary groups, then ``gid`` (default: ``uid``'s group), then ``uid``.

    In that order: after setuid nothing else is allowed.  The real, effective
    and saved ids all change, so nothing can take root back.
    """
    gid = target_gid(uid, gid)
    os.setgroups([])
    if gid is not None:
        os.setgid(gid)
    if uid is not None:
        os.setuid(uid)


def environment_for(uid: int, environ: MutableMapping[str, str]) -> None:
    """Make ``environ`` user ``uid``'s: its ``HOME``, ``USER`` and ``LOGNAME``, and no
    ``XDG_RUNTIME_DIR`` unless that dir is ``uid``'s (root's would be unusable)."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        entry = None
    if entry is not None:
        environ.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name)
    xdg = environ.get("XDG_RUNTIME_DIR")
    if xdg:
        try:
            owner: int | None = os.stat(xdg).st_uid
        except OSError:
            owner = None
        if owner != uid:
            del environ["XDG_RUNTIME_DIR"]


def resolve_uid(value: int | str | None) -> int | None:
    """A uid from a user name or number; :class:`UnknownAccount` if unknown."""
    if value is None or isinstance(value, int):
        return value
    if value.isdigit():
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        raise UnknownAccount(f"DropPrivileges: no user named {value!r} on this system") from None


def resolve_gid(value: int | str | None) -> int | None:
    """A gid from a group name or number; :class:`UnknownAccount` if unknown."""
    if value is None or isinstance(value, int):
        return value
    if value.isdigit():
        return int(value)
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise UnknownAccount(f"DropPrivileges: no group named {value!r} on this system") from None


def current_ids() -> tuple[str | int, str | int]:
    """The current user and group, by name where the system has one."""
    uid, gid = os.getuid(), os.getgid()
    try:
        user: str | int = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = uid
    try:
        group: str | int = grp.getgrgid(gid).gr_name
    except KeyError:
        group = gid
    return user, group


def _primary_gid(uid: int) -> int | None:
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return None
