"""File responses with the headers a CDN expects (a small, fast ASGI responder).

What every file response carries:

* a strong ``ETag`` derived from the content digest the manifest records
  (``"sha512-<hex>"``, ``"-gzip"`` appended for the gzip variant), and
  ``Last-Modified``;
* ``If-None-Match`` (weak comparison, ``*``) and ``If-Modified-Since`` → 304;
* ``Accept-Ranges: bytes``; one ``Range`` (``a-b``, ``a-``, suffix ``-n``) →
  206 with ``Content-Range``; an unsatisfiable or malformed byte range → 416
  with ``Content-Range: bytes */size``; ``If-Range`` honoured; several ranges
  are answered with the whole file (200), which RFC 9110 allows;
* ``Cache-Control`` chosen by the caller, ``X-Content-Type-Options: nosniff``;
* gzip for compressible types when the client asks (``Vary: Accept-Encoding``);
* HEAD: the same headers, no body.

Small files are cached in memory (verified against their digest when loaded);
a large file is hashed once per (inode, size, mtime) before it is first served,
then streamed in 1 MiB chunks, or handed to the server with the ASGI
``http.response.pathsend`` extension when the server offers it (granian).
A file whose bytes do not match its digest is never served:
:class:`~auraseal.errors.DigestMismatchError` is raised to the caller.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any

import anyio

from auraseal.errors import DigestMismatchError, StorageError
from auraseal.httpsig import digest_field, parse_want, repr_digest_for
from auraseal.integrity import hash_file, parse_integrity, verify_bytes

__all__ = [
    "COMPRESSIBLE",
    "MIME_TYPES",
    "FileCache",
    "RangeNotSatisfiable",
    "ServedFile",
    "content_type_for",
    "etag_for_integrity",
    "parse_range",
    "request_headers",
    "respond_cached",
    "send_file",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CHUNK = 1 << 20
#: Files up to this size are kept in memory (and gzip variants of them).
SMALL_FILE = 256 << 10
#: Largest body we gzip on the fly.
GZIP_MAX = 8 << 20
GZIP_MIN = 256

#: Extension → Content-Type, the same table the generated nginx config uses,
#: so the Python server and nginx label every file identically.
MIME_TYPES: dict[str, str] = {
    "html": "text/html",
    "htm": "text/html",
    "css": "text/css",
    "js": "application/javascript",
    "mjs": "application/javascript",
    "json": "application/json",
    "txt": "text/plain",
    "md": "text/plain",
    "xml": "text/xml",
    "svg": "image/svg+xml",
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "ico": "image/x-icon",
    "wasm": "application/wasm",
    "pdf": "application/pdf",
    "zip": "application/zip",
    "woff": "font/woff",
    "woff2": "font/woff2",
}
DEFAULT_TYPE = "application/octet-stream"
COMPRESSIBLE = frozenset(
    {
        "text/html",
        "text/css",
        "text/plain",
        "text/xml",
        "application/javascript",
        "application/json",
        "image/svg+xml",
    }
)


def content_type_for(name: str) -> str:
    """Content-Type by extension; part files (``x.part.3``) are octet streams."""
    base = name.rsplit("/", 1)[-1]
    if ".part." in base and base.rsplit(".", 1)[-1].isdigit():
        return DEFAULT_TYPE
    ext = base.rsplit(".", 1)[-1].lower() if "." in base else ""
    return MIME_TYPES.get(ext, DEFAULT_TYPE)


def etag_for_integrity(integrity: str) -> str:
    """A strong ETag from an integrity string: ``"<alg>-<first 40 hex of digest>"``."""
    integ = parse_integrity(integrity)
    return f'"{integ.algorithm}-{integ.digests[0].hex()[:40]}"'


class RangeNotSatisfiable(Exception):
    """The Range header cannot be satisfied for a body of ``size`` bytes (→ 416)."""

    def __init__(self, size: int) -> None:
        self.size = size
        super().__init__(f"range not satisfiable for {size} bytes")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Parse a ``Range`` header for a body of ``size`` bytes.

    Returns ``(first, last)`` inclusive for one satisfiable byte range, None when
    the header is to be ignored (another unit, several ranges), and raises
    :class:`RangeNotSatisfiable` for a malformed or unsatisfiable byte range.
    """
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    specs = [s.strip() for s in spec.split(",")]
    if len(specs) != 1:
        if all(specs):
            return None
        raise RangeNotSatisfiable(size)
    first_s, dash, last_s = specs[0].partition("-")
    first_s, last_s = first_s.strip(), last_s.strip()
    if not dash or (first_s and not first_s.isdigit()) or (last_s and not last_s.isdigit()):
        raise RangeNotSatisfiable(size)
    if len(first_s) > 19 or len(last_s) > 19:
        raise RangeNotSatisfiable(size)
    if not first_s:
        if not last_s:
            raise RangeNotSatisfiable(size)
        n = int(last_s)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - n), size - 1
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if first >= size or first > last:
        raise RangeNotSatisfiable(size)
    return first, min(last, size - 1)


