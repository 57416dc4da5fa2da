"""``busd --join``: a local pool that follows a master on another host.

::

    remote master --tcp+CURVE--> [ HostBus: a ClientBus, role "host" ]
      (its XPUB, ROUTER)           dispatcher thread, in order:
                                     STATE start / stop / exit -> local.start / stop / exit (wait)
                                     PUBLISH graceful (ack)    -> local.graceful(wait)
                                       (or busd.host_graceful, from a master that
                                        respawns its own workers on graceful)
                                     PUBLISH channel [ack]     -> local.publish / broadcast_and_wait
                                     master lost               -> exit (default), or stop and
                                                                  wait (--wait-for-master)
                                     the same master again     -> mirror its state (the link
                                                                  repaired what it missed)
      ^ REQUEST host_report        [ busd-host-report thread ] reads the local pool's workers
      |                                                        every REPORT_INTERVAL, sends changes
    local MasterBus (ipc) --> local workers (the pool)

The joined busd is one client of the remote master; its own workers are
clients of its local master, which relays to them whatever the remote
master relays, and acks to the remote master only once they all acked (so
``graceful --wait`` on the master waits for every worker on every host).
The local master never starts by itself: the remote state drives it.

A partition heals.  Both sides count the other lost after the master's
heartbeat x liveness of silence (from its welcome).  Waiting for the master,
the link joins again as soon as it hears it (same epoch, or a new one); what
was relayed meanwhile comes from the replay window, and what the window no
longer held is counted.  Without waiting, the joined busd exits; it leaves
in its runtime dir the last (epoch, seq) it delivered (``joined.resume``), and
the next busd joined there to the same master counts what it relayed in
between, exactly: seq S+1 .. T of one epoch, never delivered on this host.
Either count goes to this busd's log and, added up over every busd joined
here (the file carries it), to the master in every report (``missed``,
shown per host by ``busctl status --json``).

This module uses both sides (a master and a client), like the pytest
plugin: it is loaded only by ``busd --join``.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from pathlib import Path
from typing import Any

from busd.client.bus import ClientBus
from busd.client.inbox import InboxItem
from busd.client.link.liveness import FOLLOW_HEARTBEAT
from busd.client.link.messages import Gone
from busd.client.link.streamtypes import Synced
from busd.core.auth import ClientKeys
from busd.core.control import Control
from busd.core.endpoints import Endpoints, pub_beside
from busd.core.errors import BusError, ChannelFailures
from busd.core.views import PublishMsg
from busd.master.bus import MasterBus
from busd.master.hosts import HOST_GRACEFUL, HOST_ROLE
from busd.pool.pools import Pools

log = logging.getLogger(__name__)

#: How often the joined busd looks at its workers and reports a change.
REPORT_INTERVAL = 0.5
#: A report is sent at least every this many intervals, changed or not.
REPORT_EVERY = 20
#: In the local runtime dir: where an exiting joined busd had got to.
RESUME_FILE = "joined.resume"


class HostBus(ClientBus):
    """The joined busd's mirror of the remote master, driving the local master."""

    def __init__(
        self,
        endpoints: Endpoints,
        local: MasterBus,
        pool: Pools,
        *,
        curve: ClientKeys | None,
        wait_for_master: bool,
        timeout: float,
        ack_timeout: float,
    ) -> None:
        self.host = f"{socket.gethostname()}/{local.name}"
        super().__init__(
            endpoints,
            name=self.host,
            role=HOST_ROLE,
            timeout=timeout,
            on_master_lost="wait" if wait_for_master else "exit",
            curve=curve,
            master_timeout=FOLLOW_HEARTBEAT,
        )
        self.local = local
        self.local_pool = pool
        self.ack_timeout = ack_timeout
        self.master_endpoint = endpoints.ctl
        self._resume_file = Path(local.runtime_dir) / RESUME_FILE
        #: Where a busd joined here before exited: (epoch, seq, missed), read once.
        self._resume = _read_resume(self._resume_file, self.master_endpoint)
        #: What earlier joined busds here missed, and what was relayed while none was
        #: here (written by the dispatcher only).
        self.missed_before = self._resume[2] if self._resume else 0
        self.subscribe("start", lambda: self.local.start(wait=True, timeout=ack_timeout))
        self.subscribe("stop", lambda: self.local.stop(wait=True, timeout=ack_timeout))
        self.subscribe("exit", self.local.exit)
        self._stopping = threading.Event()
        self._reporter = threading.Thread(
            target=self._report_loop, name="busd-host-report", daemon=True
        )

    def log(self, msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        """As any bus, but this bus's own ``Bus STATE`` lines only at DEBUG.

        It mirrors the remote master, and drives the local master through the
        same states, which logs each one: said once is enough.
        """
        if level == logging.INFO and msg.startswith("Bus ") and not traceback:
            level = logging.DEBUG
        super().log(msg, level, traceback)

    # -- the dispatcher thread ----------------------------------------------------

    def _apply(self, item: InboxItem) -> None:
        if type(item) is Gone and self.on_master_lost == "wait":
            log.warning(
                "master lost (%s): stopping the local pool until it is back "
                "(delivered here up to seq %d of epoch %d)",
                item.reason,
                item.seq,
                item.epoch,
            )
            self._run(self._do_stop)
            return
        if type(item) is Gone:
            log.warning(
                "master lost (%s): exiting (delivered here up to seq %d of epoch %d)",
                item.reason,
                item.seq,
                item.epoch,
            )
            _write_resume(
                self._resume_file,
                {
                    "master": self.master_endpoint,
                    "epoch": item.epoch,
                    "seq": item.seq,
                    "missed": self.missed(),
                },
            )
        elif type(item) is Synced and self._resume is not None:
            self._count_resumed(item)
        super()._apply(item)

    def _count_resumed(self, synced: Synced) -> None:
        """The first snapshot after a busd here exited: count what was relayed in between."""
        epoch, seq, _ = self._resume or (0, 0, 0)
        self._resume = None
        if epoch != synced.epoch:
            log.info(
                "the master restarted since a busd here last followed it (epoch %d, "
                "now %d): nothing of its earlier incarnation is counted",
                epoch,
                synced.epoch,
            )
            return
        self.missed_before += max(0, synced.seq - seq)
        log.warning(
            "%d message(s) relayed by the master while this host was away "
            "(seq %d..%d of epoch %d) were not delivered here: lost",
            synced.seq - seq,
            seq + 1,
            synced.seq,
            epoch,
        )

    def _apply_publish(self, msg: PublishMsg) -> None:
        seq, channel, args, kwargs, ack = msg.seq, msg.channel, msg.args, msg.kwargs, msg.ack
        if channel in ("graceful", HOST_GRACEFUL):
            self._ack(seq, self._run(self._graceful_here))
        elif ack:
            self._ack(
                seq,
                self._run(
                    lambda: _checked(
                        self.local.broadcast_and_wait(
                            channel, args, kwargs, timeout=self.ack_timeout
                        )
                    )
                ),
            )
        else:
            try:
                self.local.publish(channel, *args, **kwargs)
            except ChannelFailures as exc:
                log.warning("listeners of %r failed here: %s", channel, exc)

    def _graceful_here(self) -> Any:
        self._do_graceful()  # this bus's own graceful listeners, if any
        return _checked(self.local.graceful(wait=True, timeout=self.ack_timeout))

    # -- reports --------------------------------------------------------------------

    def start_reports(self) -> None:
        """Start telling the remote master about the local workers."""
        self._reporter.start()

    def _report_loop(self) -> None:
        sent: tuple[int, list[dict[str, Any]], int] | None = None
        rounds = 0
        wait = 0.0  # the first report at once, then one look every interval
        while not self._stopping.wait(wait):
            wait = REPORT_INTERVAL
            if not self.link.joined.is_set() or self.link.lost.is_set():
                continue
            rounds += 1
            try:
                rows = [
                    {"id": w.get("id"), "pid": w.get("pid"), "state": w.get("state")}
                    for w in self.local_pool.workers()
                ]
            except Exception:
                log.exception("cannot read the local workers")
                continue
            current = (self.link.client_id, rows, self.missed())
            if current == sent and rounds % REPORT_EVERY:
                continue
            sent = current
            self.link.request(
                "host_report", host=self.host, client_id=current[0], workers=rows, missed=current[2]
            ).add_done_callback(_report_failed)

    def missed(self) -> int:
        """Messages relayed by the master that this host never delivered, counted exactly.

        Those older than the replay window when the link came back, and those
        relayed while an earlier joined busd here was away (it had exited).
        """
        return int(self.link.stats["missed"]) + self.missed_before

    def depart(self, reason: str) -> None:
        """Stop reporting, say BYE to the remote master, close the link."""
        self._stopping.set()
        if self._reporter.is_alive():
            self._reporter.join(REPORT_INTERVAL + 2.0)
        self._say_bye(reason)
        self.close()


def _read_resume(path: Path, master: str) -> tuple[int, int, int] | None:
    """(epoch, seq, missed) left by a busd that followed ``master`` here and exited.

    The file is removed: it is read once.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc)
        return None
    path.unlink(missing_ok=True)
    try:
        doc = json.loads(text)
        numbers = (doc["epoch"], doc["seq"], doc["missed"])
        if doc["master"] == master and all(type(n) is int and n >= 0 for n in numbers):
            return numbers
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring %s: not what a joined busd writes", path)
    return None


def _write_resume(path: Path, doc: dict[str, Any]) -> None:
    try:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(path)
    except OSError as exc:
        log.warning("cannot write %s (what this host misses is not counted): %s", path, exc)


def _checked(report: Any) -> Any:
    """An ack report as the remote master's ack result; local failures become its error."""
    if report is None:
        return None
    if not report.ok:
        raise BusError("; ".join(report.failures()) or "a local worker failed")
    return report.as_dict()


def _report_failed(future: Any) -> None:
    exc = future.exception()
    if exc is not None:
        log.warning("the master did not take this host's report: %s", exc)


def find_endpoints(ctl: str, curve: ClientKeys | None, timeout: float) -> Endpoints:
    """The master's PUB endpoint beside ``ctl``, from its status (the next port if unsure).

    The master names the addresses it bound (``0.0.0.0`` perhaps): the host
    part comes from ``ctl``, the port from the master.
    """
    with Control(ctl, timeout, curve=curve) as control:
        status = control.request("status")
    endpoints = status.get("endpoints", {}) if isinstance(status, dict) else {}
    ctls, pubs = endpoints.get("ctl") or [], endpoints.get("pub") or []
    port = ctl.rpartition(":")[2]
    for bound, pub in zip(ctls, pubs, strict=False):
        if str(bound).startswith("tcp://") and str(bound).rpartition(":")[2] == port:
            return Endpoints(pub=f"{ctl.rpartition(':')[0]}:{str(pub).rpartition(':')[2]}", ctl=ctl)
    return pub_beside(ctl)


def join_master(
    local: MasterBus,
    pool: Pools,
    endpoint: str,
    *,
    curve: ClientKeys | None,
    wait_for_master: bool,
    timeout: float,
    ack_timeout: float,
) -> HostBus:
    """Join the master at ``endpoint``; from then on its state drives ``local``.

    Raises NoMaster (or KeyRefused) when it does not answer within ``timeout``.
    """
    host = HostBus(
        find_endpoints(endpoint, curve, timeout),
        local,
        pool,
        curve=curve,
        wait_for_master=wait_for_master,
        timeout=timeout,
        ack_timeout=ack_timeout,
    )
    host.connect(mirror=True, timeout=timeout)
    host.start_reports()
    log.info("joined the master at %s as %s", endpoint, host.host)
    return host
