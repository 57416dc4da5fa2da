"""busd ships its client side as ``busd.client``: an application's own ``client`` is its own.

A top-level package named ``client`` would clash with a module that very
many applications have; these run a real pool whose application brings a
``client.py`` of its own on the path.
"""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path

from busd.testing import PoolFactory

APP = """
import json, os
import client  # the application's own module, beside this one

def main(bus):
    with open(os.environ["APP_REPORT"] + f".{os.getpid()}", "w") as out:
        json.dump({"value": client.VALUE, "file": client.__file__}, out)
"""


def test_busd_installs_no_top_level_client_package() -> None:
    assert importlib.util.find_spec("busd.client") is not None
    assert importlib.util.find_spec("client") is None


def test_a_pool_whose_app_has_its_own_client_module(busd_pool: PoolFactory, tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "client.py").write_text('VALUE = "the application\'s own"\n')
    (app / "myapp.py").write_text(textwrap.dedent(APP))
    report = tmp_path / "report"

    pool = busd_pool(
        "myapp:main",
        workers=2,
        env={"PYTHONPATH": f"{app}:{busd_pool.test.env['PYTHONPATH']}", "APP_REPORT": str(report)},
    )

    seen = [json.loads(p.read_text()) for p in tmp_path.glob("report.*")]
    assert len(seen) == 2, pool.log.text
    assert {s["value"] for s in seen} == {"the application's own"}
    assert {s["file"] for s in seen} == {str(app / "client.py")}
    assert all(w["state"] == "STARTED" for w in pool.workers)
    assert pool.graceful(wait=True)["state"] == "STARTED"