def _etag_list(header: str) -> list[str]:
    return [t.strip().removeprefix("W/") for t in header.split(",") if t.strip()]


def _accepts_gzip(header: str) -> bool:
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            q = params.strip()
            if q.startswith("q="):
                try:
                    return float(q[2:]) > 0
                except ValueError:
                    return False
            return True
    return False


@dataclass(frozen=True)
class ServedFile:
    """One file to answer with: where it is and what it should be."""

    path: Path
    integrity: str
    etag: str
    content_type: str
    cache_control: str
    extra_headers: tuple[tuple[str, str], ...] = ()
    expected_size: int | None = None


class FileCache:
    """Verified small-file bodies (and their gzip variants), LRU by bytes.

    Keys include inode, size and mtime, so a replaced file is re-read and
    re-verified; ``verified`` remembers large files hashed once per key.
    """

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._bytes = 0
        self._verified: OrderedDict[tuple[Any, ...], None] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: tuple[Any, ...], data: bytes) -> None:
        if len(data) > self.max_bytes // 4:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._items[key] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes and self._items:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)

    def is_verified(self, key: tuple[Any, ...]) -> bool:
        with self._lock:
            return key in self._verified

    def mark_verified(self, key: tuple[Any, ...]) -> None:
        with self._lock:
            self._verified[key] = None
            while len(self._verified) > 4096:
                self._verified.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._verified.clear()
            self._bytes = 0


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _load_small(f: ServedFile, cache: FileCache) -> tuple[os.stat_result, bytes]:
    try:
        with open(f.path, "rb") as fh:
            st = os.fstat(fh.fileno())
            key = ("body", *_stat_key(st), f.integrity)
            data = cache.get(key)
            if data is None:
                data = fh.read()
                verify_bytes(data, f.integrity, str(f.path.name))
                cache.put(key, data)
    except OSError as exc:
        raise StorageError(f"cannot read: {exc.strerror}", f.path.name) from exc
    return st, data


def _verify_large(f: ServedFile, st: os.stat_result, cache: FileCache) -> None:
    key = ("verified", *_stat_key(st), f.integrity)
    if cache.is_verified(key):
        return
    if f.expected_size is not None and st.st_size != f.expected_size:
        raise DigestMismatchError(
            f"size {st.st_size} is not the recorded {f.expected_size}", f.path.name
        )
    integ = parse_integrity(f.integrity)
    digest = hash_file(f.path, integ.algorithm)
    verify_bytes_digest(digest, f.integrity, f.path.name)
    cache.mark_verified(key)


def verify_bytes_digest(digest: bytes, integrity: str, where: str) -> None:
    """Raise DigestMismatchError unless ``digest`` matches ``integrity``."""
    integ = parse_integrity(integrity)
    if not integ.matches(digest):
        raise DigestMismatchError("content does not match its recorded digest", where)


def _gzip_body(data: bytes, key: tuple[Any, ...], cache: FileCache) -> bytes:
    gkey = ("gzip", *key)
    out = cache.get(gkey)
    if out is None:
        out = gzip.compress(data, compresslevel=6, mtime=0)
        cache.put(gkey, out)
    return out


def _digest_headers(
    f: ServedFile, req: dict[str, str], zbody: bytes | None, key: tuple[Any, ...],
    cache: FileCache,
) -> list[tuple[bytes, bytes]]:
    """RFC 9530 ``Repr-Digest`` (from the recorded digest: no hashing), and, when
    gzip is applied, ``Repr-Digest`` and ``Content-Digest`` of the gzip bytes
    (the selected representation; hashed once per cached variant)."""
    want = parse_want(req["want-repr-digest"]) if "want-repr-digest" in req else None
    if zbody is None:
        value = repr_digest_for((f.integrity,), want)
        return [] if value is None else [(b"repr-digest", value.encode("latin-1"))]
    dkey = ("gzip-sha256", *key)
    digest = cache.get(dkey)
    if digest is None:
        digest = hashlib.sha256(zbody).digest()
        cache.put(dkey, digest)
    field = digest_field("sha256", digest).encode("latin-1")
    return [(b"repr-digest", field), (b"content-digest", field)]


