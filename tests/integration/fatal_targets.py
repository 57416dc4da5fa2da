"""A ``--plugin`` whose thread, named as busd's own threads are, dies on demand."""

from __future__ import annotations

import threading
from typing import Any


def doomed_thread(master: Any) -> None:
    """Start ``busd-doomed``: it raises once the channel ``crash`` is published."""
    asked = threading.Event()

    def die() -> None:
        asked.wait()
        raise RuntimeError("a bug in one of busd's threads")

    master.subscribe("crash", lambda *args: asked.set())
    threading.Thread(target=die, name="busd-doomed", daemon=True).start()
