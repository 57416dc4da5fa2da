"""One process of ``busd_run`` (busd.testing): ``python -m busd.client.testing.harness SPEC``.

SPEC is a msgpack file the test wrote: the function (module, qualified
name, and where its module lives), this process's index, the run's size
and id, the arguments, and where to write the outcome.  The process:

1. connects a :class:`RunBus` to the master and says ``busd.run.ready``;
2. waits for ``busd.run.go`` (the test sends it once every process is
   connected, so a barrier message reaches all of them);
3. calls ``func(bus, index, *args, **kwargs)`` and writes
   ``{"ok": true, "value": ...}`` or ``{"ok": false, "error": traceback}``
   to the result file; exits 0 or 1.
"""

from __future__ import annotations

import faulthandler
import importlib
import importlib.util
import logging
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

import msgpack

from busd.client.bus import ClientBus
from busd.client.testing.barrier import Barrier
from busd.core.endpoints import Endpoints

READY, GO = "busd.run.ready", "busd.run.go"


class RunBus(ClientBus):
    """The bus a ``busd_run`` process gets: a ClientBus with :meth:`barrier`."""

    index: int
    size: int

    def setup_run(self, index: int, size: int) -> None:
        """Know this process's place; listen for barrier arrivals."""
        self.index, self.size = index, size
        self._barrier = Barrier(self, member=str(index))

    def barrier(self, name: str, parties: int | None = None, timeout: float = 30.0) -> None:
        """Wait until ``parties`` processes (default: all of the run) reach ``name``."""
        self._barrier.wait(name, self.size if parties is None else parties, timeout)


def load(spec: dict[str, Any]) -> Any:
    """The function the spec names, importing its module as the test process did."""
    module_name, path = spec["module"], spec.get("path")
    if spec.get("basedir"):
        sys.path.insert(0, spec["basedir"])
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        if not path:
            raise
        found = importlib.util.spec_from_file_location(module_name, path)
        if found is None or found.loader is None:
            raise
        module = importlib.util.module_from_spec(found)
        sys.modules[module_name] = module
        found.loader.exec_module(module)
    obj: Any = module
    for part in spec["qualname"].split("."):
        obj = getattr(obj, part)
    return obj


def run(spec: dict[str, Any]) -> int:
    """Be process ``spec["index"]`` of the run; returns the exit status."""
    result_path = Path(spec["result"])
    bus = RunBus(
        Endpoints(pub=spec["pub"], ctl=spec["ctl"]),
        name=f"run-{spec['index']}",
        role="busd_run",
        timeout=spec["timeout"],
    )
    go = threading.Event()
    bus.subscribe(GO, lambda run_id: go.set() if run_id == spec["run"] else None)
    bus.setup_run(spec["index"], spec["size"])
    try:
        bus.connect(mirror=True, timeout=spec["timeout"])
        bus.broadcast(READY, spec["run"], spec["index"])
        if not go.wait(spec["timeout"]):
            raise TimeoutError(f"no {GO!r} from the test within {spec['timeout']}s")
        func = load(spec)
        value = func(bus, spec["index"], *spec["args"], **spec["kwargs"])
        outcome: dict[str, Any] = {"ok": True, "value": value}
        try:
            data = msgpack.packb(outcome, use_bin_type=True)
        except (TypeError, ValueError) as exc:
            outcome = {
                "ok": False,
                "error": f"the return value {value!r:.200} cannot be sent back (msgpack): {exc}",
            }
            data = msgpack.packb(outcome, use_bin_type=True)
    except BaseException:  # noqa: BLE001 - a process main: the test gets the traceback
        outcome = {"ok": False, "error": traceback.format_exc()}
        data = msgpack.packb(outcome, use_bin_type=True)
    finally:
        try:
            bus.leave("busd_run done")
        except Exception:  # a process main: the outcome above is what the test needs
            logging.getLogger(__name__).exception("leaving the bus failed")
    tmp = result_path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, result_path)
    return 0 if outcome["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    """Read the spec file named on the command line and run."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m busd.client.testing.harness SPEC", file=sys.stderr)
        return 2
    faulthandler.register(signal.SIGUSR1)  # the test asks for stacks of a hung process
    spec = msgpack.unpackb(Path(args[0]).read_bytes(), raw=False)
    return run(spec)


if __name__ == "__main__":
    sys.exit(main())