def _not_modified(headers: dict[str, str], etags: Iterable[str], mtime: float) -> bool:
    inm = headers.get("if-none-match")
    if inm is not None:
        tags = _etag_list(inm)
        if "*" in tags:
            return True
        return any(t in tags for t in etags)
    ims = headers.get("if-modified-since")
    if ims is not None:
        try:
            since = parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
        return int(mtime) <= since
    return False


#: The request headers file responses look at (everything else is skipped).
_WANTED = {
    n.encode(): n
    for n in (
        "range", "if-none-match", "if-modified-since", "if-range", "accept-encoding",
        "want-repr-digest",
    )
}


def request_headers(scope: Scope) -> dict[str, str]:
    """The request headers that matter to a file response, names lower-cased,
    repeated headers joined with ``", "``."""
    out: dict[str, str] = {}
    for k, v in scope.get("headers", ()):
        name = _WANTED.get(k) or _WANTED.get(k.lower())
        if name is None:
            continue
        value = v.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _h(name: str, value: str) -> tuple[bytes, bytes]:
    return name.encode("latin-1"), value.encode("latin-1")


@functools.lru_cache(maxsize=4096)
def _http_date(seconds: int) -> bytes:
    return formatdate(seconds, usegmt=True).encode("latin-1")


def _last_modified(mtime: float) -> bytes:
    return _http_date(int(mtime))


def respond_cached(
    method: str,
    req: dict[str, str],
    f: ServedFile,
    cache: FileCache,
    st: os.stat_result | None = None,
) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
    """The whole response for a small file whose verified bytes are cached, or None.

    Synchronous and cheap (one ``stat``, none when ``st`` is given): the hot
    path for parts. Returns None when the bytes (or their gzip variant) are not
    in the cache, so the caller takes the general path, which loads and
    verifies them. What is sent is always bytes verified against ``f.integrity``.
    """
    if st is None:
        try:
            st = os.stat(f.path)
        except OSError:
            return None
    if st.st_size > SMALL_FILE:
        return None
    skey = (*_stat_key(st), f.integrity)
    body = cache.get(("body", *skey))
    if body is None:
        return None
    size = len(body)
    compressible = f.content_type in COMPRESSIBLE
    range_header = req.get("range")
    use_gzip = (
        compressible
        and GZIP_MIN <= size <= GZIP_MAX
        and range_header is None
        and _accepts_gzip(req.get("accept-encoding", ""))
    )
    if use_gzip:
        zbody = cache.get(("gzip", *skey))
        if zbody is None:
            return None
        body, size = zbody, len(zbody)
    etag = f.etag[:-1] + '-gzip"' if use_gzip else f.etag
    base: list[tuple[bytes, bytes]] = [
        (b"etag", etag.encode("latin-1")),
        (b"last-modified", _last_modified(st.st_mtime)),
        (b"cache-control", f.cache_control.encode("latin-1")),
        (b"accept-ranges", b"bytes"),
    ]
    if compressible:
        base.append((b"vary", b"Accept-Encoding"))
    base.extend(_h(k, v) for k, v in f.extra_headers)
    if ("if-none-match" in req or "if-modified-since" in req) and _not_modified(
        req, (etag, f.etag), st.st_mtime
    ):
        return 304, base, b""
    status, first, last = 200, 0, size - 1
    if range_header is not None and method == "GET":
        if_range = req.get("if-range")
        if if_range is None or if_range.strip() == f.etag:
            try:
                rng = parse_range(range_header, size)
            except RangeNotSatisfiable:
                hdrs = [*base, _h("content-range", f"bytes */{size}"), (b"content-length", b"0")]
                return 416, hdrs, b""
            if rng is not None:
                status, (first, last) = 206, rng
                base.append(_h("content-range", f"bytes {first}-{last}/{size}"))
    if use_gzip:
        base.append((b"content-encoding", b"gzip"))
    base.extend(_digest_headers(f, req, body if use_gzip else None, skey, cache))
    ctype = f.content_type + ("; charset=utf-8" if f.content_type.startswith("text/") else "")
    length = max(0, last - first + 1)
    headers = [(b"content-type", ctype.encode("latin-1")),
               (b"content-length", str(length).encode()), *base]
    if method == "HEAD":
        return status, headers, b""
    return status, headers, body if status == 200 else body[first : last + 1]


