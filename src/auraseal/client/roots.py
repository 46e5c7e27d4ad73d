"""The client side of the root of trust: pin, walk, verify, check freshness.

``fetch --root root.json`` (or a root pinned in the cache by an earlier fetch,
or ``root/1.json`` taken on first use) is the trust anchor. Before any
manifest is trusted the client walks ``<base>root/<N+1>.json`` upward from the
pinned version, each step verified by :func:`auraseal.root.verify_root`
(threshold of the old root's release keys **and** of the new one's), stops at
the first 404, refuses an expired final root, and pins the result in the cache
(``<cache>/roots/<package>.json``; the pinned version never goes down). A
server that no longer serves the pinned version (``root/<pinned>.json`` 404)
or serves other bytes for it is refused: it is serving an older root as the
newest. Manifests are then verified against the current root's release keys
and threshold, and when the root names timestamp keys, ``<base>timestamp.json``
must be a valid, unexpired timestamp naming that very manifest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from auraseal._fs import atomic_write_bytes
from auraseal._time import format_time
from auraseal.client.cache import url_key
from auraseal.client.http import Fetcher
from auraseal.client.publish import upload_root  # re-exported (root install, publish)
from auraseal.errors import (
    AuraSealError,
    ExpiredError,
    NetworkError,
    RollbackError,
    StorageError,
    TrustError,
)
from auraseal.manifest import ParsedManifest, VerifiedManifest
from auraseal.root import Root, parse_root, verify_root, verify_timestamp

__all__ = ["MAX_ROOT_STEPS", "RootSession", "RootTrust", "pinned_root", "upload_root"]

#: a walk longer than this is refused (a hostile server serving endless roots)
MAX_ROOT_STEPS = 1024
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class RootTrust:
    """What the caller trusts: a root document it was given (``--root``)
    and/or the pin kept in ``cache_dir``; with ``tofu``, the server's
    ``root/1.json`` is taken on first use when neither exists."""

    anchor: bytes | None = None
    anchor_where: str = "--root"
    cache_dir: Path | None = None
    tofu: bool = False


def _pin_path(cache_dir: Path, package: str) -> Path:
    return Path(cache_dir) / "roots" / f"{_SAFE.sub('_', package)}.json"


def _read_pinned(cache_dir: Path, package: str) -> tuple[bytes, Path] | None:
    p = _pin_path(cache_dir, package)
    try:
        return p.read_bytes(), p
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read pinned root: {exc.strerror}", str(p)) from exc


def pinned_root(cache_dir: Path, package: str) -> Root | None:
    """The root pinned for ``package`` in the cache, if any (not re-verified)."""
    got = _read_pinned(cache_dir, package)
    return None if got is None else parse_root(got[0], str(got[1]))[0]


def _is_missing(exc: NetworkError) -> bool:
    return exc.what in ("HTTP 404", "HTTP 410")


class RootSession:
    """One fetch's view of the root: established once, then used for every
    manifest that fetch considers."""

    def __init__(
        self,
        trust: RootTrust,
        fetcher: Fetcher,
        base_url: str,
        now: datetime,
        *,
        offline: bool = False,
        warnings: list[str] | None = None,
    ) -> None:
        self.trust = trust
        self.fetcher = fetcher
        self.base = base_url if base_url.endswith("/") else base_url + "/"
        #: the pin's key: the package asked for (set by :meth:`load_manifest`)
        self.package = url_key(self.base)
        self.now = now
        self.offline = offline
        self.warnings: list[str] = warnings if warnings is not None else []
        self._root: Root | None = None
        self._established = False
        self._failed: AuraSealError | None = None
        self._timestamp: bytes | None = None

    # --- the walk ----------------------------------------------------------

    def _get(self, url: str) -> bytes | None:
        try:
            return self.fetcher.get_small(url).data
        except NetworkError as exc:
            if _is_missing(exc):
                return None
            raise

    def root_url(self, version: int) -> str:
        return f"{self.base}root/{version}.json"

    def _read_pin(self) -> tuple[Root, bytes] | None:
        if self.trust.cache_dir is None:
            return None
        got = _read_pinned(self.trust.cache_dir, self.package)
        if got is None:
            return None
        data, p = got
        # verified when pinned; signatures checked again (cheap), expiry at the end
        return verify_root(data, None, where=str(p), check_expiry=False), data

    def _write_pin(self, root: Root, data: bytes) -> None:
        if self.trust.cache_dir is None:
            return
        p = _pin_path(self.trust.cache_dir, self.package)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create directory: {exc.strerror}", str(p.parent)) from exc
        prev = self._read_pin()  # another fetch may have moved on meanwhile
        if prev is not None and prev[0].version >= root.version:
            return
        atomic_write_bytes(p, data)

    def establish(self) -> Root | None:
        """The current root, or None when there is no root to go by (no
        anchor, no pin, and on first use the server serves no root)."""
        if self._failed is not None:
            # a failed walk stays failed for the whole fetch: the next source
            # must not get its manifest past the root unchecked
            raise self._failed
        if self._established:
            return self._root
        try:
            self._root = self._establish()
        except AuraSealError as exc:
            self._failed = exc
            raise
        self._established = True
        return self._root

    def _establish(self) -> Root | None:
        pin = self._read_pin()
        start: tuple[Root, bytes] | None = pin
        from_pin = pin is not None
        if self.trust.anchor is not None:
            given = verify_root(
                self.trust.anchor, None, where=self.trust.anchor_where, check_expiry=False
            )
            if pin is None or given.version > pin[0].version:
                start, from_pin = (given, self.trust.anchor), False
            elif given.version == pin[0].version and given.digest() != pin[0].digest():
                raise RollbackError(
                    f"root v{given.version} differs from the one pinned before (fork)",
                    self.trust.anchor_where,
                )
        if start is None:
            if not self.trust.tofu or self.offline:
                return None
            url = self.root_url(1)
            first = self._get(url)
            if first is None:
                return None
            start = (verify_root(first, None, where=url, check_expiry=False), first)
            self.warnings.append(f"root: trusted {url} on first use")
        cur, cur_data = start
        if not self.offline:
            if from_pin:
                url = self.root_url(cur.version)
                served = self._get(url)
                if served is None:
                    raise RollbackError(
                        f"server does not serve root v{cur.version}, pinned before: its "
                        "newest root is older (rollback)",
                        url,
                    )
                if parse_root(served, url)[0].digest() != cur.digest():
                    raise RollbackError(
                        f"server's root v{cur.version} differs from the one pinned before", url
                    )
            for _ in range(MAX_ROOT_STEPS):
                url = self.root_url(cur.version + 1)
                data = self._get(url)
                if data is None:
                    break
                cur, cur_data = verify_root(data, cur, where=url, check_expiry=False), data
            else:
                raise TrustError(f"more than {MAX_ROOT_STEPS} root versions", self.base)
        if cur.expires is not None and cur.expires <= self.now:
            raise ExpiredError(
                f"root v{cur.version} expired at {format_time(cur.expires)}",
                self.root_url(cur.version),
            )
        self._write_pin(cur, cur_data)
        return cur

    # --- manifests ---------------------------------------------------------

    def load_manifest(
        self, parsed: ParsedManifest, package: str | None
    ) -> VerifiedManifest | None:
        """Verify a parsed manifest against the current root (and its
        timestamp); None when there is no root to go by (the caller's own
        policy applies). ``package`` (the package asked for) keys the pin in
        the cache."""
        if not self._established and package:
            self.package = package
        root = self.establish()
        if root is None:
            return None
        vm = parsed.verify(root.policy(), self.now)
        if root.timestamp is not None:
            self._check_timestamp(root, vm)
        return vm

    def _check_timestamp(self, root: Root, vm: VerifiedManifest) -> None:
        m = vm.manifest
        url = f"{self.base}timestamp.json"
        if self.offline:
            self.warnings.append("timestamp: not checked offline")
            return
        if self._timestamp is None:
            got = self._get(url)
            if got is None:
                raise ExpiredError(
                    "the root requires a timestamp and the server serves none", url
                )
            self._timestamp = got
        verify_timestamp(
            self._timestamp,
            root,
            name=m.name,
            manifest_version=m.version,
            manifest_digest=vm.digest,
            where=url,
            now=self.now,
        )

