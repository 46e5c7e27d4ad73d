"""The HTML rewriter: turn a page's integrity attributes into ones browsers enforce.

A browser skips an ``integrity`` token whose algorithm it does not know and,
with no usable token left, loads the resource *unverified*. The seed's
``<script integrity="auraseal-sha512-…">`` is such a token. :func:`rewrite_html`
rewrites every ``<script src>`` and integrity-capable ``<link>``
(``stylesheet``, ``modulepreload``, ``preload``) so that:

* local files (relative or root-absolute URLs, looked up under ``root``) get
  their digest computed from the file; a file that cannot be read is an
  error, never a tag without integrity or with a guessed one; a file that
  contradicts the integrity the tag (or the manifest) pins is an error too;
* ``auraseal-`` strings become standard tokens (dual → ``sha512-P sha512-S``),
  and the AuraSeal string is kept in ``data-auraseal-integrity``;
* ``crossorigin="anonymous"`` is added (SRI needs CORS for other origins);
* tags with ``data-fallback-url`` keep native verification and are made
  ``defer`` so that the loader (``<script type="module" data-auraseal-loader>``,
  inserted once at the top of ``<head>``) sees their native failure and
  loads the fallbacks through WebCrypto.

Only the rewritten start tags change; every other byte of the page is kept.
Running the rewriter on its own output changes nothing.
"""

from __future__ import annotations

import html
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

from auraseal._fs import atomic_write_bytes, resolve_inside, safe_relpath
from auraseal.errors import (
    DigestMismatchError,
    InputError,
    StorageError,
    UnsafePathError,
)
from auraseal.integrity import (
    AuraSealString,
    Integrity,
    SRIMetadata,
    hash_file,
    parse_integrity,
    sri_token,
)
from auraseal.manifest import Manifest, read_manifest_file
from auraseal.web import LOADER_NAME, loader_sri

__all__ = ["RewriteResult", "TagChange", "rewrite_file", "rewrite_html", "rewrite_page"]

_LINK_RELS = frozenset({"stylesheet", "modulepreload", "preload"})
_JS_TYPES = frozenset(
    {"", "text/javascript", "application/javascript", "module", "text/ecmascript"}
)
_NEW_ATTRS = ("integrity", "crossorigin", "data-auraseal-integrity")


@dataclass(frozen=True)
class TagChange:
    """What the rewriter did with one tag.

    ``action`` is ``computed`` (local file hashed, no integrity before),
    ``converted`` (local file verified against the tag's or manifest's
    integrity, written as standard SRI), ``remote`` (remote URL: the given
    integrity converted, not verified here), ``skipped`` (remote URL with no
    integrity anywhere: left as it was) or ``loader`` (the loader's own tag).
    """

    tag: str
    url: str
    action: str
    integrity: str = ""
    auraseal: str = ""
    fallbacks: tuple[str, ...] = ()


@dataclass(frozen=True)
class RewriteResult:
    html: str
    changes: tuple[TagChange, ...]
    loader_added: bool


Attrs = list[tuple[str, str | None]]


def _get(attrs: Attrs, name: str) -> str | None:
    for k, v in attrs:
        if k == name:
            return v if v is not None else ""
    return None


def _set(attrs: Attrs, name: str, value: str | None) -> None:
    for i, (k, _) in enumerate(attrs):
        if k == name:
            attrs[i] = (name, value)
            return
    attrs.append((name, value))


def _drop(attrs: Attrs, name: str) -> None:
    attrs[:] = [(k, v) for k, v in attrs if k != name]


def _serialize(tag: str, attrs: Attrs, self_closing: bool) -> str:
    parts = [f"<{tag}"]
    for k, v in attrs:
        parts.append(f" {k}" if v is None else f' {k}="{html.escape(v, quote=True)}"')
    parts.append(" />" if self_closing else ">")
    return "".join(parts)


