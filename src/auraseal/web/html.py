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

import base64
import html
import posixpath
import re
from collections.abc import Mapping, Sequence
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
    UnverifiableScriptError,
    UsageError,
)
from auraseal.integrity import (
    AuraSealString,
    Integrity,
    SRIMetadata,
    hash_file,
    parse_integrity,
    parse_sri,
    sri_token,
)
from auraseal.manifest import Manifest, read_manifest_file
from auraseal.web import LOADER_NAME, loader_sri

__all__ = [
    "MODES",
    "RewriteResult",
    "TagChange",
    "rewrite_file",
    "rewrite_html",
    "rewrite_page",
]

#: What the rewriter pins: content (hash tokens), publisher (ed25519 tokens), or both.
MODES = ("hash", "signature", "both")


def _ed_tokens(keys: Sequence[bytes]) -> list[str]:
    out: list[str] = []
    for k in keys:
        tok = "ed25519-" + base64.b64encode(k).decode()
        if tok not in out:
            out.append(tok)
    return out

_LINK_RELS = frozenset({"stylesheet", "modulepreload", "preload"})
# A script runs if its type is a JavaScript MIME type essence (WHATWG MIME Sniffing
# §4.6) or "module"; no type means JavaScript, a lone ``language`` means "text/<language>".
_JS_TYPES = frozenset(
    {
        "",
        "module",
        "application/ecmascript",
        "application/javascript",
        "application/x-ecmascript",
        "application/x-javascript",
        "text/ecmascript",
        "text/javascript",
        "text/javascript1.0",
        "text/javascript1.1",
        "text/javascript1.2",
        "text/javascript1.3",
        "text/javascript1.4",
        "text/javascript1.5",
        "text/jscript",
        "text/livescript",
        "text/x-ecmascript",
        "text/x-javascript",
    }
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


def _script_type(attrs: Attrs) -> str:
    """The script's type string as browsers derive it (lowercased)."""
    typ = _get(attrs, "type")
    if typ is None:
        lang = _get(attrs, "language")
        typ = f"text/{lang}" if lang else ""
    return typ.strip(" \t\n\f\r").lower()


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


# What a browser's tokenizer does that ``html.parser`` (3.11) does not; the scanner
# follows the browser so that no tag a browser runs is hidden from it (WHATWG HTML
# §13.2.5 tokenization, §13.2.6.5 foreign content).
_RAW_TEXT = frozenset(
    {"script", "style", "xmp", "iframe", "noembed", "noframes", "noscript", "textarea", "title"}
)
_NEVER = re.compile(r"(?!)")
_COMMENT_END = re.compile(r"--!?>")
_SVG_HTML_POINTS = frozenset({"foreignobject", "desc", "title"})
_MATH_TEXT_POINTS = frozenset({"mi", "mo", "mn", "ms", "mtext"})
_BREAKOUT = frozenset(
    {
        "b", "big", "blockquote", "body", "br", "center", "code", "dd", "div", "dl", "dt", "em",
        "embed", "h1", "h2", "h3", "h4", "h5", "h6", "head", "hr", "i", "img", "li", "listing",
        "menu", "meta", "nobr", "ol", "p", "pre", "ruby", "s", "small", "span", "strong", "strike",
        "sub", "sup", "table", "tt", "u", "ul", "var",
    }
)


class _Scanner(HTMLParser):
    """Collects the start tags the rewriter cares about, with their offsets.

    Tokenizes like a browser where ``html.parser`` differs in ways that would
    hide a tag: comments end at ``-->``/``--!>`` (``<!-->`` is one), raw text
    ends at ``</name`` + space, ``/`` or ``>``, ``<![CDATA[`` is a bogus
    comment outside SVG/MathML. ``textarea``, ``title``, ``xmp``, ``iframe``,
    ``noembed``, ``noframes``, ``noscript`` and ``plaintext`` hold text in
    HTML, but inside SVG/MathML every element (``style``, ``script`` too)
    holds markup. Foreign content is tracked with a stack of SVG/MathML
    elements and their HTML integration points; where it is unsure, the
    scanner believes it is in foreign content, the side on which it sees more
    tags, never fewer.
    """

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self._line_starts = [0]
        for i, ch in enumerate(text):
            if ch == "\n":
                self._line_starts.append(i + 1)
        self.tags: list[tuple[int, int, str, str, Attrs]] = []  # offset, line, raw, tag, attrs
        self.head_end: int | None = None  # offset just after <head ...>
        self.base_href: str | None = None
        # open SVG/MathML elements as (namespace, name); "html" marks an integration point
        self._stack: list[tuple[str, str]] = []
        self._markup_inside = False  # html.parser must not make this script/style raw text

    def _offset(self) -> int:
        line, col = self.getpos()
        return self._line_starts[line - 1] + col

    @property
    def line(self) -> int:
        return self.getpos()[0]

    def _foreign(self) -> str | None:
        """The namespace (``svg``/``math``) new elements go into, or None for HTML."""
        if self._stack and self._stack[-1][0] != "html":
            return self._stack[-1][0]
        return None

    def _open(self, tag: str, attrs: Attrs, self_closing: bool) -> bool:
        """Track foreign content for a start tag; True if it is parsed as HTML."""
        ns = self._foreign()
        if ns is not None and (
            tag in _BREAKOUT
            or (tag == "font" and any(k in ("color", "face", "size") for k, _ in attrs))
        ):
            while self._stack and self._stack[-1][0] != "html":
                self._stack.pop()
            ns = None
        if ns is None:
            if tag in ("svg", "math") and not self_closing:
                self._stack.append((tag, tag))
            return True
        if self._stack[-1] == ("math", "annotation-xml") and tag == "svg":
            ns = "svg"
        if self_closing:
            return False
        if (ns == "svg" and tag in _SVG_HTML_POINTS) or (ns == "math" and (
            tag in _MATH_TEXT_POINTS
            or (tag == "annotation-xml"
                and (_get(attrs, "encoding") or "").lower()
                in ("text/html", "application/xhtml+xml"))
        )):
            self._stack.append(("html", tag))  # an HTML integration point
        else:
            self._stack.append((ns, tag))
        return False

    def handle_starttag(self, tag: str, attrs: Attrs, self_closing: bool = False) -> None:
        raw = self.get_starttag_text() or ""
        off = self._offset()
        html_rules = self._open(tag, attrs, self_closing)
        self._markup_inside = not html_rules and not self_closing
        if tag == "head" and self.head_end is None:
            self.head_end = off + len(raw)
        elif tag == "base" and self.base_href is None:
            self.base_href = _get(attrs, "href")
        elif tag in ("script", "link"):
            self.tags.append((off, self.line, raw, tag, list(attrs)))
        if html_rules:
            if tag in _RAW_TEXT:  # the self-closing flag does not apply to these
                self.set_cdata_mode(tag)
            elif tag == "plaintext":
                self.cdata_elem = tag
                self.interesting = _NEVER  # text up to the end of the page

    def handle_startendtag(self, tag: str, attrs: Attrs) -> None:
        self.handle_starttag(tag, attrs, self_closing=True)

    def handle_endtag(self, tag: str) -> None:
        if not self._stack:
            return
        if self._stack[-1][0] == "html":  # inside an integration point: only its end
            if self._stack[-1][1] == tag:
                self._stack.pop()
            return
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == "html":
                return
            if self._stack[i][1] == tag:
                del self._stack[i:]
                return

    # -- where html.parser and browsers disagree ---------------------------------

    def set_cdata_mode(self, elem: str, *, escapable: bool = False) -> None:
        if self._markup_inside:  # html.parser's call for <script>/<style> in SVG/MathML
            self._markup_inside = False
            return
        self.cdata_elem = elem.lower()
        self.interesting = re.compile(rf"</{self.cdata_elem}(?=[\t\n\f\r />])", re.I)

    def parse_endtag(self, i: int) -> int:
        if self.cdata_elem is not None:  # found by ``interesting``: the raw text ends
            gt = self.rawdata.find(">", i + 2)
            if gt < 0:
                return -1
            elem = self.cdata_elem
            self.clear_cdata_mode()
            self.handle_endtag(elem)
            return gt + 1
        return super().parse_endtag(i)

    def parse_comment(self, i: int, report: bool = True) -> int:
        rawdata = self.rawdata
        for empty in ("<!-->", "<!--->"):
            if rawdata.startswith(empty, i):
                return i + len(empty)
        m = _COMMENT_END.search(rawdata, i + 4)
        if m is None:
            return -1
        if report:
            self.handle_comment(rawdata[i + 4 : m.start()])
        return m.end()

    def parse_html_declaration(self, i: int) -> int:
        rawdata = self.rawdata
        if rawdata.startswith("<![", i):
            if self._foreign() is not None and rawdata.startswith("<![CDATA[", i):
                end = rawdata.find("]]>", i + 9)
                return -1 if end < 0 else end + 3
            return self.parse_bogus_comment(i)
        return super().parse_html_declaration(i)


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
        mode: str = "hash",
        sign_keys: Sequence[bytes] = (),
    ) -> None:
        self.remote_base = remote_base
        self.mode = mode
        self.sign_keys = tuple(sign_keys)
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

    def rewrite(
        self, tag: str, attrs: Attrs, where: str = "page"
    ) -> tuple[Attrs | None, TagChange] | None:
        if tag == "script":
            # how an SVG <script> loads code (href, xlink:href; in XML any prefix): no SRI
            for name, href in attrs:
                if name == "href" or name.endswith(":href"):
                    raise UnverifiableScriptError(
                        f"an SVG script loads code from {name}, which cannot carry integrity "
                        "(SRI); refusing to leave it unverified. Load it with an HTML "
                        "<script src> (verified natively) or the loader's loadScript()",
                        f"{where}: <script {name}={href or ''!r}>",
                    )
            url = _get(attrs, "src")
            if not url or _script_type(attrs) not in _JS_TYPES:
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
        # ed25519- tokens already on the tag are always kept
        native = _get(attrs, "integrity") or ""
        kept_keys = [] if native.strip().startswith("auraseal-") else list(
            parse_sri(native).signatures
        )
        keys = _ed_tokens([*kept_keys, *self.sign_keys])
        given_text = _get(attrs, "data-auraseal-integrity") or native
        if given_text is native and kept_keys and not parse_sri(native).tokens:
            given_text = ""  # signature-only: nothing pins the content
        given: Integrity | None = None
        if given_text.strip():
            given = parse_integrity(given_text, where)
        rel = self.local_path(url)
        if self.mode == "signature" and given is None and not (
            rel is None and url in self.by_url
        ) and (rel is None or rel not in self.by_path):
            # publisher only: no content to hash or pin
            return self._signed_only(tag, attrs, url, keys)
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
        if isinstance(integ, SRIMetadata):  # the hash part only: keys are added below
            sri = " ".join(str(t) for t in integ.tokens)
        aura = _auraseal_of(integ)
        if self.mode == "signature" and keys:
            sri, aura = "", ""
        sri = " ".join([sri, *keys]).strip()
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
            is_module = _script_type(attrs) == "module"
            _drop(out, "async")
            if not is_module and _get(out, "defer") is None:
                _set(out, "defer", None)
        return out, TagChange(tag, url, action, sri, aura, fallbacks)

    def _signed_only(
        self, tag: str, attrs: Attrs, url: str, keys: list[str]
    ) -> tuple[Attrs | None, TagChange]:
        if not keys:
            raise UsageError("--mode signature needs --sign-key (or ed25519- tokens)", url)
        return _signed_only_tag(tag, attrs, url, keys)


