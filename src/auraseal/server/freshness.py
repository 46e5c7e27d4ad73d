"""Roots and timestamps served beside each package (docs/KEYS.md).

Layout below ROOT (outside the package versions, which hold exactly what
their manifest lists)::

    ROOT/.freshness/root/<N>.json            roots shared by every package
    ROOT/.freshness/<name>/root/<N>.json     a package's own roots (take precedence)
    ROOT/.freshness/<name>/timestamp.json    kept by `auraseal serve --timestamp-key`

served at ``/packages/<name>/files/root/<N>.json`` and
``/packages/<name>/files/timestamp.json`` (the package's static base, so a
client finds them at ``<base>root/<N>.json`` whatever hosts the package).
:func:`install_root` adds a root after checking it against the previous one;
:class:`TimestampKeeper` re-signs each package's timestamp when its manifest
changes and well before it expires.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from starlette.responses import Response

from auraseal._fs import atomic_write_bytes
from auraseal._time import utcnow
from auraseal.errors import AuraSealError, InputError, RollbackError
from auraseal.manifest import MANIFEST_NAME, open_manifest
from auraseal.root import Timestamp, make_timestamp, parse_root, verify_root
from auraseal.server.config import check_package_name
from auraseal.signing import Signer

__all__ = [
    "FRESHNESS_DIR",
    "TIMESTAMP_NAME",
    "TimestampKeeper",
    "freshness_path",
    "freshness_response",
    "install_root",
]

FRESHNESS_DIR = ".freshness"
TIMESTAMP_NAME = "timestamp.json"
_ROOT_FILE = re.compile(r"^root/([1-9][0-9]{0,8})\.json$")


def _regular(p: Path) -> bool:
    return p.is_file() and not p.is_symlink()


def freshness_path(root: Path, name: str, rel: str) -> Path | None:
    """The file answering ``<base>rel`` of package ``name``, if any."""
    if not check_package_name(name):
        return None
    base = Path(root) / FRESHNESS_DIR
    if rel == TIMESTAMP_NAME:
        p = base / name / TIMESTAMP_NAME
        return p if _regular(p) else None
    m = _ROOT_FILE.match(rel)
    if m is None:
        return None
    for p in (base / name / "root" / f"{int(m.group(1))}.json",
              base / "root" / f"{int(m.group(1))}.json"):
        if _regular(p):
            return p
    return None


def freshness_response(root: Path, name: str, rel: str) -> Response | None:
    """The HTTP answer for a root or timestamp of ``name``; None if ``rel`` is neither."""
    p = freshness_path(root, name, rel)
    if p is None:
        return None
    try:
        data = p.read_bytes()
    except OSError:
        return None
    return Response(
        data, media_type="application/json", headers={"cache-control": "no-cache"}
    )


def install_root(root: Path, data: bytes, name: str | None = None) -> Path:
    """Store a root under ROOT (for package ``name``, else for all packages).

    Version 1 must verify on its own; version N+1 against the stored N
    (thresholds of both, so a draft is never published). A stored version is
    never replaced by other bytes."""
    if name is not None and not check_package_name(name):
        raise InputError("bad package name", name)
    d = Path(root) / FRESHNESS_DIR / (name or "") / "root"
    new, _ = parse_root(data, "root")
    prev_path = d / f"{new.version - 1}.json"
    if name is not None:  # the package's own previous root, else the shared one
        prev_path = freshness_path(root, name, f"root/{new.version - 1}.json") or prev_path
    if new.version == 1:
        verify_root(data, None, where="root", check_expiry=False)
    else:
        try:
            prev_data = prev_path.read_bytes()
        except FileNotFoundError as exc:
            raise InputError(f"root v{new.version - 1} is not stored yet", str(d)) from exc
        prev, _ = parse_root(prev_data, str(prev_path))
        verify_root(data, prev, where="root", check_expiry=False)
    target = d / f"{new.version}.json"
    if target.exists():
        if target.read_bytes() != data:
            raise RollbackError(f"another root v{new.version} is already stored", str(target))
        return target
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, data)
    return target


class TimestampKeeper:
    """Keeps ``ROOT/.freshness/<name>/timestamp.json`` current for every package.

    :meth:`refresh` signs a new timestamp when a package's manifest differs
    from the one its timestamp names, or when the timestamp is older than
    ``refresh_after`` (default: a quarter of ``lifetime``)."""

    def __init__(
        self,
        root: Path,
        signers: Sequence[Signer],
        *,
        lifetime: timedelta = timedelta(days=1),
        refresh_after: timedelta | None = None,
    ) -> None:
        self.root = Path(root)
        self.signers = list(signers)
        self.lifetime = lifetime
        self.refresh_after = refresh_after if refresh_after is not None else lifetime / 4
        self.errors: list[str] = []

    def _packages(self) -> list[str]:
        try:
            entries = sorted(p.name for p in self.root.iterdir())
        except OSError:
            return []
        return [n for n in entries
                if check_package_name(n) and (self.root / n / MANIFEST_NAME).is_file()]

    def refresh(self, now: datetime | None = None) -> list[str]:
        """Re-sign what needs it; return the names whose timestamp was written."""
        t = now or utcnow()
        written = []
        for name in self._packages():
            try:
                data = (self.root / name / MANIFEST_NAME).read_bytes()
                vm = open_manifest(data, f"{name}/{MANIFEST_NAME}")
                m, digest = vm.manifest, vm.digest
                path = self.root / FRESHNESS_DIR / name / TIMESTAMP_NAME
                if self._current(path, m.version, digest, t):
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(path, make_timestamp(
                    m.name, m.version, digest, self.signers, lifetime=self.lifetime, now=t
                ))
                written.append(name)
            except (AuraSealError, OSError) as exc:
                self.errors = [*self.errors[-99:], f"{name}: {exc}"]
        return written

    def _current(self, path: Path, version: int, digest: str, now: datetime) -> bool:
        try:
            ts = Timestamp.from_dict(json.loads(path.read_bytes()).get("signed"), str(path))
        except (OSError, ValueError, AuraSealError, AttributeError):
            return False
        return (
            ts.manifest_version == version
            and ts.manifest_digest == digest
            and now - ts.created < self.refresh_after
            and ts.expires > now
        )

    def run(self, stop: threading.Event, interval: float = 2.0) -> None:
        """Refresh every ``interval`` seconds until ``stop`` is set (a publish
        is picked up within ``interval``)."""
        while not stop.is_set():
            with contextlib.suppress(Exception):  # a thread must not die on one bad package
                self.refresh()
            stop.wait(interval)

    def start(self, interval: float = 2.0) -> threading.Event:
        """Refresh now, then keep refreshing in a daemon thread; set the
        returned event to stop it."""
        self.refresh()
        stop = threading.Event()
        threading.Thread(
            target=self.run, args=(stop, interval), name="auraseal-timestamps", daemon=True
        ).start()
        return stop
