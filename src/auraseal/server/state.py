"""``ServerState``: everything the routes and the dashboard read and trigger.

One instance per app (no globals). The web dashboard (``auraseal.web``) reads
:meth:`ServerState.packages`, :meth:`ServerState.ledger_head`,
:meth:`ServerState.checkpoint_text`, :meth:`ServerState.recent_events` and
triggers :meth:`ServerState.verify_package`.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from datetime import datetime, timedelta
from typing import Any

import anyio

from auraseal._time import format_time, utcnow
from auraseal.errors import AuraSealError, NotFoundError
from auraseal.manifest import Manifest
from auraseal.server.archive import clean_archive_temps, invalidate_archives
from auraseal.server.config import ServerConfig
from auraseal.server.healing import PackageHealth, intact_health, repair_view, scrub_view
from auraseal.server.ledger_port import LedgerPort, open_port
from auraseal.server.logs import ServerLog
from auraseal.server.metrics import Metrics
from auraseal.server.publish import SourceHook
from auraseal.server.static import FileCache
from auraseal.server.store import PackageStore, PackageView

__all__ = ["EXPIRING_WITHIN", "ServerState", "expiry_of", "prepare_root", "signer_ids"]

#: A package whose manifest expires within this is "expiring" (``/healthz`` degraded).
EXPIRING_WITHIN = timedelta(days=7)


def expiry_of(expires: datetime | None, now: datetime) -> dict[str, Any]:
    """``{"expires", "seconds_left", "expiry_state": ok|expiring|expired}`` of a manifest."""
    if expires is None:
        return {"expires": None, "seconds_left": None, "expiry_state": "ok"}
    left = int((expires - now).total_seconds())
    if left <= 0:
        state = "expired"
    elif left <= EXPIRING_WITHIN.total_seconds():
        state = "expiring"
    else:
        state = "ok"
    return {"expires": format_time(expires), "seconds_left": left, "expiry_state": state}


def signer_ids(manifest_bytes: bytes) -> list[str]:
    """Key ids (hex SHA-256 of the raw public key) of the envelope's signatures."""
    try:
        doc = json.loads(manifest_bytes)
    except ValueError:
        return []
    sigs = doc.get("signatures") if isinstance(doc, dict) else None
    if not isinstance(sigs, list):
        return []
    return [s["keyid"] for s in sigs if isinstance(s, dict) and isinstance(s.get("keyid"), str)]


def prepare_root(store: PackageStore) -> list[str]:
    """Start-up work on ROOT, done once before workers start (``auraseal serve``
    calls it in the parent process) and again, harmlessly, by each
    :class:`ServerState`: remove temp files and staging directories of dead
    processes, then adopt plain package directories (under a cross-process
    lock). Returns the names adopted."""
    store.clean_staging()
    clean_archive_temps(store.root)
    return store.adopt()


def _repair_change(c: Any) -> dict[str, Any]:
    """What a repair changed in one component, from its health before the repair."""
    if c is None:
        return {}
    return {"original_rebuilt": not c.original_ok, "parts_rebuilt": max(0, c.total - c.good),
            "before": f"{c.good}/{c.total} parts intact"}