def _auraseal_of(integ: Integrity) -> str:
    """The AuraSeal string for an integrity (empty if it cannot be one)."""
    if isinstance(integ, AuraSealString):
        return str(integ)
    digests = integ.digests
    if 1 <= len(digests) <= 2:
        second = digests[1] if len(digests) > 1 else None
        return str(AuraSealString(integ.algorithm, digests[0], second))
    return ""


def _sri_of(text: str, integ: Integrity) -> str:
    """Standard SRI text: AuraSeal strings converted, SRI kept as written."""
    if isinstance(integ, AuraSealString):
        return integ.to_sri()
    return " ".join(text.split())


class _Scanner(HTMLParser):
    """Collects the start tags the rewriter cares about, with their offsets."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self._line_starts = [0]
        for i, ch in enumerate(text):
            if ch == "\n":
                self._line_starts.append(i + 1)
        self.tags: list[tuple[int, str, str, Attrs]] = []  # offset, raw, tag, attrs
        self.head_end: int | None = None  # offset just after <head ...>
        self.base_href: str | None = None

    def _offset(self) -> int:
        line, col = self.getpos()
        return self._line_starts[line - 1] + col

    def handle_starttag(self, tag: str, attrs: Attrs) -> None:
        raw = self.get_starttag_text() or ""
        off = self._offset()
        if tag == "head" and self.head_end is None:
            self.head_end = off + len(raw)
        elif tag == "base" and self.base_href is None:
            self.base_href = _get(attrs, "href")
        elif tag in ("script", "link"):
            self.tags.append((off, raw, tag, list(attrs)))

    def handle_startendtag(self, tag: str, attrs: Attrs) -> None:
        self.handle_starttag(tag, attrs)


class _Rewriter:
    def __init__(
        self,
        *,
        root: Path,
        page_dir: str,
        manifest: Manifest | None,
        loader_url: str,
        algorithm: str,
        remote_base: bool = False,
    ) -> None:
        self.remote_base = remote_base
        self.root = root
        self.page_dir = page_dir  # POSIX path of the page's directory, relative to root
        self.algorithm = algorithm
        self.loader_url = loader_url
        self.by_path: Mapping[str, str] = {}
        self.by_url: Mapping[str, str] = {}
        if manifest is not None:
            self.by_path = {f.path: f.integrity for f in manifest.files}
            self.by_url = {f.url: f.integrity for f in manifest.files if f.url}

    # -- locating files ----------------------------------------------------------

    def local_path(self, url: str) -> str | None:
        """The root-relative path a local URL names, or None for a remote URL."""
        if self.remote_base or _is_absolute_url(url):
            return None
        parts = urlsplit(url)
        path = unquote(parts.path)
        if path == "":
            raise InputError("empty URL path", url)
        joined = path.lstrip("/") if path.startswith("/") else posixpath.join(self.page_dir, path)
        norm = posixpath.normpath(joined)
        if norm in (".", "") or norm == ".." or norm.startswith("../"):
            raise UnsafePathError("URL leaves the --root tree", url)
        return safe_relpath(norm, url)

    def file_integrity(self, rel: str, url: str, pinned: Integrity | None) -> Integrity:
        """Hash the local file; check it against ``pinned`` if the page pins one."""
        try:
            path = resolve_inside(self.root, rel)
            if not path.is_file():
                raise StorageError("no such file", str(path))
            alg = pinned.algorithm if pinned is not None else self.algorithm
            digest = hash_file(path, alg)
        except StorageError as exc:
            raise StorageError(
                f"cannot read the file ({exc.what}): refusing to write integrity for it", url
            ) from exc
        if pinned is None:
            return parse_integrity(sri_token(self.algorithm, digest))
        if not pinned.matches(digest):
            raise DigestMismatchError(
                f"{rel} does not match the integrity the page pins ({pinned}); "
                "refusing to bless it",
                url,
                expected=str(pinned),
                actual=sri_token(alg, digest),
            )
        return pinned

    # -- one tag ------------------------------------------------------------------

    def rewrite(self, tag: str, attrs: Attrs) -> tuple[Attrs | None, TagChange] | None:
        if tag == "script":
            url = _get(attrs, "src")
            if not url or (_get(attrs, "type") or "").strip().lower() not in _JS_TYPES:
                return None
        else:
            rels = set((_get(attrs, "rel") or "").lower().split())
            url = _get(attrs, "href")
            if not url or not rels & _LINK_RELS:
                return None
            if rels & _LINK_RELS == {"preload"} and (_get(attrs, "as") or "").lower() not in (
                "script",
                "style",
                "fetch",
            ):
                return None  # browsers check integrity only on these preloads
        out: Attrs = list(attrs)
        if tag == "script" and _get(attrs, "data-auraseal-loader") is not None:
            sri = loader_sri()
            _set(out, "integrity", sri)
            _set(out, "crossorigin", _get(attrs, "crossorigin") or "anonymous")
            return out, TagChange(tag, url, "loader", sri)

        where = f"<{tag} {'src' if tag == 'script' else 'href'}={url!r}>"
        given_text = _get(attrs, "data-auraseal-integrity") or _get(attrs, "integrity") or ""
        given: Integrity | None = None
        if given_text.strip():
            given = parse_integrity(given_text, where)
        rel = self.local_path(url)
        if rel is not None:
            pinned = given
            if pinned is None and rel in self.by_path:
                given_text = self.by_path[rel]
                pinned = parse_integrity(given_text, f"manifest: {rel}")
            integ = self.file_integrity(rel, url, pinned)
            action = "computed" if pinned is None else "converted"
            text = given_text if pinned is not None else integ.to_sri()
        else:
            if given is None and url in self.by_url:
                given_text = self.by_url[url]
                given = parse_integrity(given_text, f"manifest: {url}")
            if given is None:  # nothing to pin it to: reported, left as it was
                return None, TagChange(tag, url, "skipped")
            integ, text, action = given, given_text, "remote"
        if isinstance(integ, SRIMetadata) and integ.unknown:
            # Drop tokens browsers would skip; the known ones still count.
            text = str(integ)
        sri = _sri_of(text, integ)
        aura = _auraseal_of(integ)
        _set(out, "integrity", sri)
        cross = _get(attrs, "crossorigin")
        keep = cross in ("anonymous", "use-credentials")
        _set(out, "crossorigin", cross if keep else "anonymous")
        if aura:
            _set(out, "data-auraseal-integrity", aura)
        else:
            _drop(out, "data-auraseal-integrity")
        fallbacks = tuple((_get(attrs, "data-fallback-url") or "").split())
        if fallbacks and tag == "script":
            is_module = (_get(attrs, "type") or "").strip().lower() == "module"
            _drop(out, "async")
            if not is_module and _get(out, "defer") is None:
                _set(out, "defer", None)
        return out, TagChange(tag, url, action, sri, aura, fallbacks)


def rewrite_html(
    text: str,
    *,
    root: Path,
    page_dir: str = "",
    manifest: Manifest | None = None,
    loader_url: str = "/" + LOADER_NAME,
    algorithm: str = "sha512",
) -> RewriteResult:
    """Rewrite ``text`` (a page located at ``page_dir`` below ``root``).

    Raises :class:`~auraseal.errors.StorageError` for a local file that cannot
    be read, :class:`~auraseal.errors.DigestMismatchError` for one that
    contradicts the integrity pinned for it, and
    :class:`~auraseal.errors.InputError` subclasses for malformed integrity
    strings or URLs leaving ``root``. Nothing is returned half-rewritten.
    """
    scanner = _Scanner(text)
    try:
        scanner.feed(text)
        scanner.close()
    except AssertionError as exc:  # html.parser's way of giving up
        raise InputError(f"cannot parse HTML: {exc}", "page") from exc
    page_dir = page_dir.strip("/")
    remote_base = False
    if scanner.base_href is not None:
        base = urlsplit(scanner.base_href)
        if base.scheme or base.netloc:
            remote_base = True  # every URL in the page resolves against another host
        else:
            bpath = unquote(base.path)
            joined = bpath if bpath.startswith("/") else posixpath.join(page_dir, bpath)
            page_dir = posixpath.normpath(posixpath.dirname(joined + "x")).strip("/")
    rw = _Rewriter(
        root=root,
        page_dir="" if page_dir == "." else page_dir,
        manifest=manifest,
        loader_url=loader_url,
        algorithm=algorithm,
        remote_base=remote_base,
    )
    edits: list[tuple[int, int, str]] = []
    changes: list[TagChange] = []
    has_loader = False
    need_loader_at: int | None = None
    for off, raw, tag, attrs in scanner.tags:
        if text[off : off + len(raw)] != raw:  # pragma: no cover - parser invariant
            raise InputError("cannot locate a tag in the page", raw[:60])
        if tag == "script" and _get(attrs, "data-auraseal-loader") is not None:
            has_loader = True
        res = rw.rewrite(tag, attrs)
        if res is None:
            continue
        new_attrs, change = res
        changes.append(change)
        if new_attrs is None:
            continue
        if change.fallbacks and need_loader_at is None:
            need_loader_at = off
        new = _serialize(tag, new_attrs, raw.rstrip().endswith("/>"))
        if new != raw:
            edits.append((off, off + len(raw), new))
    loader_added = False
    if need_loader_at is not None and not has_loader:
        at = need_loader_at  # module scripts run in document order with deferred ones
        tag_text = _serialize(
            "script",
            [
                ("type", "module"),
                ("src", loader_url),
                ("integrity", loader_sri()),
                ("crossorigin", "anonymous"),
                ("data-auraseal-loader", None),
            ],
            False,
        )
        edits.append((at, at, tag_text + "</script>\n"))
        changes.append(TagChange("script", loader_url, "loader", loader_sri()))
        loader_added = True
    out: list[str] = []
    pos = 0
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1])):
        out.append(text[pos:start])
        out.append(new)
        pos = end
    out.append(text[pos:])
    return RewriteResult("".join(out), tuple(changes), loader_added)


def _is_absolute_url(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.scheme or parts.netloc or url.startswith("//"))


def rewrite_page(
    src: Path,
    *,
    root: Path | None = None,
    manifest_path: Path | None = None,
    loader_url: str = "/" + LOADER_NAME,
    algorithm: str = "sha512",
) -> RewriteResult:
    """Rewrite the page at ``src`` (nothing is written; see :func:`rewrite_file`).

    ``root`` (default: the page's directory) is the tree that local URLs are
    looked up in: ``/x.js`` is ``root/x.js``, ``x.js`` is next to the page.
    ``manifest_path`` names a manifest (any format AuraSeal reads) whose
    entries, by path below ``root`` or by ``url``, pin integrity.
    """
    src = Path(src)
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read the page: {exc.strerror}", str(src)) from exc
    root = Path(root) if root is not None else src.parent
    real_root = root.resolve()
    real_src = src.resolve()
    if real_root != real_src.parent and real_root not in real_src.parents:
        raise UnsafePathError("the page is not inside --root", str(src))
    page_dir = real_src.parent.relative_to(real_root).as_posix()
    manifest = read_manifest_file(manifest_path) if manifest_path is not None else None
    return rewrite_html(
        data.decode("utf-8", "surrogateescape"),
        root=real_root,
        page_dir="" if page_dir == "." else page_dir,
        manifest=manifest,
        loader_url=loader_url,
        algorithm=algorithm,
    )


def rewrite_file(
    src: Path,
    out: Path | None = None,
    *,
    root: Path | None = None,
    manifest_path: Path | None = None,
    loader_url: str = "/" + LOADER_NAME,
    algorithm: str = "sha512",
) -> RewriteResult:
    """Rewrite the page at ``src`` into ``out`` atomically (default: in place).

    On any error nothing is written.
    """
    result = rewrite_page(
        src, root=root, manifest_path=manifest_path, loader_url=loader_url, algorithm=algorithm
    )
    target = Path(out) if out is not None else Path(src)
    atomic_write_bytes(target, result.html.encode("utf-8", "surrogateescape"))
    return result