async def send_file(
    scope: Scope, receive: Receive, send: Send, f: ServedFile, cache: FileCache
) -> int:
    """Answer one GET/HEAD for ``f``; return the number of body bytes sent.

    Raises :class:`~auraseal.errors.DigestMismatchError` (nothing sent) when the
    stored bytes do not match their digest, and
    :class:`~auraseal.errors.StorageError` when the file cannot be read.
    """
    method = scope["method"]
    head_only = method == "HEAD"
    req = request_headers(scope)
    fast = respond_cached(method, req, f, cache)
    if fast is not None:
        status, hdrs, payload = fast
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        await send({"type": "http.response.body", "body": payload})
        return len(payload)
    try:
        st = await anyio.to_thread.run_sync(os.stat, f.path)
    except OSError as exc:
        raise StorageError(f"cannot read: {exc.strerror}", f.path.name) from exc
    size = st.st_size
    small = size <= SMALL_FILE
    body: bytes | None = None
    if small:
        st, loaded = await anyio.to_thread.run_sync(_load_small, f, cache)
        body = loaded
        size = len(loaded)
    else:
        await anyio.to_thread.run_sync(_verify_large, f, st, cache)

    compressible = f.content_type in COMPRESSIBLE
    use_gzip = (
        compressible
        and GZIP_MIN <= size <= GZIP_MAX
        and "range" not in req
        and _accepts_gzip(req.get("accept-encoding", ""))
    )
    etag = f.etag[:-1] + '-gzip"' if use_gzip else f.etag
    ctype = f.content_type + ("; charset=utf-8" if f.content_type.startswith("text/") else "")
    base: list[tuple[bytes, bytes]] = [
        _h("etag", etag),
        _h("last-modified", formatdate(st.st_mtime, usegmt=True)),
        _h("cache-control", f.cache_control),
        _h("accept-ranges", "bytes"),
    ]
    if compressible:
        base.append(_h("vary", "Accept-Encoding"))
    base.extend(_h(k, v) for k, v in f.extra_headers)

    if _not_modified(req, (etag, f.etag), st.st_mtime):
        await send({"type": "http.response.start", "status": 304, "headers": base})
        await send({"type": "http.response.body", "body": b""})
        return 0

    rng: tuple[int, int] | None = None
    range_header = req.get("range")
    if range_header is not None and method == "GET":
        if_range = req.get("if-range")
        if if_range is None or if_range.strip() == f.etag:
            try:
                rng = parse_range(range_header, size)
            except RangeNotSatisfiable:
                hdrs = [*base, _h("content-range", f"bytes */{size}"), _h("content-length", "0")]
                await send({"type": "http.response.start", "status": 416, "headers": hdrs})
                await send({"type": "http.response.body", "body": b""})
                return 0

    if use_gzip and body is None:
        body = await anyio.to_thread.run_sync(f.path.read_bytes)
        verify_bytes(body, f.integrity, f.path.name)
    if use_gzip and body is not None:
        key = (*_stat_key(st), f.integrity)
        zbody: bytes = await anyio.to_thread.run_sync(_gzip_body, body, key, cache)
        body = zbody
        size = len(zbody)
        base.append(_h("content-encoding", "gzip"))

    skey = (*_stat_key(st), f.integrity)
    base.extend(_digest_headers(f, req, body if use_gzip else None, skey, cache))
    status = 200
    first, last = 0, size - 1
    if rng is not None:
        status = 206
        first, last = rng
        base.append(_h("content-range", f"bytes {first}-{last}/{size}"))
    length = max(0, last - first + 1)
    headers = [_h("content-type", ctype), _h("content-length", str(length)), *base]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if head_only:
        await send({"type": "http.response.body", "body": b""})
        return 0
    if body is not None:
        await send({"type": "http.response.body", "body": body[first : last + 1]})
        return length
    if status == 200 and "http.response.pathsend" in scope.get("extensions", {}):
        await send({"type": "http.response.pathsend", "path": str(f.path)})
        return length
    return await _stream(send, f.path, first, length)


async def _stream(send: Send, path: Path, offset: int, length: int) -> int:
    sent = 0
    try:
        fh = await anyio.to_thread.run_sync(open, path, "rb")
    except OSError as exc:
        raise StorageError(f"cannot read: {exc.strerror}", path.name) from exc
    try:
        fd = fh.fileno()
        while sent < length:
            n = min(CHUNK, length - sent)
            chunk = await anyio.to_thread.run_sync(os.pread, fd, n, offset + sent)
            if not chunk:
                break
            sent += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": sent < length})
        if sent < length:
            await send({"type": "http.response.body", "body": b""})
    except OSError:
        return sent
    finally:
        fh.close()
    return sent
