"""The ``metrics`` command, and ``--metrics HOST:PORT``'s endpoint, added to a master.

prometheus_client (``busd[metrics]``) is imported only once metrics are
asked for: ``--metrics`` at start, or the first ``busctl metrics``.  Without
it, ``busctl metrics`` is answered with one line saying what to install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from busd.core.wire import ErrorCode, wire_error
from busd.master.bus import MasterBus
from busd.metrics.errors import MetricsError

if TYPE_CHECKING:
    from busd.metrics.http import MetricsEndpoint
    from busd.metrics.owner import MetricsOwner

NEEDS = "metrics need prometheus_client in busd's environment: pip install 'busd[metrics]'"


def available() -> bool:
    """Whether prometheus_client can be imported here (it is, then)."""
    try:
        importlib.import_module("prometheus_client")
    except ImportError:
        return False
    return True


class Metrics:
    """The metrics thread (made at the first need) and the HTTP endpoint (``address``)."""

    def __init__(self, master: MasterBus, address: str | None = None) -> None:
        self.master = master
        self.owner: MetricsOwner | None = None
        self.endpoint: MetricsEndpoint | None = None
        master.add_command("metrics", self.command, readonly=True)
        if address:
            from busd.metrics.http import MetricsEndpoint

            self.endpoint = MetricsEndpoint(self._owner(), address)

    def _owner(self) -> MetricsOwner:
        if self.owner is None:
            from busd.metrics.owner import MetricsOwner

            self.owner = MetricsOwner(self.master)
        return self.owner

    def command(self, body: dict[str, Any]) -> dict[str, Any]:
        """``busctl metrics``: the text a scraper would get, and the families as data."""
        if not available():
            raise wire_error(ErrorCode.BAD_ARGUMENTS, NEEDS)
        text, _, families = self._owner().scrape()
        return {"text": text.decode(), "families": families}

    def close(self) -> None:
        """The endpoint, then the thread."""
        endpoint, self.endpoint = self.endpoint, None
        if endpoint is not None:
            endpoint.close()
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.close()


__all__ = ["NEEDS", "Metrics", "MetricsError", "available"]
