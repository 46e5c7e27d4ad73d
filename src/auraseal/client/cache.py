"""The client's cache directory (layout and formats: ``docs/CLIENT.md``).

::

    CACHE/
      trust.json                      rollback state (TrustState format, version 1)
      trust.lock                      flock held while trust.json or a pin is written
      pins/<name>.json                keys pinned by --trust-on-first-use (client/trust.py)
      manifests/<key>.json            the manifest bytes as last fetched
      manifests/<key>.meta.json       {"format", "version": 1, "url", "etag", ...}
      files/<alg>/<hh>/<hex>          file contents, named by their verified digest

``<key>`` is the hex SHA-256 of the manifest URL. Files are
content-addressed, so a cached file can only ever be used for a manifest that
lists exactly those bytes (no mix-and-match across versions), and every use
re-verifies it. A file's age is its mtime, set when it was stored. A file
is written to a temp in ``CACHE/`` (kind ``cache``) and renamed into place;
opening a cache removes such temps (and atomic-write temps) left by killed
processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from auraseal._fs import atomic_write_bytes, clean_stale_temps, file_lock, temp_name
from auraseal._time import format_time, parse_time
from auraseal.client.trust import TrustAnchor, load_pin, pin_path
from auraseal.errors import AuraSealError, PinnedKeyError, StorageError
from auraseal.integrity import parse_integrity
from auraseal.manifest import FileEntry
from auraseal.signing import TrustState

__all__ = ["META_FORMAT", "META_VERSION", "Cache", "LockedTrustState", "ManifestMeta"]

META_FORMAT = "auraseal-client-manifest-cache"
META_VERSION = 1


class LockedTrustState(TrustState):
    """``trust.json`` whose read-modify-write runs under an ``flock`` on a
    lock file, so concurrent fetches sharing one cache lose no records."""

    def __init__(self, path: Path, lock: Path) -> None:
        super().__init__(path)
        self.lock = lock

    def locked(self) -> contextlib.AbstractContextManager[None]:
        return file_lock(self.lock, 0o644)

    def record(self, name: str, version: int, digest: str) -> None:
        with self.locked():
            TrustState.record(self, name, version, digest)

    def check_and_record(self, name: str, version: int, digest: str, where: str = "") -> None:
        with self.locked():
            self.check(name, version, digest, where)
            TrustState.record(self, name, version, digest)


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ManifestMeta:
    """What the cache knows about one manifest URL."""

    url: str
    fetched_at: datetime
    sha256: str
    etag: str | None = None
    last_modified: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": META_FORMAT,
            "version": META_VERSION,
            "url": self.url,
            "fetched_at": format_time(self.fetched_at),
            "sha256": self.sha256,
            "etag": self.etag,
            "last_modified": self.last_modified,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> ManifestMeta:
        if not isinstance(d, dict) or d.get("format") != META_FORMAT:
            raise StorageError(f"not a {META_FORMAT} document", where)
        if d.get("version") != META_VERSION:
            raise StorageError(f"unsupported cache meta version {d.get('version')!r}", where)
        url, sha, etag, lm = d.get("url"), d.get("sha256"), d.get("etag"), d.get("last_modified")
        if not isinstance(url, str) or not isinstance(sha, str):
            raise StorageError("cache meta needs 'url' and 'sha256' strings", where)
        return cls(
            url=url,
            fetched_at=parse_time(str(d.get("fetched_at")), where),
            sha256=sha,
            etag=etag if isinstance(etag, str) else None,
            last_modified=lm if isinstance(lm, str) else None,
        )


class Cache:
    """Manifests (with revalidation data), verified files and rollback state."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            (self.root / "manifests").mkdir(parents=True, exist_ok=True)
            (self.root / "files").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create cache: {exc.strerror}", str(self.root)) from exc
        clean_stale_temps(self.root, {"cache", "write"})
        clean_stale_temps(self.root / "manifests", {"write"})
        clean_stale_temps(self.root / "pins", {"write"})

    # --- rollback state ---------------------------------------------------

    @property
    def trust_state(self) -> LockedTrustState:
        return LockedTrustState(self.root / "trust.json", self.root / "trust.lock")

    # --- pinned trust anchors ----------------------------------------------

    def pin(self, name: str) -> TrustAnchor | None:
        return load_pin(self.root, name)

    def save_pin(self, anchor: TrustAnchor, where: str = "") -> tuple[Path, bool]:
        """Pin ``anchor`` for its package under the trust lock; returns the pin
        file and whether it was written now. A pin that appeared meanwhile
        for other keys is refused (:class:`PinnedKeyError`), never replaced."""
        p = pin_path(self.root, anchor.name)
        with self.trust_state.locked():
            old = load_pin(self.root, anchor.name)
            if old is not None:
                if not old.same_trust(anchor):
                    raise PinnedKeyError(
                        f"package '{anchor.name}' was pinned meanwhile to other keys in {p}",
                        where,
                    )
                return p, False
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create pins: {exc.strerror}", str(p.parent)) from exc
            atomic_write_bytes(p, json.dumps(anchor.to_dict(), indent=2).encode())
        return p, True

    # --- manifests ---------------------------------------------------------

    def _manifest_paths(self, url: str) -> tuple[Path, Path]:
        key = url_key(url)
        d = self.root / "manifests"
        return d / f"{key}.json", d / f"{key}.meta.json"

    def manifest(self, url: str) -> tuple[bytes, ManifestMeta] | None:
        """The cached bytes and meta for ``url``, or None (also if the cached
        bytes no longer match the digest recorded when they were stored)."""
        body, meta_path = self._manifest_paths(url)
        try:
            meta = ManifestMeta.from_dict(json.loads(meta_path.read_bytes()), str(meta_path))
            data = body.read_bytes()
        except (OSError, ValueError, AuraSealError):
            return None
        if meta.url != url or hashlib.sha256(data).hexdigest() != meta.sha256:
            return None
        return data, meta

    def store_manifest(
        self,
        url: str,
        data: bytes,
        now: datetime,
        etag: str | None = None,
        last_modified: str | None = None,
    ) -> ManifestMeta:
        body, meta_path = self._manifest_paths(url)
        meta = ManifestMeta(
            url=url,
            fetched_at=now,
            sha256=hashlib.sha256(data).hexdigest(),
            etag=etag,
            last_modified=last_modified,
        )
        atomic_write_bytes(body, data)
        atomic_write_bytes(meta_path, json.dumps(meta.to_dict(), indent=2).encode())
        return meta

    def touch_manifest(self, url: str, meta: ManifestMeta, now: datetime) -> None:
        """Record a successful revalidation (HTTP 304) at ``now``."""
        _, meta_path = self._manifest_paths(url)
        fresh = ManifestMeta(meta.url, now, meta.sha256, meta.etag, meta.last_modified)
        atomic_write_bytes(meta_path, json.dumps(fresh.to_dict(), indent=2).encode())

    # --- files -------------------------------------------------------------

    def _file_path(self, algorithm: str, digest: bytes) -> Path:
        h = digest.hex()
        return self.root / "files" / algorithm / h[:2] / h

    def lookup_file(self, entry: FileEntry) -> tuple[Path, float] | None:
        """A cached file whose name is one of the entry's acceptable digests and
        whose size matches, with its age reference (mtime); the caller still
        verifies the bytes while copying them."""
        integ = parse_integrity(entry.integrity, entry.path)
        for digest in integ.digests:
            p = self._file_path(integ.algorithm, digest)
            try:
                st = p.stat()
            except OSError:
                continue
            if st.st_size == entry.size:
                return p, st.st_mtime
        return None

    def store_file(self, src: Path, algorithm: str, digest: bytes, now: datetime) -> None:
        """Copy a verified file into the cache (temp + rename), stamped ``now``."""
        dst = self._file_path(algorithm, digest)
        tmp = ""
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = str(self.root / temp_name(dst.name[:16], "cache"))
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            shutil.copyfile(src, tmp)
            ts = now.astimezone(UTC).timestamp()
            os.utime(tmp, (ts, ts))
            os.replace(tmp, dst)
            tmp = ""
        except OSError as exc:
            raise StorageError(f"cannot store in cache: {exc.strerror}", str(dst)) from exc
        finally:
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def forget_file(self, path: Path) -> None:
        """Drop a cached file that failed verification."""
        with contextlib.suppress(OSError):
            path.unlink()
