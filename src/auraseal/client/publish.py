"""Upload a sealed package to an ``auraseal serve`` (``PUT /packages/{name}``).

The publisher side of the workflow (docs/SERVER.md, "Publishing"): the
package is a sealed directory or its zip; a directory is streamed as a
ZIP_STORED archive straight into the request body (its exact length computed
up front; each file read once per attempt, no temp copy). Given a manifest file
(``integrity-manifest.json``, e.g. refreshed by ``auraseal resign``), only the
manifest is sent (``Content-Type: application/json``): the server makes a new
version from the files it already serves, if they are identical. The upload streams from
disk with a byte-progress callback, is retried on transient failures
(connection errors, 502/503/504) with back-off, and maps the server's
answers to one exception each:

* 201 published;
* 409 with the same manifest already served: nothing to do (idempotent);
* 409 for a manifest-only publish whose files differ from the served ones:
  :class:`PublishRefusedError` (exit 2; upload the whole package);
* 409 otherwise: :class:`~auraseal.errors.RollbackError` (exit 3);
* 401 / 403: :class:`PublishAuthError` (exit 3);
* 413: :class:`~auraseal.server.publish.PayloadTooLargeError`-like
  :class:`PublishTooLargeError` (exit 2);
* other 4xx: :class:`PublishRefusedError` (exit 2);
* 5xx after the retries, or no connection: :class:`~auraseal.errors.NetworkError` (exit 5).

Roots first: the roots of trust the package carries (``root/<N>.json`` in the
directory or zip, or beside a given ``integrity-manifest.json``; docs/KEYS.md)
are uploaded before the manifest, in ascending order, through the same
:func:`upload_root` as ``auraseal root install --to URL`` (a new manifest may
be signed by keys only the new root names). They are checked as a chain
first (each against the one before, the thresholds of both, as the server
and clients do), so a draft or a gap fails before anything is sent. A root
the server already serves with the same bytes is skipped; another root at
the same version is a :class:`~auraseal.errors.RollbackError` (exit 3) and
nothing more is sent.

The library never prints and reads no environment: the token is passed in.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import re
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from auraseal._fs import walk_files
from auraseal.errors import (
    InputError,
    ManifestFormatError,
    NetworkError,
    NotFoundError,
    RollbackError,
    StorageError,
    TrustError,
    UsageError,
)
from auraseal.manifest import MANIFEST_NAME, Manifest, is_trust_file, open_manifest
from auraseal.root import parse_root, verify_root
from auraseal.sealing.source import MemberSource

#: ``wrap(source) -> source``: sees every file read of a directory publish (tests)
SourceHook = Callable[[MemberSource], MemberSource]

__all__ = [
    "PublishAuthError",
    "PublishRefusedError",
    "PublishResult",
    "PublishTooLargeError",
    "RootUpload",
    "package_roots",
    "package_url",
    "publish_package",
    "publish_roots",
    "stored_zip_size",
    "upload_root",
]

CHUNK = 1 << 20
TRANSIENT = frozenset({502, 503, 504})
#: the largest root document sent (the server's limit for ``PUT .../root``)
MAX_ROOT_BYTES = 1 << 20
_ROOT_ENTRY = re.compile(r"^root/([1-9][0-9]{0,8})\.json$")


class PublishAuthError(TrustError):
    """The server refused the token (401) or the package's signatures (403)."""


class PublishTooLargeError(InputError):
    """The server's upload limit is smaller than the package (413)."""


class PublishRefusedError(InputError):
    """The server refused the package as malformed or unsafe (400 / 422)."""


@dataclass(frozen=True)
class PublishResult:
    """What a publish did: ``published`` or ``unchanged`` (same manifest already served)."""

    package: str
    version: int
    status: str
    url: str
    bytes: int
    ledger_entry: int | None = None
    roots: tuple[RootUpload, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "version": self.version,
            "status": self.status,
            "url": self.url,
            "bytes": self.bytes,
            "ledger_entry": self.ledger_entry,
            "roots": [r.to_dict() for r in self.roots],
        }


