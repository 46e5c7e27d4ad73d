"""The ASGI application: ``create_app(config) -> Starlette`` (routes in ``docs/SERVER.md``)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import AsyncIterator, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from auraseal._fs import safe_relpath, temp_name
from auraseal.errors import (
    AuraSealError,
    DigestMismatchError,
    InputError,
    IntegrityError,
    NotFoundError,
    RollbackError,
    StorageError,
    TrustError,
    UnrecoverableError,
)
from auraseal.manifest import MANIFEST_NAME, VerifiedManifest, part_name
from auraseal.server.archive import build_archive, invalidate_archives
from auraseal.server.config import STATE_DIR, ServerConfig, check_package_name
from auraseal.server.freshness import freshness_response, install_root
from auraseal.server.ledger_port import LedgerPort
from auraseal.server.ledgerproof import LEDGER_PROOF_NAME, ledger_proof, remember_publish
from auraseal.server.logs import ServerLog
from auraseal.server.metrics import CONTENT_TYPE as METRICS_TYPE
from auraseal.server.openapi import openapi_document
from auraseal.server.publish import (
    MAX_MANIFEST_BYTES,
    ExtractLimits,
    FilesDifferError,
    PayloadTooLargeError,
    TokenSet,
    check_manifest_update,
    check_package,
    check_version,
    open_upload_manifest,
)
from auraseal.server.reports import EVENT_TYPE as REPORT_EVENT
from auraseal.server.reports import (
    MAX_REPORT_BYTES,
    ReportLimiter,
    integrity_policy_headers,
    report_events,
)
from auraseal.server.sessions import OperatorAuth
from auraseal.server.state import ServerState
from auraseal.server.static import (
    COMPRESSIBLE,
    Receive,
    Scope,
    Send,
    ServedFile,
    etag_for_integrity,
    request_headers,
    respond_cached,
    send_file,
)
from auraseal.server.store import UPLOAD_KIND, PackageView, Resource, ViewKey, view_key
from auraseal.signing import TrustState

__all__ = ["CSP", "create_app"]

#: Content-Security-Policy of the server's own HTML pages (the dashboard).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
EXPOSE = (
    "ETag, Content-Length, Content-Range, Accept-Ranges, Content-Encoding, X-AuraSeal-Version, "
    "Unencoded-Digest, Signature-Input, Signature, Repr-Digest, Content-Digest"
)
IMMUTABLE = "public, max-age=31536000, immutable"
_FAST_PATH = re.compile(r"^/packages/([A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*)/files/(.+)$")
DEFAULT_COHERENCE = 0.954
MAX_ENTRY_BYTES = 1 << 20
#: Deepest nesting of arrays/objects accepted in a JSON request body.
MAX_JSON_DEPTH = 64
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
#: An answer of the hot path: status, headers, body and, when the response may
#: be replayed, (manifest path, key of the version it came from).
FastHit = tuple[int, list[tuple[bytes, bytes]], bytes, "tuple[str, ViewKey] | None"]


def _error_status(exc: AuraSealError) -> int:
    if isinstance(exc, PayloadTooLargeError):
        return 413
    if isinstance(exc, FilesDifferError):
        return 409
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, RollbackError):
        return 409
    if isinstance(exc, TrustError):
        return 403
    if isinstance(exc, InputError):
        return 400
    if isinstance(exc, IntegrityError | UnrecoverableError):
        return 422
    return 503


def error_response(exc: AuraSealError, status: int | None = None) -> JSONResponse:
    code = status or _error_status(exc)
    body = {"error": {"type": type(exc).__name__, "message": str(exc)}}
    return JSONResponse(body, status_code=code)


def _plain_error(status: int, message: str, **extra: str) -> JSONResponse:
    return JSONResponse({"error": {"type": "HTTPError", "message": message}}, status, extra)


def _json_depth_ok(raw: bytes, limit: int) -> bool:
    """True if no array/object in ``raw`` nests deeper than ``limit`` (strings skipped)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return True  # the common case, at C speed
    depth = 0
    in_str = False
    escaped = False
    for byte in raw:
        if in_str:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_str = False
        elif byte == 0x22:
            in_str = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return False
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return True


