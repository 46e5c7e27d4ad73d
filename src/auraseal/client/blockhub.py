"""BlockHub compatibility (seed 003) and where each file is looked for.

A BlockHub ``index.json`` lists ``files{name: {url, sha256, size}}`` with
absolute URLs (jsDelivr in the seed). The extension fetches each URL,
compares SHA-256, applies the file on a match and otherwise uses its local
fallback copy (``utils/<file>.json``). :func:`fallback_candidates` reproduces
that lookup: the fallback folder is searched under the entry's name and under
the URL's base name (``aiTerms`` → ``ai_terms.json``).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from auraseal._fs import resolve_inside, safe_relpath
from auraseal.errors import AuraSealError, UsageError
from auraseal.manifest import MANIFEST_NAME, FileEntry, Manifest, part_name

__all__ = ["Source", "fallback_candidates", "is_blockhub", "make_source"]

#: ``auraseal serve``'s package URL and its manifest alias (docs/SERVER.md).
_SERVER_FILES = re.compile(r"^(.*/packages/[A-Za-z0-9][A-Za-z0-9._-]{0,127})/files/$")
_SERVER_PACKAGE = re.compile(
    r"^(.*/packages/[A-Za-z0-9][A-Za-z0-9._-]{0,127})/?(?:integrity-manifest\.json)?$"
)


@dataclass(frozen=True)
class Source:
    """One place a package can be fetched from: the primary or a mirror.

    ``pinned_base`` is set for ``auraseal serve`` bases once the manifest's
    version is known: ``<server>/packages/<name>/versions/<v>/files/``, whose
    bytes never change, so a publish during a fetch cannot switch files under
    it (docs/SERVER.md). Hosts that do not serve it (404) use ``base``."""

    label: str
    base: str  # ends with "/"
    manifest_url: str
    pinned_base: str | None = None

    def file_url(self, entry: FileEntry, *, use_entry_url: bool, pinned: bool = False) -> str:
        """The URL of ``entry``: its own (absolute or relative to the manifest)
        ``url`` on the primary, else the package base plus its path."""
        if use_entry_url and entry.url:
            return urljoin(self.manifest_url, entry.url)
        return self._base(pinned) + quote(entry.path)

    def part_url(self, entry: FileEntry, number: int, *, pinned: bool = False) -> str:
        return self._base(pinned) + quote(part_name(entry.path, number))

    def _base(self, pinned: bool) -> str:
        return self.pinned_base if pinned and self.pinned_base else self.base

    def pinned(self, version: int) -> Source:
        """This source with ``pinned_base`` for ``version`` if it is a server base."""
        parts = urlsplit(self.base)
        m = _SERVER_FILES.match(parts.path)
        if m is None:
            return self
        path = f"{m.group(1)}/versions/{version}/files/"
        return replace(self, pinned_base=urlunsplit((parts.scheme, parts.netloc, path, "", "")))


def make_source(url: str, label: str) -> Source:
    """A URL ending in ``.json`` names the manifest itself (files are beside
    it); ``<server>/packages/<name>`` (``auraseal serve``'s package URL) means
    its static base ``<server>/packages/<name>/files/``; anything else is a
    package base holding ``integrity-manifest.json``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError("need an http:// or https:// URL", url)
    served = _SERVER_PACKAGE.match(parts.path)
    if served is not None and not parts.query:
        # `auraseal serve`: /packages/<name>[/integrity-manifest.json] → its static base
        base = urlunsplit((parts.scheme, parts.netloc, served.group(1) + "/files/", "", ""))
        return Source(label, base, base + MANIFEST_NAME)
    if parts.path.endswith(".json"):
        base = urljoin(url, "./")
        return Source(label, base, url)
    base = url if url.endswith("/") else url + "/"
    return Source(label, base, base + MANIFEST_NAME)


def is_blockhub(manifest: Manifest) -> bool:
    return manifest.extra.get("format") == "blockhub"


def fallback_candidates(fallback_dir: Path, entry: FileEntry) -> list[Path]:
    """Existing files in ``fallback_dir`` that may be ``entry``'s fallback copy."""
    names = [entry.path]
    if entry.url:
        base = posixpath.basename(urlsplit(entry.url).path)
        if base and base not in names:
            names.append(base)
    out: list[Path] = []
    for name in names:
        try:
            safe_relpath(name)
            p = resolve_inside(fallback_dir, name)
        except AuraSealError:
            continue
        if p.is_file():
            out.append(p)
    return out
