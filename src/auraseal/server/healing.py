"""The self-healing store: scrub packages, repair what parity can rebuild.

A scrub checks every original file and every part of every package against
the manifest and reports each component as ``intact``, ``recoverable``
(``good`` of ``total`` parts intact, at least ``k``; or the original intact so
parts can be re-encoded) or ``lost``. A repair rebuilds damaged originals and
parts in place, atomically, and is recorded in the ledger by the caller.

The sealing library (``auraseal.sealing``) does the work; this module adapts
its reports to :class:`PackageHealth` for the routes, metrics and dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from auraseal._time import format_time, utcnow
from auraseal.manifest import Manifest
from auraseal.sealing import open_package, repair, scrub
from auraseal.sealing.pipeline import Outcome
from auraseal.server.store import PackageView

__all__ = ["ComponentHealth", "PackageHealth", "intact_health", "repair_view", "scrub_view"]


@dataclass(frozen=True)
class ComponentHealth:
    """One component's state after a scrub."""

    path: str
    state: str  # "intact" | "recoverable" | "lost"
    good: int
    total: int
    k: int
    original_ok: bool = True
    #: ``where: what`` when members could not be *read* (an I/O failure, not
    #: lost data: a "lost" state with this set is not recorded as lost)
    io_error: str = ""

    @property
    def coherence(self) -> float:
        return self.good / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "state": self.state,
            "good": self.good,
            "total": self.total,
            "k": self.k,
            "coherence": round(self.coherence, 6),
            "original_ok": self.original_ok,
            **({"io_error": self.io_error} if self.io_error else {}),
        }


@dataclass(frozen=True)
class PackageHealth:
    """A package's health as of ``checked_at`` (None: not scrubbed yet)."""

    name: str
    version: int
    checked_at: datetime | None
    components: tuple[ComponentHealth, ...] = ()
    repaired: tuple[str, ...] = field(default=())

    @property
    def state(self) -> str:
        if self.checked_at is None:
            return "unchecked"
        states = {c.state for c in self.components}
        if "lost" in states:
            return "lost"
        if "recoverable" in states:
            return "degraded"
        return "intact"

    def counts(self) -> dict[str, int]:
        out = {"intact": 0, "recoverable": 0, "lost": 0}
        for c in self.components:
            out[c.state] = out.get(c.state, 0) + 1
        return out

    def min_coherence(self) -> float:
        return min((c.coherence for c in self.components), default=1.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "checked_at": None if self.checked_at is None else format_time(self.checked_at),
            "counts": self.counts(),
            "components": [c.to_dict() for c in self.components],
        }


def _health(c: Any) -> ComponentHealth:
    """A sealing ``ComponentReport`` as a :class:`ComponentHealth`."""
    original_ok = c.original == "good"
    io_error = "; ".join(f"{w}: {e}" for w, e in sorted(c.unreadable.items())[:3])
    if not c.sealed:
        return ComponentHealth(c.path, c.state, int(original_ok), 1, 1, original_ok, io_error)
    return ComponentHealth(c.path, c.state, c.good, c.total, c.k, original_ok, io_error)


def intact_health(name: str, manifest: Manifest) -> PackageHealth:
    """Every component of ``manifest`` intact, as of now (a package whose every
    byte was just verified, e.g. by a publish check)."""
    comps = tuple(
        ComponentHealth(e.path, "intact", 1, 1, 1) if e.recovery is None else
        ComponentHealth(e.path, "intact", len(e.recovery.parts), len(e.recovery.parts),
                        e.recovery.k)
        for e in manifest.files
    )
    return PackageHealth(name, manifest.version, utcnow(), comps)


def scrub_view(view: PackageView, jobs: int | None = 1) -> PackageHealth:
    """Check every file and part of ``view`` (reads everything once)."""
    with open_package(view.dir) as pkg:
        report = scrub(pkg, jobs=jobs)
    comps = tuple(_health(c) for c in report.components)
    return PackageHealth(view.name, view.version, utcnow(), comps)


def repair_view(
    view: PackageView, health: PackageHealth
) -> tuple[PackageHealth, list[str], list[Outcome]]:
    """Rebuild every damaged, recoverable component of ``view`` in place (atomically).

    Returns the health after the repair, the components that were repaired
    and the typed outcomes of those that could not be (an I/O failure naming
    its path, an integrity failure, too few parts): nothing is swallowed.
    """
    damaged = {c.path for c in health.components if c.state == "recoverable"}
    if not damaged:
        return health, [], []
    with open_package(view.dir) as pkg:
        report = repair(pkg, jobs=1)
    problems = [o for o in report.outcomes if not o.ok]
    after = scrub_view(view)
    repaired = [c.path for c in after.components if c.path in damaged and c.state == "intact"]
    return after, repaired, problems