@dataclass(frozen=True)
class RootUpload:
    """One root a publish sent: ``uploaded``, or ``unchanged`` (already served)."""

    version: int
    status: str

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "status": self.status}


def package_url(server: str, name: str) -> str:
    """``SERVER/packages/NAME`` (``server`` may already end with ``/packages/NAME``)."""
    base = server.rstrip("/")
    if base.endswith(f"/packages/{name}"):
        return base
    if base.endswith("/packages"):
        return f"{base}/{name}"
    return f"{base}/packages/{name}"


def _read_manifest_of(zip_path: Path) -> bytes:
    try:
        with zipfile.ZipFile(zip_path) as zf:
            info = zf.getinfo(MANIFEST_NAME)
            if info.file_size > 64 << 20:
                raise ManifestFormatError("manifest too large", f"{zip_path}:{MANIFEST_NAME}")
            return zf.read(info)
    except KeyError as exc:
        raise ManifestFormatError("no manifest in the zip", str(zip_path)) from exc
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"not a readable zip: {exc}", str(zip_path)) from exc


def _is_manifest_file(source: Path) -> bool:
    """True if ``source`` is a manifest file (JSON), not a package zip or directory."""
    if not source.is_file():
        return False
    if source.name == MANIFEST_NAME:
        return True
    try:
        with open(source, "rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise StorageError(f"cannot read: {exc.strerror}", str(source)) from exc
    return head.lstrip()[:1] == b"{"


@dataclass
class _Upload:
    """What a publish sends: the manifest's bytes and a fresh body per attempt."""

    manifest: bytes
    #: ``body(parsed_manifest)``: the request body, read afresh for each attempt
    body: Callable[[Manifest], Iterator[bytes]]
    #: the body's length when known up front (a file); a directory is streamed
    size: int | None
    where: str


def _file_upload(source: Path, manifest_only: bool) -> _Upload:
    """A package zip or a manifest file, sent as it is."""
    if manifest_only:
        if source.stat().st_size > 64 << 20:
            raise ManifestFormatError("manifest too large", str(source))
        manifest = source.read_bytes()
    else:
        manifest = _read_manifest_of(source)

    def body(_: Manifest) -> Iterator[bytes]:
        with open(source, "rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk

    return _Upload(manifest, body, source.stat().st_size, str(source))


class _ZipSink:
    """A write-only stream zipfile writes into; :meth:`take` hands the bytes on."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes, /) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        out, self._parts = b"".join(self._parts), []
        return out


#: ZIP_STORED, forced zip64, streamed (data descriptors): fixed record sizes
_LOCAL_HEADER = 30 + 20  # header + zip64 extra (sizes)
_DATA_DESCRIPTOR = 24  # signature, CRC-32, 8-byte sizes
_CENTRAL_HEADER = 46
_END_RECORD = 22
_ZIP64_END = 56 + 20  # zip64 end record + locator


def stored_zip_size(members: list[tuple[str, int]]) -> int:
    """The exact size of the streamed zip of ``members`` (name, size) as
    :func:`_dir_upload` writes it, so the upload carries a Content-Length."""
    offset = 0
    central = 0
    for name, size in members:
        n = len(name.encode("utf-8"))
        zip64 = (2 if size > zipfile.ZIP64_LIMIT else 0) + (
            1 if offset > zipfile.ZIP64_LIMIT else 0)
        central += _CENTRAL_HEADER + n + (4 + 8 * zip64 if zip64 else 0)
        offset += _LOCAL_HEADER + n + size + _DATA_DESCRIPTOR
    big = (len(members) > zipfile.ZIP_FILECOUNT_LIMIT or offset > zipfile.ZIP64_LIMIT
           or central > zipfile.ZIP64_LIMIT)
    return offset + central + (_ZIP64_END if big else 0) + _END_RECORD


def _dir_upload(source: Path, wrap: SourceHook | None) -> _Upload:
    """A package directory streamed as a ZIP_STORED archive: each file is read
    once per attempt (through a :class:`~auraseal.sealing.source.MemberSource`)
    and its bytes go into the request body as they are read; no temp zip."""
    if not source.is_dir():
        raise NotFoundError("no such package directory or zip", str(source))
    mpath = source / MANIFEST_NAME
    if not mpath.is_file():
        raise UsageError(f"not a sealed package (no {MANIFEST_NAME})", str(source))
    try:
        manifest = mpath.read_bytes()
        # root/<N>.json and timestamp.json are not part of a version: roots
        # go up separately (publish_roots), the server keeps its own timestamp
        sizes = {p: len(manifest) if p == MANIFEST_NAME else (source / p).stat().st_size
                 for p in sorted(walk_files(source)) if not is_trust_file(p)}
    except OSError as exc:
        raise StorageError(f"cannot read: {exc.strerror}", str(exc.filename or mpath)) from exc

    def body(parsed: Manifest) -> Iterator[bytes]:
        from auraseal.sealing.package import Package  # noqa: PLC0415 - only for a directory

        tree = Package(str(source), parsed, root=source)
        src: MemberSource = wrap(tree) if wrap is not None else tree
        sink = _ZipSink()
        with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as zf:
            for name, size in sizes.items():
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o100644 << 16
                with zf.open(info, "w", force_zip64=True) as out:
                    for chunk in _member_chunks(src, name, size, manifest, source):
                        out.write(chunk)
                        yield sink.take()
                yield sink.take()
        yield sink.take()

    return _Upload(manifest, body, stored_zip_size(list(sizes.items())), str(source))


def _member_chunks(
    src: MemberSource, name: str, size: int, manifest: bytes, root: Path
) -> Iterator[bytes]:
    """Exactly ``size`` bytes of member ``name`` (its size when listed), each read once."""
    if name == MANIFEST_NAME:  # already read (and parsed) once: the same bytes
        yield manifest
        return
    read = src.reader(name)
    if read is None:
        raise StorageError("vanished while publishing", str(root / name))
    off = 0
    while off < size:
        chunk = bytes(read(off, min(CHUNK, size - off)))
        if not chunk:
            raise StorageError("shrank while publishing", str(root / name))
        off += len(chunk)
        yield chunk


def _error_text(resp: httpx.Response) -> str:
    try:
        doc = resp.json()
        msg = doc["error"]["message"]
        if isinstance(msg, str) and msg:
            return msg.splitlines()[0][:300]
    except (ValueError, KeyError, TypeError):
        pass
    return f"HTTP {resp.status_code}"


def _error_type(resp: httpx.Response) -> str:
    try:
        value = resp.json()["error"]["type"]
    except (ValueError, KeyError, TypeError):
        return ""
    return value if isinstance(value, str) else ""


def _root_version(rel: str) -> int | None:
    m = _ROOT_ENTRY.match(rel)
    return int(m.group(1)) if m else None


def package_roots(source: Path) -> list[tuple[int, bytes]]:
    """The roots ``source`` carries, ascending: ``root/<N>.json`` in a package
    directory or zip, or beside a given ``integrity-manifest.json``."""
    source = Path(source)
    found: dict[int, bytes] = {}
    try:
        if source.is_dir() or (source.is_file() and source.name == MANIFEST_NAME):
            d = (source if source.is_dir() else source.parent) / "root"
            entries = sorted(d.iterdir()) if d.is_dir() else []
            for p in entries:
                v = _root_version(f"root/{p.name}")
                if v is None or not p.is_file():
                    continue
                if p.stat().st_size > MAX_ROOT_BYTES:
                    raise InputError(f"root larger than {MAX_ROOT_BYTES} bytes", str(p))
                found[v] = p.read_bytes()
        elif source.is_file() and not _is_manifest_file(source):
            with zipfile.ZipFile(source) as zf:
                for info in zf.infolist():
                    v = _root_version(info.filename)
                    if v is None:
                        continue
                    if info.file_size > MAX_ROOT_BYTES:
                        raise InputError(f"root larger than {MAX_ROOT_BYTES} bytes",
                                         f"{source}:{info.filename}")
                    found[v] = zf.read(info)
    except zipfile.BadZipFile as exc:
        raise InputError(f"not a readable zip: {exc}", str(source)) from exc
    except OSError as exc:
        raise StorageError(f"cannot read: {exc.strerror}", str(source)) from exc
    return sorted(found.items())


def _check_chain(roots: list[tuple[int, bytes]], where: str) -> None:
    """Each root parses and names its own version; version 1 verifies on its
    own, each next one against the one before (thresholds of both): the
    server's check, done before anything is sent. No gaps."""
    prev = None
    for i, (v, data) in enumerate(roots):
        at = f"{where}/root/{v}.json"
        root, _doc = parse_root(data, at)
        if root.version != v:
            raise InputError(f"file names version {v}, the root says {root.version}", at)
        if i and v != roots[i - 1][0] + 1:
            raise InputError(f"root v{roots[i - 1][0] + 1} is missing before v{v}", at)
        if prev is not None or v == 1:
            verify_root(data, prev, where=at, check_expiry=False)
        prev = root


def upload_root(
    server: str, package: str, data: bytes, token: str, *, timeout: float = 60.0,
    transport: httpx.BaseTransport | None = None, client: httpx.Client | None = None,
) -> dict[str, Any]:
    """PUT a root to ``SERVER/packages/<package>/root`` (docs/KEYS.md);
    return the server's answer (``{"package", "root", "version"}``)."""
    url = package_url(server, package) + "/root"
    own = httpx.Client(timeout=timeout, transport=transport) if client is None else None
    http = client or own
    assert http is not None
    try:
        resp = http.put(url, content=data, headers={
            "authorization": f"Bearer {token}", "content-type": "application/json"})
    except httpx.HTTPError as exc:
        raise NetworkError(f"request failed: {type(exc).__name__}: {exc}", url) from exc
    finally:
        if own is not None:
            own.close()
    try:
        answer = resp.json()
    except ValueError:
        answer = {}
    if resp.status_code == 201 and isinstance(answer, dict):
        return answer
    err = answer.get("error", {}) if isinstance(answer, dict) else {}
    msg = str(err.get("message") or f"HTTP {resp.status_code}")[:300]
    if resp.status_code in (401, 403):
        raise TrustError(msg, url)
    if resp.status_code == 409:
        raise RollbackError(msg, url)
    if 400 <= resp.status_code < 500:
        raise InputError(msg, url)
    raise NetworkError(f"server answered {resp.status_code}: {msg}", url)


def publish_roots(
    roots: list[tuple[int, bytes]], server: str, package: str, token: str,
    *, client: httpx.Client,
) -> tuple[RootUpload, ...]:
    """Upload ``roots`` (ascending) unless the server already serves them
    with the same bytes; another root at the same version is a
    :class:`RollbackError`. Check the chain first with :func:`package_roots`'s
    output through ``_check_chain`` (``publish_package`` does)."""
    url = package_url(server, package)
    done = []
    for v, data in roots:
        try:
            resp = client.get(f"{url}/files/root/{v}.json")
        except httpx.HTTPError as exc:
            raise NetworkError(f"request failed: {type(exc).__name__}: {exc}", url) from exc
        if resp.status_code == 200:
            if not hmac.compare_digest(resp.content, data):
                raise RollbackError(
                    f"the server already has another root v{v}", f"{url}/files/root/{v}.json"
                )
            done.append(RootUpload(v, "unchanged"))
            continue
        upload_root(server, package, data, token, client=client)
        done.append(RootUpload(v, "uploaded"))
    return tuple(done)


def publish_package(
    source: Path,
    server: str,
    token: str,
    *,
    client: httpx.Client | None = None,
    progress: Callable[[int], None] | None = None,
    restart: Callable[[], None] | None = None,
    retries: int = 3,
    backoff: float = 0.5,
    timeout: float = 60.0,
    wrap: SourceHook | None = None,
) -> PublishResult:
    """Upload the package at ``source`` to ``server``; see the module docstring.

    A package directory is streamed as a zip (no temp copy): each file is read
    once per attempt. ``wrap`` (a test seam) wraps the member source those
    reads go through (e.g. a :class:`~auraseal.sealing.source.CountingSource`).

    ``progress(nbytes)`` is called as bytes are sent; ``restart()`` before a
    retry re-sends from the start (so a progress bar can be reset).
    """
    source = Path(source)
    if not token or any(c.isspace() for c in token):
        raise UsageError("empty or malformed publish token", "token")
    manifest_only = _is_manifest_file(source)
    roots = package_roots(source)
    _check_chain(roots, str(source))
    up = (_file_upload(source, manifest_only) if source.is_file()
          else _dir_upload(source, wrap))
    vm = open_manifest(up.manifest, str(source))
    manifest = vm.manifest
    url = package_url(server, manifest.name)
    own = httpx.Client(timeout=timeout) if client is None else None
    http = client or own
    assert http is not None
    try:
        sent = publish_roots(roots, server, manifest.name, token, client=http)
        resp, size = _put_with_retries(
            http, url, token, up, manifest,
            progress=progress, restart=restart, retries=retries, backoff=backoff,
            content_type="application/json" if manifest_only else "application/zip",
        )
        if resp.status_code in (200, 201):
            entry = None
            with contextlib.suppress(ValueError, AttributeError):
                value = resp.json().get("ledger_entry")
                entry = value if isinstance(value, int) else None
            return PublishResult(
                manifest.name, manifest.version, "published", url, size, entry, sent
            )
        if resp.status_code == 409:
            if _served_manifest_is(http, url, vm.digest):
                return PublishResult(
                    manifest.name, manifest.version, "unchanged", url, 0, None, sent
                )
            if _error_type(resp) == "FilesDifferError":
                raise PublishRefusedError(_error_text(resp), url)
            raise RollbackError(_error_text(resp), url)
        if resp.status_code in (401, 403):
            raise PublishAuthError(_error_text(resp), url)
        if resp.status_code == 413:
            raise PublishTooLargeError(_error_text(resp), url)
        if 400 <= resp.status_code < 500:
            raise PublishRefusedError(_error_text(resp), url)
        raise NetworkError(f"server answered {resp.status_code}: {_error_text(resp)}", url)
    finally:
        if own is not None:
            own.close()


def _put_with_retries(
    http: httpx.Client,
    url: str,
    token: str,
    up: _Upload,
    manifest: Manifest,
    *,
    progress: Callable[[int], None] | None,
    restart: Callable[[], None] | None,
    retries: int,
    backoff: float,
    content_type: str = "application/zip",
) -> tuple[httpx.Response, int]:
    """PUT the upload (retrying transient failures); the answer and the bytes sent."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    if up.size is not None:
        headers["Content-Length"] = str(up.size)
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * (2 ** (attempt - 1)))
            if restart is not None:
                restart()
        sent = [0]

        def counted(sent: list[int] = sent) -> Iterator[bytes]:
            for chunk in up.body(manifest):
                if not chunk:
                    continue
                sent[0] += len(chunk)
                if progress is not None:
                    progress(len(chunk))
                yield chunk

        try:
            resp = http.put(url, content=counted(), headers=headers)
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            continue
        except OSError as exc:
            raise StorageError(f"cannot read: {exc.strerror}", up.where) from exc
        if resp.status_code in TRANSIENT:
            last = f"server answered {resp.status_code}"
            continue
        return resp, sent[0]
    raise NetworkError(f"publish failed after {retries + 1} attempts: {last}", url)


def _served_manifest_is(http: httpx.Client, url: str, digest: str) -> bool:
    """True if the server already serves a manifest with this digest."""
    try:
        resp = http.get(f"{url}/files/{MANIFEST_NAME}")
    except httpx.TransportError:
        return False
    if resp.status_code != 200:
        return False
    try:
        served = open_manifest(resp.content, url)
    except (ManifestFormatError, InputError, json.JSONDecodeError):
        return False
    return hmac.compare_digest(served.digest, digest)


def load_token(path: Path | None, env_value: str | None) -> str:
    """The token from ``path`` (first non-empty line) or the given environment value."""
    if path is not None:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise StorageError(f"cannot read token file: {exc.strerror}", str(path)) from exc
        for line in text.splitlines():
            if line.strip():
                return line.strip()
        raise UsageError("token file is empty", str(path))
    if env_value:
        return env_value.strip()
    raise UsageError("no publish token: give --token-file F or set AURASEAL_TOKEN", "token")