def parse_json_body(raw: bytes, where: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a JSON request body; InputError (400) for bad JSON or nesting deeper
    than ``max_depth`` (checked before parsing, so the parser never recurses deeply)."""
    if not _json_depth_ok(raw, max_depth):
        raise InputError(f"JSON nested deeper than {max_depth} levels", where)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InputError("body must be JSON", where) from exc


class _FileResponse(Response):
    """A Response that answers through :func:`send_file` (ETag, Range, gzip, ...)."""

    def __init__(
        self, state: ServerState, name: str, served: ServedFile,
        rebuild: Callable[[], ServedFile] | None = None,
    ) -> None:
        super().__init__()
        self._state = state
        self._name = name
        self._served = served
        #: for a derived file (the archive): make it anew when it fails or vanished
        self._rebuild = rebuild

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        for attempt in (0, 1):
            try:
                await send_file(scope, receive, tracking_send, self._served, self._state.cache)
                return
            except DigestMismatchError as exc:
                self._state.metrics.inc("auraseal_verification_failures_total")
                if started:
                    return
                if attempt == 0:
                    # Scrub on a failed read: repair from parity, then try once more.
                    with contextlib.suppress(AuraSealError):
                        await self._state.verify_package(self._name)
                    self._state.cache.clear()
                    await self._remake()
                    continue
                resp = error_response(exc, 503)
                await resp(scope, receive, send)
                return
            except StorageError as exc:
                if started:
                    return
                if attempt == 0 and await self._remake():
                    continue
                await error_response(exc, 404)(scope, receive, send)
                return

    async def _remake(self) -> bool:
        """Build a derived file again (after it was invalidated meanwhile); False if none."""
        if self._rebuild is None:
            return False
        try:
            self._served = await anyio.to_thread.run_sync(self._rebuild)
        except AuraSealError:
            return False
        return True


def _served(
    state: ServerState, view: PackageView, res: Resource, cache_control: str
) -> ServedFile:
    path = view.path_of(res)
    real = os.path.realpath(path)
    if not real.startswith(str(view.dir) + os.sep):
        raise NotFoundError("file resolves outside the package", f"{view.name}/{res.rel}")
    return ServedFile(
        path=Path(real),
        integrity=res.integrity,
        etag=res.etag,
        content_type=res.content_type,
        cache_control=cache_control,
        extra_headers=(("x-auraseal-version", str(view.version)), *res.signature_headers),
        expected_size=res.size,
    )


def _cache_control(config: ServerConfig, res: Resource, versioned: bool) -> str:
    if versioned:
        return IMMUTABLE
    if res.kind == "manifest":
        return f"public, max-age={config.manifest_max_age}"
    return "public, no-cache"


def _name(request: Request) -> str:
    name = str(request.path_params["name"])
    if not check_package_name(name):
        raise NotFoundError("no such package", name[:80])
    return name


def _rel(raw: str) -> str:
    return safe_relpath(raw, "path")


class Handlers:
    """Route endpoints bound to one :class:`ServerState`."""

    def __init__(self, state: ServerState, tokens: TokenSet) -> None:
        self.state = state
        self.tokens = tokens
        self.report_limiter = ReportLimiter()

    # --- packages -------------------------------------------------------------------

    def fast_file(self, scope: Scope, req: dict[str, str]) -> FastHit | None:
        """The hot path: a cached small file of a loaded package, answered without
        routing or worker threads; None sends the request down the general path.

        The last item of the answer says whether it may be replayed: for a
        request without conditional, range, digest or (for a compressible type)
        encoding headers, the manifest path and :data:`~auraseal.server.store.ViewKey`
        of the version it came from (see :class:`EdgeMiddleware`); else None."""
        m = _FAST_PATH.match(scope.get("path", ""))
        if m is None:
            return None
        name, rel = m.group(1), m.group(2)
        hit = self.state.store.cached_view_key(name)
        if hit is None:
            return None
        view, key = hit
        method = scope["method"]
        served = view.memo.get(("current", rel))
        if served is None:
            res = view.resources.get(rel)
            if res is None:
                return None
            try:
                cc = _cache_control(self.state.config, res, False)
                served = _served(self.state, view, res, cc)
            except AuraSealError:
                return None
            view.memo[("current", rel)] = served
        # The stat of a file already served from this (immutable) version is
        # remembered: the cached bytes are verified against the manifest, so
        # they are right whatever happens on disk meanwhile.
        st = view.memo.get(("stat", rel))
        if st is None:
            try:
                st = os.stat(served.path)
            except OSError:
                return None
        result = respond_cached(method, req, served, self.state.cache, st)
        if result is None:
            return None
        view.memo[("stat", rel)] = st
        plain = not req or (
            served.content_type not in COMPRESSIBLE and req.keys() == {"accept-encoding"}
        )
        token = (self.state.store.manifest_path(name), key) if plain else None
        return result[0], result[1], result[2], token

    async def list_packages(self, request: Request) -> Response:
        pkgs = await anyio.to_thread.run_sync(self.state.packages)
        return JSONResponse({"packages": pkgs}, headers={"cache-control": "no-cache"})

    async def _file(
        self, request: Request, view: PackageView, rel: str, versioned: bool
    ) -> Response:
        res = view.resource(rel)
        cc = _cache_control(self.state.config, res, versioned)
        return _FileResponse(self.state, view.name, _served(self.state, view, res, cc))

    async def manifest(self, request: Request) -> Response:
        view = await anyio.to_thread.run_sync(self.state.store.get, _name(request))
        return await self._file(request, view, MANIFEST_NAME, False)

    async def package_file(self, request: Request) -> Response:
        name = _name(request)
        rel = _rel(str(request.path_params["path"]))
        view = await anyio.to_thread.run_sync(self.state.store.get, name)
        if rel == LEDGER_PROOF_NAME and rel not in view.resources:
            bundle = await anyio.to_thread.run_sync(
                ledger_proof, self.state.config.root, name, view.version, self._ledger())
            return JSONResponse(bundle, headers={"cache-control": "no-cache"})
        if rel not in view.resources:  # root/<N>.json, timestamp.json (server/freshness.py)
            fresh = freshness_response(self.state.config.root, name, rel)
            if fresh is not None:
                return fresh
        return await self._file(request, view, rel, False)

    async def versions(self, request: Request) -> Response:
        name = _name(request)
        kept = await anyio.to_thread.run_sync(self.state.store.versions, name)
        return JSONResponse({"package": name, "current": kept[-1], "versions": kept},
                            headers={"cache-control": "no-cache"})

    async def _version(self, request: Request) -> PackageView:
        name = _name(request)
        raw = str(request.path_params["version"])
        if not raw.isdigit() or len(raw) > 18:
            raise NotFoundError("no such version", f"{name}@{raw[:20]}")
        return await anyio.to_thread.run_sync(self.state.store.get_version, name, int(raw))

    async def versioned_manifest(self, request: Request) -> Response:
        view = await self._version(request)
        return await self._file(request, view, MANIFEST_NAME, True)

    async def versioned_file(self, request: Request) -> Response:
        view = await self._version(request)
        rel = _rel(str(request.path_params["path"]))
        return await self._file(request, view, rel, True)

    async def part_by_number(self, request: Request) -> Response:
        name = _name(request)
        raw = str(request.path_params["part"])
        if not raw.isdigit() or int(raw) > 255:
            raise InputError("partNumber must be an integer 0..255", "partNumber")
        view = await anyio.to_thread.run_sync(self.state.store.get, name)
        sealed = [f for f in view.manifest.files if f.recovery is not None]
        comp = request.query_params.get("component")
        if comp is not None:
            entry = next((f for f in sealed if f.path == _rel(comp)), None)
            if entry is None:
                raise NotFoundError("no such sealed component", f"{name}/{comp[:200]}")
        elif len(sealed) == 1:
            entry = sealed[0]
        else:
            raise InputError(
                f"package has {len(sealed)} sealed components; add ?component=PATH", "component"
            )
        assert entry.recovery is not None
        if int(raw) >= len(entry.recovery.parts):
            raise NotFoundError("no such part", f"{name}/{entry.path}#{raw}")
        return await self._file(request, view, part_name(entry.path, int(raw)), False)

    async def archive(self, request: Request) -> Response:
        name = _name(request)
        raw = request.query_params.get("coherence", str(DEFAULT_COHERENCE))
        try:
            coherence = float(raw)
        except ValueError:
            coherence = math.nan
        if not (0.0 <= coherence <= 1.0):
            raise InputError("coherence must be a number between 0 and 1", "coherence")
        view = await anyio.to_thread.run_sync(self.state.store.get, name)
        health = self.state.health(name)
        if health is None or health.version != view.version or health.state != "intact":
            health = await self.state.verify_package(name)
        if health.state != "intact" or health.min_coherence() < coherence:
            return JSONResponse(
                {
                    "error": {
                        "type": "ComponentLostError",
                        "message": "the stored package is below the requested coherence",
                    },
                    "package": name,
                    "version": view.version,
                    "requested_coherence": coherence,
                    "components": [c.to_dict() for c in health.components],
                },
                status_code=503,
                headers={"retry-after": "60"},
            )
        try:
            served = await anyio.to_thread.run_sync(self._archive_file, view)
        except DigestMismatchError:
            # A stored byte went bad since the last scrub: repair, then build again.
            self.state.metrics.inc("auraseal_verification_failures_total")
            await self.state.verify_package(name)
            view = await anyio.to_thread.run_sync(self.state.store.get, name)
            try:
                served = await anyio.to_thread.run_sync(self._archive_file, view)
            except DigestMismatchError as exc:
                return error_response(exc, 503)
        return _FileResponse(self.state, name, served,
                             rebuild=lambda: self._archive_file(view, fresh=True))

    def _archive_file(self, view: PackageView, fresh: bool = False) -> ServedFile:
        """The package as a zip built from verified bytes (once, shared by all workers);
        ``fresh``: drop the cached one first (it failed its own digest check)."""
        if fresh:
            invalidate_archives(self.state.config.root, view.name)
        zpath, integrity = build_archive(self.state.config.root, view)
        return ServedFile(
            path=zpath,
            integrity=integrity,
            etag=etag_for_integrity(integrity),
            content_type="application/zip",
            cache_control="public, no-cache",
            extra_headers=(
                ("x-auraseal-version", str(view.version)),
                ("content-disposition",
                 f'attachment; filename="{view.name}-{view.version}.zip"'),
            ),
        )

    # --- publish --------------------------------------------------------------------

    def _authorize(self, request: Request) -> Response | None:
        if not self.tokens.check(request.headers.get("authorization")):
            return _plain_error(
                401, "missing or invalid bearer token",
                **{"www-authenticate": 'Bearer realm="auraseal"'},
            )
        return None

    async def publish(self, request: Request) -> Response:
        denied = self._authorize(request)
        if denied is not None:
            self.state.metrics.inc("auraseal_publishes_total", result="unauthorized")
            return denied
        name = str(request.path_params["name"])
        if not check_package_name(name):
            raise InputError("invalid package name", name[:80])
        cfg = self.state.config
        declared = request.headers.get("content-length")
        too_big = declared is not None and (
            not declared.isdigit() or int(declared) > cfg.max_upload_bytes
        )
        if too_big:
            raise PayloadTooLargeError(f"upload larger than {cfg.max_upload_bytes} bytes", name)
        lock = self.state.publish_locks.setdefault(name, anyio.Lock())
        upload_dir = cfg.root.resolve() / STATE_DIR / "uploads"
        upload_dir.mkdir(parents=True, exist_ok=True)
        upload = upload_dir / temp_name(name, UPLOAD_KIND)
        try:
            received = 0
            with open(upload, "xb") as out:
                try:
                    async for chunk in request.stream():
                        received += len(chunk)
                        if received > cfg.max_upload_bytes:
                            raise PayloadTooLargeError(
                                f"upload larger than {cfg.max_upload_bytes} bytes", name
                            )
                        out.write(chunk)
                except ClientDisconnect as exc:
                    raise InputError("upload stopped before the end", name) from exc
            if declared is not None and received != int(declared):
                raise InputError("upload shorter than its Content-Length", name)
            manifest_only = _is_manifest_upload(request.headers.get("content-type"), upload)
            if manifest_only and received > MAX_MANIFEST_BYTES:
                raise PayloadTooLargeError(
                    f"manifest larger than {MAX_MANIFEST_BYTES} bytes", name
                )
            sync = self._publish_manifest_sync if manifest_only else self._publish_sync
            async with lock:
                vm = await anyio.to_thread.run_sync(sync, name, upload)
                self.state.cache.clear()
            manifest = vm.manifest
            event = self.state.record_event(
                "publish",
                {"package": name, "version": manifest.version, "files": len(manifest.files),
                 "bytes": received, "manifest_sha256": vm.digest,
                 "manifest_only": manifest_only},
            )
            if event.get("entry_id"):
                await anyio.to_thread.run_sync(
                    remember_publish, cfg.root, name, manifest.version, event["entry_id"])
            self.state.metrics.inc("auraseal_publishes_total", result="ok")
            # every byte was checked on its way in (server/publish.py): no scrub reads it again
            self.state.mark_published(name, manifest)
            return JSONResponse(
                {"package": name, "version": manifest.version,
                 "ledger_entry": event.get("entry_id")},
                status_code=201,
            )
        except AuraSealError:
            self.state.metrics.inc("auraseal_publishes_total", result="refused")
            raise
        finally:
            with contextlib.suppress(OSError):
                upload.unlink()

    def _publish_sync(self, name: str, upload: Path) -> VerifiedManifest:
        """Unpack and check ``upload``, then install it under the cross-process
        publish lock of ``name`` (worker processes share ROOT): the version is
        checked again under the lock, so a slower publish of a lower or equal
        version answers 409 instead of replacing what another worker installed."""
        store = self.state.store
        staging: Path | None = store.staging_dir(name)
        assert staging is not None
        try:
            vm = self._check_upload(name, upload, staging)
            with store.lock("publish", name):
                check_version(name, vm, current_version=store.current_version(name),
                              state=self._trust_state())
                store.install(name, staging, vm.manifest.version)
                staging = None
                if self.state.config.trusted_keys:
                    self._trust_state().record(name, vm.manifest.version, vm.digest)
        finally:
            if staging is not None:
                store.discard(staging)
        invalidate_archives(self.state.config.root, name)
        return vm

    def _publish_manifest_sync(self, name: str, upload: Path) -> VerifiedManifest:
        """A manifest-only publish: the same checks as :meth:`_publish_sync`, the
        files taken from the served version by hard links (``docs/SERVER.md``).
        The manifest is parsed and its signatures verified once."""
        store = self.state.store
        cfg = self.state.config
        data = upload.read_bytes()
        vm = open_upload_manifest(data, name, cfg.policy)
        try:
            served = store.get(name)
        except NotFoundError as exc:
            raise FilesDifferError(
                "no version is served to take the files from: upload the whole package", name
            ) from exc
        check_manifest_update(vm, name, served.manifest, state=self._trust_state())
        staging: Path | None = store.staging_dir(name)
        assert staging is not None
        try:
            store.link_files(served, staging)
            with open(staging / MANIFEST_NAME, "xb") as fh:
                fh.write(data)
            vm = check_package(staging, name, policy=cfg.policy,
                               current_version=served.version, state=self._trust_state(),
                               verified=vm, wrap=self.state.publish_source_hook)
            with store.lock("publish", name):
                now = store.get(name)
                if now.version != served.version:  # another worker published meanwhile
                    check_manifest_update(vm, name, now.manifest, state=self._trust_state())
                check_version(name, vm, current_version=now.version,
                              state=self._trust_state())
                store.install(name, staging, vm.manifest.version)
                staging = None
                if cfg.trusted_keys:
                    self._trust_state().record(name, vm.manifest.version, vm.digest)
        finally:
            if staging is not None:
                store.discard(staging)
        invalidate_archives(cfg.root, name)
        return vm

    def _trust_state(self) -> TrustState:
        return TrustState(self.state.config.root.resolve() / STATE_DIR / "trust-state.json")

    def _check_upload(self, name: str, upload: Path, staging: Path) -> VerifiedManifest:
        cfg = self.state.config
        return check_package(
            staging, name, policy=cfg.policy,
            current_version=self.state.store.current_version(name), state=self._trust_state(),
            upload=upload,
            limits=ExtractLimits(cfg.max_unpacked_bytes, cfg.max_entries, cfg.max_ratio),
            wrap=self.state.publish_source_hook,
        )

    async def publish_root(self, request: Request) -> Response:
        """PUT /packages/{name}/root: store the next root (server/freshness.py)."""
        denied = self._authorize(request)
        if denied is not None:
            return denied
        name = _name(request)
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > MAX_ENTRY_BYTES:
                raise PayloadTooLargeError(f"root larger than {MAX_ENTRY_BYTES} bytes", name)
        target = await anyio.to_thread.run_sync(
            install_root, self.state.config.root, bytes(body), name
        )
        return JSONResponse(
            {"package": name, "root": f"root/{target.name}", "version": int(target.stem)},
            status_code=201,
        )

    async def scrub(self, request: Request) -> Response:
        denied = self._authorize(request)
        if denied is not None:
            return denied
        health = await self.state.verify_package(_name(request))
        return JSONResponse({"package": health.name, "version": health.version,
                             "health": health.to_dict()})

    # --- ledger -----------------------------------------------------------------------

    def _ledger(self) -> LedgerPort:
        if self.state.ledger is None:
            raise StorageError("no ledger is configured", "ledger")
        return self.state.ledger

    async def ledger_record(self, request: Request) -> Response:
        denied = self._authorize(request)
        if denied is not None:
            return denied
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_ENTRY_BYTES:
                raise PayloadTooLargeError(f"entry larger than {MAX_ENTRY_BYTES} bytes", "body")
        body = await anyio.to_thread.run_sync(parse_json_body, bytes(raw), "body")
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            raise InputError("body must be an object with a string 'type'", "body")
        data = body.get("data", {})
        if not isinstance(data, dict):
            raise InputError("'data' must be an object", "body.data")
        led = self._ledger()
        entry_id = await anyio.to_thread.run_sync(led.record, body["type"][:100], data)
        return JSONResponse({"id": entry_id}, status_code=201)

    async def ledger_entry(self, request: Request) -> Response:
        led = self._ledger()
        entry_id = str(request.path_params["entry_id"])
        if len(entry_id) > 128:
            raise NotFoundError("no such entry", entry_id[:40])
        return JSONResponse(await anyio.to_thread.run_sync(led.entry, entry_id))

    async def ledger_checkpoint(self, request: Request) -> Response:
        led = self._ledger()
        text = await anyio.to_thread.run_sync(led.checkpoint)
        if text is None:
            raise NotFoundError("no block committed yet", "checkpoint")
        return PlainTextResponse(text, headers={"cache-control": "no-cache"})

    async def ledger_consistency(self, request: Request) -> Response:
        led = self._ledger()
        try:
            first = int(request.query_params["from"])
            second = int(request.query_params["to"])
        except (KeyError, ValueError) as exc:
            raise InputError("from and to must be integers", "query") from exc
        if first < 0 or second < first:
            raise InputError("need 0 <= from <= to", "query")
        return JSONResponse(await anyio.to_thread.run_sync(led.consistency, first, second))

    async def ledger_verifier_key(self, request: Request) -> Response:
        led = self._ledger()
        return PlainTextResponse(led.verifier_key + "\n")

    async def ledger_log(self, request: Request) -> Response:
        """C2SP tlog-tiles: ``/ledger/log/checkpoint`` and ``/ledger/log/tile/...``."""
        led = self._ledger()
        path = str(request.path_params["path"])
        data, ctype, cache = await anyio.to_thread.run_sync(led.log_file, path)
        return Response(data, media_type=ctype, headers={"cache-control": cache})

    async def ledger_block(self, request: Request) -> Response:
        led = self._ledger()
        raw = str(request.path_params["number"])
        if not raw.isdigit() or len(raw) > 18:
            raise NotFoundError("no such block", raw[:20])
        return JSONResponse(await anyio.to_thread.run_sync(led.block, int(raw)))

    # --- operations -------------------------------------------------------------------

    async def reports(self, request: Request) -> Response:
        """Browsers' Integrity-Policy reports → ledger events (server/reports.py)."""
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_REPORT_BYTES:
                raise PayloadTooLargeError(f"report larger than {MAX_REPORT_BYTES} bytes", "body")
        events = report_events(
            await anyio.to_thread.run_sync(parse_json_body, bytes(raw), "body")
        )
        allowed = self.report_limiter.take(len(events))
        if events and not allowed:
            return _plain_error(429, "too many reports")
        led = self.state.ledger
        ids = []
        if led is not None:
            for data in events[:allowed]:
                # metadata: readable in the ledger's event list (data is stored hashed)
                ids.append(
                    await anyio.to_thread.run_sync(led.record, REPORT_EVENT, data, data)
                )
        return JSONResponse({"recorded": ids, "dropped": len(events) - allowed})

    async def healthz(self, request: Request) -> Response:
        """200 always while serving: "degraded" (with reasons) is a warning, not down."""
        body = await anyio.to_thread.run_sync(self.state.health_summary)
        return JSONResponse(body, headers={"cache-control": "no-cache"})

    async def metrics(self, request: Request) -> Response:
        text = await anyio.to_thread.run_sync(self.state.metrics.render)
        return PlainTextResponse(text, media_type=METRICS_TYPE)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())