class ServerState:
    """Shared state of one running server."""

    def __init__(
        self, config: ServerConfig, *, ledger: LedgerPort | None = None,
        log: ServerLog | None = None,
    ) -> None:
        self.config = config
        #: where event lines go (``auraseal serve`` passes one on stderr); None: nowhere
        self.log = log
        self.store = PackageStore(config.root, config.keep_versions)
        prepare_root(self.store)
        self.metrics = Metrics()
        self.cache = FileCache(config.small_file_cache_bytes)
        self.ledger: LedgerPort | None = ledger if ledger is not None else open_port(config)
        self._health: dict[str, PackageHealth] = {}
        self._events: deque[dict[str, Any]] = deque(maxlen=200)
        self._lock = threading.Lock()
        self._scrub_locks: dict[str, threading.Lock] = {}
        #: scrubs completed per package (a caller that waited for a scrub reuses it)
        self._scrubs_done: dict[str, int] = {}
        self.publish_locks: dict[str, anyio.Lock] = {}
        #: test seam: wraps the member source every publish check reads through
        #: (e.g. a :class:`~auraseal.sealing.source.CountingSource`)
        self.publish_source_hook: SourceHook | None = None
        self.metrics.add_gauges(self._gauges)

    # --- reading ----------------------------------------------------------------

    def health(self, name: str) -> PackageHealth | None:
        with self._lock:
            return self._health.get(name)

    def package_info(self, view: PackageView, now: datetime | None = None) -> dict[str, Any]:
        h = self.health(view.name)
        if h is None or h.version != view.version:
            h = PackageHealth(view.name, view.version, None)
        signers = view.memo.get("signers")
        if signers is None:
            signers = view.memo["signers"] = tuple(signer_ids(view.manifest_bytes))
        try:
            kept = self.store.versions(view.name)
        except AuraSealError:
            kept = [view.version]
        return {
            "name": view.name,
            "version": view.version,
            "versions": kept,
            "size": view.size,
            "files": len(view.manifest.files),
            "created": format_time(view.manifest.created),
            **expiry_of(view.manifest.expires, now or utcnow()),
            "signers": list(signers),
            "health": h.to_dict(),
        }

    def health_summary(self, now: datetime | None = None) -> dict[str, Any]:
        """``/healthz``: "ok", or "degraded" with one reason per package expiring
        within :data:`EXPIRING_WITHIN` or expired, or found lost or damaged."""
        reasons = []
        pkgs = self.packages(now)
        for p in pkgs:
            if p["expiry_state"] == "expired":
                reasons.append(f"{p['name']}: manifest expired at {p['expires']}")
            elif p["expiry_state"] == "expiring":
                days = p["seconds_left"] / 86400
                reasons.append(
                    f"{p['name']}: manifest expires at {p['expires']} (in {days:.1f} days)"
                )
            if p["health"]["state"] in ("lost", "degraded"):
                reasons.append(f"{p['name']}: health {p['health']['state']}")
        return {"status": "degraded" if reasons else "ok", "reasons": reasons,
                "packages": len(pkgs), "ledger": self.ledger is not None}

    def packages(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Every served package: name, version(s), size, files, expiry, signers, health."""
        now = now or utcnow()
        out = []
        for name in self.store.names():
            try:
                view = self.store.get(name)
            except AuraSealError:
                continue
            out.append(self.package_info(view, now))
        return out

    def ledger_head(self) -> dict[str, Any] | None:
        """``{"size": entries committed, "pending": n, "block": {...} | None}`` or None."""
        if self.ledger is None:
            return None
        try:
            return self.ledger.head()
        except AuraSealError:
            return None

    def checkpoint_text(self) -> str | None:
        """The latest signed checkpoint (C2SP signed note), or None."""
        if self.ledger is None:
            return None
        try:
            return self.ledger.checkpoint()
        except AuraSealError:
            return None

    def recent_events(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest events, newest first: read from the ledger (so they survive a
        restart and show what every worker did), else from this process's memory."""
        if self.ledger is not None:
            try:
                return self.ledger.recent(limit)
            except AuraSealError:
                pass
        with self._lock:
            return list(self._events)[-limit:][::-1]

    # --- acting -------------------------------------------------------------------

    def record_event(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        """Note an event (publish, repair, lost, ...) and record it in the ledger."""
        event: dict[str, Any] = {"type": kind, "time": format_time(utcnow()), **data}
        if self.ledger is not None:
            try:
                event["entry_id"] = self.ledger.record(kind, data)
            except AuraSealError as exc:
                event["ledger_error"] = str(exc)
        with self._lock:
            self._events.append(event)
        if self.log is not None:
            self.log.event(kind, {k: v for k, v in event.items() if k not in ("type", "time")})
        return event

    def note(self, kind: str, data: dict[str, Any]) -> None:
        """An event for the log only (tamper detected, expiry warning): not in the ledger."""
        if self.log is not None:
            self.log.event(kind, data)

    def mark_published(self, name: str, manifest: Manifest) -> PackageHealth:
        """The health of a version just published: intact, since its publish
        check read and verified every original and part (server/publish.py)."""
        health = intact_health(name, manifest)
        with self._lock:
            self._health[name] = health
            self._scrubs_done[name] = self._scrubs_done.get(name, 0) + 1
        return health

    def scrub_package_sync(self, name: str, repair: bool = True) -> PackageHealth:
        """Scrub ``name`` now (and repair what parity can rebuild); blocking."""
        with self._lock:
            lock = self._scrub_locks.setdefault(name, threading.Lock())
        with self._lock:
            asked = self._scrubs_done.get(name, 0)
        with lock:
            view = self.store.get(name)
            with self._lock:
                done = self._health.get(name)
                fresh = self._scrubs_done.get(name, 0) != asked
            if (fresh and done is not None and done.version == view.version
                    and (done.state == "intact" or not repair)):
                return done  # scrubbed by another caller while this one waited
            try:
                moved = self.store.move_unlisted(view)
            except OSError:
                moved = []
            if moved:
                self.record_event("unlisted", {"package": name, "version": view.version,
                                               "moved": moved[:20], "count": len(moved)})
            health = scrub_view(view)
            self.metrics.inc("auraseal_scrubs_total")
            bad = [c for c in health.components if c.state != "intact"]
            if bad:
                self.metrics.inc("auraseal_verification_failures_total", len(bad))
                self.note("tamper", {"package": name, "version": view.version,
                                     "components": [c.path for c in bad][:20],
                                     "count": len(bad)})
            if repair and any(c.state == "recoverable" for c in health.components):
                before = {c.path: c for c in health.components}
                health, repaired, problems = repair_view(view, health)
                for o in problems:  # log only: the next scrub tries again
                    self.note("repair_failed", {"package": name, "version": view.version,
                                                **o.to_dict()})
                for path in repaired:
                    self.metrics.inc("auraseal_repairs_total")
                    self.record_event("repair", {"package": name, "version": view.version,
                                                 "component": path,
                                                 **_repair_change(before.get(path))})
                if repaired:
                    self.cache.clear()
                    invalidate_archives(self.config.root, name)
            for c in health.components:
                if c.state == "lost" and c.io_error:
                    # too few parts could be *read*: an I/O failure, not lost data
                    self.note("unreadable", {"package": name, "version": view.version,
                                             "component": c.path, "error": c.io_error})
                elif c.state == "lost":
                    self.record_event(
                        "lost",
                        {"package": name, "version": view.version, "component": c.path,
                         "good": c.good, "total": c.total, "k": c.k},
                    )
            with self._lock:
                self._health[name] = health
                self._scrubs_done[name] = self._scrubs_done.get(name, 0) + 1
            return health

    async def verify_package(self, name: str, repair: bool = True) -> PackageHealth:
        """Scrub (and repair) ``name`` in a worker thread; for the dashboard and routes."""
        if name not in self.store.names():
            raise NotFoundError("no such package", name)
        return await anyio.to_thread.run_sync(self.scrub_package_sync, name, repair)

    def scrub_all_sync(self) -> None:
        for name in self.store.names():
            try:
                self.scrub_package_sync(name)
                self.check_expiry(name)
            except AuraSealError as exc:
                self.record_event("scrub_failed", {"package": name, "error": str(exc)})

    def check_expiry(self, name: str) -> bool:
        """Log an ``expiry_warning`` if ``name``'s manifest expires within
        ``config.expiry_warning`` seconds (or has expired); True if it did."""
        view = self.store.get(name)
        expires = view.manifest.expires
        if expires is None:
            return False
        left = (expires - utcnow()).total_seconds()
        if left > self.config.expiry_warning:
            return False
        self.note("expiry_warning", {"package": name, "version": view.version,
                                     "expires": format_time(expires), "expired": left <= 0})
        return True

    def _gauges(self) -> list[tuple[str, str, dict[str, str], float]]:
        out: list[tuple[str, str, dict[str, str], float]] = []
        with self._lock:
            healths = list(self._health.values())
        totals = {"intact": 0, "recoverable": 0, "lost": 0}
        for h in healths:
            for k, v in h.counts().items():
                totals[k] = totals.get(k, 0) + v
        for state, n in sorted(totals.items()):
            out.append(("auraseal_components", "Components by state at the last scrub.",
                        {"state": state}, float(n)))
        out.append(("auraseal_packages", "Packages being served.", {},
                    float(len(self.store.names()))))
        head = self.ledger_head()
        if head is not None:
            out.append(("auraseal_ledger_entries", "Entries recorded in the ledger.", {},
                        float(head.get("entries", 0))))
            out.append(("auraseal_ledger_blocks", "Blocks committed in the ledger.", {},
                        float(head.get("blocks", 0))))
        return out

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
