"""What a new reading of the config file changes, pool by pool.

Each pool named in the old or the new reading is in exactly one of:

    added       only in the new reading: started
    removed     only in the old: stopped
    changed     its processes would run differently (target, command, env, spawn,
                preload, listen, bus): its workers are replaced
    unchanged   the same spec
    resized and/or updated
                in place: a new number of workers, and/or any other field (the
                supervision settings, after, ready, signals, reload, timeouts)

What ``busctl reload-config`` prints is :meth:`ConfigDiff.lines`::

    added: cache
    changed: web (replaced: target)
    resized: jobs 2 -> 4
    updated: jobs (backoff, flap_limit)
    removed: old
    unchanged: sched
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from busd.daemon.config import PoolSpec

#: The fields that decide how a worker process is made: a difference replaces the workers.
REPLACING = ("target", "command", "env", "spawn", "preload", "listen", "bus")
#: The fields a running pool takes in place (all but its name, REPLACING and workers).
IN_PLACE = tuple(f.name for f in fields(PoolSpec) if f.name not in {"name", "workers", *REPLACING})


@dataclass(frozen=True)
class ConfigDiff:
    """The pools of two readings by what becomes of them (names in file order)."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    resized: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    #: A changed pool's fields that differ among REPLACING.
    replaced_fields: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: A resized pool's ``(old, new)`` number of workers.
    sizes: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    #: An updated pool's fields that differ among IN_PLACE.
    updated_fields: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """One line per category that is not empty, as busctl prints them."""
        found = [
            ("added", ", ".join(self.added)),
            (
                "changed",
                ", ".join(
                    f"{n} (replaced: {', '.join(self.replaced_fields[n])})" for n in self.changed
                ),
            ),
            (
                "resized",
                ", ".join(f"{n} {self.sizes[n][0]} -> {self.sizes[n][1]}" for n in self.resized),
            ),
            (
                "updated",
                ", ".join(f"{n} ({', '.join(self.updated_fields[n])})" for n in self.updated),
            ),
            ("removed", ", ".join(self.removed)),
            ("unchanged", ", ".join(self.unchanged)),
        ]
        return [f"{kind}: {names}" for kind, names in found if names]

    def as_dict(self) -> dict[str, Any]:
        """Lists of names by category, and what differs in each pool: for JSON."""
        details: dict[str, dict[str, Any]] = {}
        for name, replaced in self.replaced_fields.items():
            details.setdefault(name, {})["replaced"] = list(replaced)
        for name, (old, new) in self.sizes.items():
            details.setdefault(name, {})["workers"] = [old, new]
        for name, updated in self.updated_fields.items():
            details.setdefault(name, {})["updated"] = list(updated)
        return {
            "added": list(self.added),
            "changed": list(self.changed),
            "resized": list(self.resized),
            "updated": list(self.updated),
            "removed": list(self.removed),
            "unchanged": list(self.unchanged),
            "details": details,
        }


def differing(old: PoolSpec, new: PoolSpec, names: Sequence[str]) -> tuple[str, ...]:
    """The fields among ``names`` whose values differ."""
    return tuple(n for n in names if getattr(old, n) != getattr(new, n))


def diff(old: Sequence[PoolSpec], new: Sequence[PoolSpec]) -> ConfigDiff:
    """What becomes of each pool when ``old`` gives way to ``new`` (matched by name)."""
    before = {spec.name: spec for spec in old}
    after = {spec.name: spec for spec in new}
    added, changed, resized, updated, unchanged = [], [], [], [], []
    replaced_fields: dict[str, tuple[str, ...]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    updated_fields: dict[str, tuple[str, ...]] = {}
    for name, spec in after.items():
        was = before.get(name)
        if was is None:
            added.append(name)
        elif was == spec:
            unchanged.append(name)
        elif replaced := differing(was, spec, REPLACING):
            changed.append(name)
            replaced_fields[name] = replaced
        else:
            if was.workers != spec.workers:
                resized.append(name)
                sizes[name] = (was.workers, spec.workers)
            if in_place := differing(was, spec, IN_PLACE):
                updated.append(name)
                updated_fields[name] = in_place
    return ConfigDiff(
        added=tuple(added),
        changed=tuple(changed),
        resized=tuple(resized),
        updated=tuple(updated),
        removed=tuple(name for name in before if name not in after),
        unchanged=tuple(unchanged),
        replaced_fields=replaced_fields,
        sizes=sizes,
        updated_fields=updated_fields,
    )


__all__ = ["IN_PLACE", "REPLACING", "ConfigDiff", "diff"]