def _is_manifest_upload(content_type: str | None, upload: Path) -> bool:
    """A publish body that is a manifest (JSON), not a package zip."""
    if (content_type or "").split(";")[0].strip().lower() == "application/json":
        return True
    with open(upload, "rb") as fh:
        head = fh.read(64)
    return head.lstrip()[:1] == b"{"


def _wrap(fn: Callable[[Request], Any]) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        try:
            result: Response = await fn(request)
            return result
        except AuraSealError as exc:
            return error_response(exc)

    endpoint.__name__ = getattr(fn, "__name__", "endpoint")
    return endpoint


def _routes(h: Handlers) -> list[BaseRoute]:
    gh = ["GET", "HEAD"]
    return [
        Route("/healthz", _wrap(h.healthz), methods=gh),
        Route("/metrics", _wrap(h.metrics), methods=gh),
        Route("/openapi.json", _wrap(h.openapi), methods=gh),
        Route("/packages", _wrap(h.list_packages), methods=gh),
        Route("/packages/{name}", _wrap(h.archive), methods=gh),
        Route("/packages/{name}", _wrap(h.publish), methods=["PUT"]),
        Route("/packages/{name}/scrub", _wrap(h.scrub), methods=["POST"]),
        Route("/packages/{name}/root", _wrap(h.publish_root), methods=["PUT"]),
        Route("/packages/{name}/integrity-manifest.json", _wrap(h.manifest), methods=gh),
        Route("/packages/{name}/files/{path:path}", _wrap(h.package_file), methods=gh),
        Route("/packages/{name}/parts/{part}", _wrap(h.part_by_number), methods=gh),
        Route("/packages/{name}/versions", _wrap(h.versions), methods=gh),
        Route(
            "/packages/{name}/versions/{version}/integrity-manifest.json",
            _wrap(h.versioned_manifest), methods=gh,
        ),
        Route(
            "/packages/{name}/versions/{version}/files/{path:path}",
            _wrap(h.versioned_file), methods=gh,
        ),
        Route("/reports", _wrap(h.reports), methods=["POST"]),
        Route("/ledger/entries", _wrap(h.ledger_record), methods=["POST"]),
        Route("/ledger/entries/{entry_id}", _wrap(h.ledger_entry), methods=gh),
        Route("/ledger/checkpoint", _wrap(h.ledger_checkpoint), methods=gh),
        Route("/ledger/consistency", _wrap(h.ledger_consistency), methods=gh),
        Route("/ledger/blocks/{number}", _wrap(h.ledger_block), methods=gh),
        Route("/ledger/verifier-key", _wrap(h.ledger_verifier_key), methods=gh),
        Route("/ledger/log/{path:path}", _wrap(h.ledger_log), methods=gh),
    ]