def _signed_only_tag(
    tag: str, attrs: Attrs, url: str, keys: list[str]
) -> tuple[Attrs, TagChange]:
    out: Attrs = list(attrs)
    sri = " ".join(keys)
    _set(out, "integrity", sri)
    cross = _get(attrs, "crossorigin")
    _set(out, "crossorigin", cross if cross in ("anonymous", "use-credentials") else "anonymous")
    _drop(out, "data-auraseal-integrity")
    return out, TagChange(tag, url, "signed", sri)


def rewrite_html(
    text: str,
    *,
    root: Path,
    page_dir: str = "",
    manifest: Manifest | None = None,
    loader_url: str = "/" + LOADER_NAME,
    algorithm: str = "sha512",
    source: str = "page",
    mode: str = "hash",
    sign_keys: Sequence[bytes] = (),
) -> RewriteResult:
    """Rewrite ``text`` (a page located at ``page_dir`` below ``root``).

    ``source`` names the page in errors (``source:line: <tag>``).
    ``mode`` (:data:`MODES`) chooses what ``integrity`` pins: ``hash`` (content),
    ``signature`` (``ed25519-<key>`` for each of ``sign_keys``: the publisher,
    valid across releases) or ``both``. ``ed25519-`` tokens a tag already has
    are always kept.

    Raises :class:`~auraseal.errors.StorageError` for a local file that cannot
    be read, :class:`~auraseal.errors.DigestMismatchError` for one that
    contradicts the integrity pinned for it, and
    :class:`~auraseal.errors.InputError` subclasses for malformed integrity
    strings, URLs leaving ``root`` and scripts no integrity can be enforced for
    (:class:`~auraseal.errors.UnverifiableScriptError`: an SVG ``<script href>``
    or ``xlink:href``). Nothing is returned half-rewritten.
    """
    if mode not in MODES:
        raise UsageError(f"mode must be one of {', '.join(MODES)}", "--mode")
    if mode == "both" and not sign_keys:
        raise UsageError("--mode both needs --sign-key", "--mode")
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
        mode=mode,
        sign_keys=sign_keys,
    )
    edits: list[tuple[int, int, str]] = []
    changes: list[TagChange] = []
    has_loader = False
    need_loader_at: int | None = None
    for off, line, raw, tag, attrs in scanner.tags:
        if text[off : off + len(raw)] != raw:  # pragma: no cover - parser invariant
            raise InputError("cannot locate a tag in the page", raw[:60])
        if tag == "script" and _get(attrs, "data-auraseal-loader") is not None:
            has_loader = True
        res = rw.rewrite(tag, attrs, f"{source}:{line}")
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
    mode: str = "hash",
    sign_keys: Sequence[bytes] = (),
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
        source=str(src),
        mode=mode,
        sign_keys=sign_keys,
    )


def rewrite_file(
    src: Path,
    out: Path | None = None,
    *,
    root: Path | None = None,
    manifest_path: Path | None = None,
    loader_url: str = "/" + LOADER_NAME,
    algorithm: str = "sha512",
    mode: str = "hash",
    sign_keys: Sequence[bytes] = (),
) -> RewriteResult:
    """Rewrite the page at ``src`` into ``out`` atomically (default: in place).

    On any error nothing is written.
    """
    result = rewrite_page(
        src, root=root, manifest_path=manifest_path, loader_url=loader_url, algorithm=algorithm,
        mode=mode, sign_keys=sign_keys,
    )
    target = Path(out) if out is not None else Path(src)
    atomic_write_bytes(target, result.html.encode("utf-8", "surrogateescape"))
    return result
