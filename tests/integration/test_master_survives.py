"""No input ends a thread of the master: a client event that fails is logged and counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from busd import client
from busd.client.control import Control
from busd.endpoints import default_endpoints


def test_a_failing_client_event_leaves_the_command_thread_serving(busd_dir: Path,
                                                                  busd_master: Any) -> None:
    master = busd_master()
    master.start()
    seen: list[str] = []

    def broken(event: str, info: dict[str, Any]) -> None:
        seen.append(event)
        raise RuntimeError(f"a hook that fails on {event}")

    master.client_hooks.append(broken)
    bus = client.connect(runtime_dir=busd_dir, timeout=10)
    try:
        with Control(default_endpoints(busd_dir).ctl, timeout=5) as ctl:
            report = ctl.request("graceful", timeout=5, wait=True)
            assert report["state"] == "STARTED"
            assert [a["client"] for a in report["acks"]["acks"]] == [bus.link.client_id]
            assert ctl.request("status", timeout=5)["state"] == "STARTED"
    finally:
        bus.leave("done")
    assert seen[0] == "client_joined"
    assert master.statistics()["failed_events"] >= 1