def _web_routes(state: ServerState, auth: OperatorAuth) -> list[BaseRoute]:
    try:
        from auraseal.web import dashboard  # noqa: PLC0415
    except ImportError:
        return []
    fn = getattr(dashboard, "routes", None)
    if fn is None:
        return []
    routes: list[BaseRoute] = list(fn(state, auth, openapi_document))
    return routes


FastPath = Callable[[Scope, dict[str, str]], "FastHit | None"]

#: Request headers after which a file response is no longer the plain one
#: (accept-encoding is checked apart: it matters for compressible types only).
_NOT_PLAIN = frozenset(
    {b"range", b"if-none-match", b"if-modified-since", b"if-range", b"want-repr-digest"}
)
#: Bytes of bodies kept for replay per worker, and how many responses.
HOT_BYTES = 32 << 20
HOT_ENTRIES = 8192
#: Largest body kept for replay.
HOT_BODY = 64 << 10


@dataclass(frozen=True, slots=True)
class _Hot:
    """One complete plain response (edge headers included), valid while the
    manifest at ``manifest`` still has ``key`` (the same version is served)."""

    manifest: str
    key: ViewKey
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    compressible: bool


class EdgeMiddleware:
    """CORS (with preflight), security headers and request metrics for every response."""

    def __init__(
        self, app: Callable[..., Any], state: ServerState, fast: FastPath | None = None
    ) -> None:
        self.app = app
        self.state = state
        self.fast = fast
        self.origin = state.config.cors_origin.encode("latin-1")
        self.edge_headers = [
            (b"access-control-allow-origin", self.origin),
            (b"access-control-expose-headers", EXPOSE.encode()),
            (b"x-content-type-options", b"nosniff"),
        ]
        self.policy_headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in integrity_policy_headers(state.config.integrity_policy)
        ]
        #: method -> path -> kept plain response (see :meth:`try_fast`)
        self.hot: dict[str, dict[str, _Hot]] = {"GET": {}, "HEAD": {}}
        self.hot_bytes = 0

    def _html_policy(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Integrity-Policy (``serve --integrity-policy``) on HTML responses."""
        if self.policy_headers and any(
            k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers
        ):
            headers.extend(self.policy_headers)

    def _replay(self, scope: Scope, method: str) -> _Hot | None:
        """The kept response for this plain GET/HEAD if its version is still served."""
        hot = self.hot[method].get(scope.get("path", ""))
        if hot is None:
            return None
        for raw, _ in scope.get("headers", ()):
            k = raw.lower()
            if k in _NOT_PLAIN or (k == b"accept-encoding" and hot.compressible):
                return None
        if view_key(hot.manifest) != hot.key:  # published, rolled back or removed
            self._forget(method, scope.get("path", ""))
            return None
        return hot

    def _forget(self, method: str, path: str) -> None:
        old = self.hot[method].pop(path, None)
        if old is not None:
            self.hot_bytes -= len(old.body)

    def _keep(self, method: str, path: str, hot: _Hot) -> None:
        if len(hot.body) > HOT_BODY:
            return
        self._forget(method, path)
        if self.hot_bytes + len(hot.body) > HOT_BYTES or sum(map(len, self.hot.values())) >= (
            HOT_ENTRIES
        ):
            for table in self.hot.values():
                table.clear()
            self.hot_bytes = 0
        self.hot[method][path] = hot
        self.hot_bytes += len(hot.body)

    async def try_fast(self, scope: Scope, send: Send) -> bool:
        """Answer a GET/HEAD of a cached small package file directly; False if not one.

        A plain request (no conditional, range, digest or, for a compressible
        type, encoding header) of a path answered before from the version
        still being served is replayed from :attr:`hot`: one ``stat`` of the
        manifest, no parsing, no header building (docs/SERVER.md, "Performance")."""
        method = scope["method"]
        if self.fast is None or method not in self.hot:
            return False
        hot = self._replay(scope, method)
        if hot is not None:
            await send({"type": "http.response.start", "status": hot.status,
                        "headers": hot.headers})
            await send({"type": "http.response.body", "body": hot.body})
            self.state.metrics.count_request(method, hot.status, len(hot.body))
            return True
        path = scope.get("path", "")
        if not path.startswith("/packages/"):
            return False
        hit = self.fast(scope, request_headers(scope))
        if hit is None:
            return False
        code, headers, body, token = hit
        headers.extend(self.edge_headers)
        self._html_policy(headers)
        if token is not None:
            ctype = next((v for k, v in headers if k == b"content-type"), b"")
            compressible = ctype.split(b";")[0].decode("latin-1") in COMPRESSIBLE
            self._keep(method, path, _Hot(manifest=token[0], key=token[1], status=code,
                                          headers=headers, body=body, compressible=compressible))
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.state.metrics.count_request(method, code, len(body))
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        path: str = scope.get("path", "")
        metrics = self.state.metrics
        if method == "OPTIONS":
            headers = [
                (b"access-control-allow-origin", self.origin),
                (b"access-control-allow-methods", b"GET, HEAD, OPTIONS"),
                (b"access-control-allow-headers",
                 b"Range, If-None-Match, If-Modified-Since, If-Range, Accept-Encoding, "
                 b"Want-Repr-Digest"),
                (b"access-control-expose-headers", EXPOSE.encode()),
                (b"access-control-max-age", b"86400"),
                (b"allow", b"GET, HEAD, OPTIONS"),
                (b"x-content-type-options", b"nosniff"),
                (b"content-length", b"0"),
            ]
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            metrics.inc("auraseal_http_requests_total", method=method, code="204")
            return
        if "\x00" in path or len(path) > 8192:
            resp = _plain_error(400, "invalid request path")
            await resp(scope, receive, send)
            metrics.inc("auraseal_http_requests_total", method=method, code="400")
            return
        if await self.try_fast(scope, send):
            return
        status = 0
        sent = 0
        own_html = not path.startswith("/packages/")

        async def edge_send(message: MutableMapping[str, Any]) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                if b"access-control-allow-origin" not in names:
                    headers.append((b"access-control-allow-origin", self.origin))
                    headers.append((b"access-control-expose-headers", EXPOSE.encode()))
                if b"x-content-type-options" not in names:
                    headers.append((b"x-content-type-options", b"nosniff"))
                ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if own_html and ctype.startswith(b"text/html") and (
                    b"content-security-policy" not in names
                ):
                    headers.append((b"content-security-policy", CSP.encode()))
                    headers.append((b"referrer-policy", b"no-referrer"))
                    headers.append((b"x-frame-options", b"DENY"))
                self._html_policy(headers)
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, edge_send)
        finally:
            label = method if method in _METHODS else "OTHER"
            metrics.inc("auraseal_http_requests_total", method=label, code=str(status))
            if sent:
                metrics.inc("auraseal_http_response_bytes_total", float(sent))


async def _healing_loop(state: ServerState) -> None:
    await anyio.sleep(0.5)
    while True:
        await anyio.to_thread.run_sync(state.scrub_all_sync)
        await anyio.sleep(state.config.scrub_interval)


async def _commit_loop(state: ServerState) -> None:
    """Commit blocks as they fall due (100 entries or ``commit_interval`` seconds)."""
    tick = max(0.05, min(5.0, state.config.commit_interval / 4))
    while True:
        await anyio.sleep(tick)
        if state.ledger is not None:
            with contextlib.suppress(AuraSealError):
                await anyio.to_thread.run_sync(state.ledger.commit)


def _try_lock(path: Path) -> int | None:
    import fcntl  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class AuraSealApp(Starlette):
    """Starlette, with the small-file hot path tried before the middleware stack."""

    edge: EdgeMiddleware | None = None
    access_log: ServerLog | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.access_log is not None and scope["type"] == "http":
            send = self.access_log.wrap_send(scope, send)  # one access line per request
        if self.edge is not None and scope["type"] == "http" and await self.edge.try_fast(
            scope, send
        ):
            return
        await super().__call__(scope, receive, send)


def create_app(
    config: ServerConfig, *, state: ServerState | None = None, log: ServerLog | None = None
) -> Starlette:
    """The AuraSeal server as a Starlette app (``app.state.auraseal`` is the ServerState);
    ``log``: where access and event lines go (see :mod:`auraseal.server.logs`)."""
    st = state or ServerState(config, log=log)
    st.log = st.log or log
    tokens = TokenSet.load(config.publish_token_file)
    handlers = Handlers(st, tokens)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # One process per ROOT runs the healing and commit timers (several
        # uvicorn workers share ROOT): whoever holds the flock.
        lock_fd = _try_lock(config.state_dir / "healing.lock") if config.healing else None
        try:
            async with anyio.create_task_group() as tg:
                if lock_fd is not None:
                    tg.start_soon(_healing_loop, st)
                    tg.start_soon(_commit_loop, st)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        finally:
            if lock_fd is not None:
                os.close(lock_fd)
            st.close()

    async def http_error(request: Request, exc: Exception) -> Response:
        code = int(getattr(exc, "status_code", 500))
        detail = str(getattr(exc, "detail", "")) or "error"
        headers = dict(getattr(exc, "headers", None) or {})
        return _plain_error(code, detail, **headers)

    auth = OperatorAuth(tokens, config.root.resolve() / STATE_DIR / "sessions")
    routes = _web_routes(st, auth) + _routes(handlers)
    app = AuraSealApp(
        routes=routes, lifespan=lifespan,
        exception_handlers={404: http_error, 405: http_error, HTTPException: http_error},
    )
    app.state.auraseal = st
    app.add_middleware(EdgeMiddleware, state=st)
    app.edge = EdgeMiddleware(app.router, st, fast=handlers.fast_file)
    app.access_log = log
    return app


def app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` worker processes (``auraseal serve --workers N``)."""
    from auraseal.server.defaults import config_from_env  # noqa: PLC0415

    return create_app(config_from_env())
