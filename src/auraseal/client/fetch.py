"""The fetch flow: trusted manifest → verified files → atomic install.

See ``docs/CLIENT.md`` for the order of sources and what each refusal means.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import httpx

from auraseal._fs import fsync_dir, resolve_inside
from auraseal._time import format_time, utcnow
from auraseal.client.blockhub import Source, fallback_candidates, make_source
from auraseal.client.cache import Cache
from auraseal.client.http import Fetcher, HttpConfig
from auraseal.client.install import (
    Installed,
    InstallRecord,
    Staging,
    StepHook,
    install_lock,
    recover,
    swap_in,
)
from auraseal.client.roots import RootSession, RootTrust
from auraseal.errors import (
    AuraSealError,
    ComponentLostError,
    DigestMismatchError,
    ExpiredError,
    InputError,
    IntegrityError,
    NetworkError,
    PackageMismatchError,
    RollbackError,
    StorageError,
    TrustError,
    UnrecoverableError,
)
from auraseal.integrity import StreamVerifier, parse_integrity, verify_bytes
from auraseal.manifest import FileEntry, Manifest, load_manifest, manifest_digest, part_name
from auraseal.sealing import parts_from_original, rebuild_component
from auraseal.signing import TrustPolicy

__all__ = [
    "DEFAULT_FILE_TTL",
    "DEFAULT_JOBS",
    "DEFAULT_MANIFEST_TTL",
    "FetchProgress",
    "FetchReport",
    "FileReport",
    "LedgerSink",
    "fetch_package",
    "package_name_from_url",
]

DEFAULT_MANIFEST_TTL = timedelta(hours=1)
DEFAULT_FILE_TTL = timedelta(hours=6)
DEFAULT_JOBS = 4
COPY_CHUNK = 1024 * 1024
#: threads fsyncing finished files while others still download
SYNC_THREADS = 2
#: damaged originals up to this size are salvaged (read whole into memory)
SALVAGE_MAX = 256 << 20

#: ``record(entry_type, data)`` — where verifications, recoveries and refusals go.
LedgerSink = Callable[[str, dict[str, Any]], None]
RebuildFn = Callable[[FileEntry, Mapping[int, bytes]], bytes]
#: ``salvage(entry, damaged_copy)`` -> candidate part bytes by number (verified by the caller)
SalvageFn = Callable[[FileEntry, bytes], Mapping[int, bytes]]
T = TypeVar("T")


class FetchProgress(Protocol):
    """Progress callbacks (called from worker threads)."""

    def start(self, total_bytes: int, total_files: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...

    def file_done(self, path: str, source: str) -> None: ...


@dataclass
class FileReport:
    """Where one file came from and what was refused on the way."""

    path: str
    size: int
    source: str
    url: str | None = None
    parts_used: int = 0
    bad_parts: int = 0
    parts_salvaged: int = 0
    rejected: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "size": self.size, "source": self.source}
        if self.url is not None:
            d["url"] = self.url
        if self.source == "parts":
            d["parts_used"] = self.parts_used
            d["bad_parts"] = self.bad_parts
            d["parts_salvaged"] = self.parts_salvaged
        d["rejected"] = list(self.rejected)
        return d


@dataclass
class FetchReport:
    """The outcome of one :func:`fetch_package`."""

    url: str
    dest: str
    name: str
    version: int
    manifest_source: str
    previous_version: int | None
    files: list[FileReport]
    bytes_downloaded: int
    seconds: float
    warnings: list[str] = field(default_factory=list)

    REPORT_VERSION = 1

    def sources(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.files:
            out[f.source] = out.get(f.source, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "report_version": self.REPORT_VERSION,
            "ok": True,
            "url": self.url,
            "dest": self.dest,
            "name": self.name,
            "version": self.version,
            "previous_version": self.previous_version,
            "manifest_source": self.manifest_source,
            "files": [f.to_dict() for f in self.files],
            "sources": self.sources(),
            "bytes": sum(f.size for f in self.files),
            "bytes_downloaded": self.bytes_downloaded,
            "seconds": round(self.seconds, 3),
            "warnings": list(self.warnings),
        }

    def summary(self) -> str:
        src = ", ".join(f"{n} {s}" for s, n in sorted(self.sources().items()))
        prev = "" if self.previous_version is None else f" (was v{self.previous_version})"
        return (
            f"installed {self.name} v{self.version}{prev} into {self.dest}: "
            f"{len(self.files)} files ({src}); manifest from {self.manifest_source}; "
            f"{self.bytes_downloaded} bytes downloaded in {self.seconds:.2f}s"
        )


class _VerifySink:
    def __init__(self, fh: BinaryIO, verifier: StreamVerifier) -> None:
        self.fh = fh
        self.verifier = verifier

    def write(self, data: bytes, /) -> object:
        self.verifier.update(data)
        return self.fh.write(data)


class _Aborted(Exception):
    pass


def _one_line(errors: Sequence[str], limit: int = 6) -> str:
    shown = list(errors[:limit])
    if len(errors) > limit:
        shown.append(f"... {len(errors) - limit} more")
    return "; ".join(shown)


def package_name_from_url(url: str) -> str | None:
    """The package name a URL asks for: ``<name>`` of ``auraseal serve``'s
    ``/packages/<name>[/files/ | /versions/N/files/]``, else the last path
    segment once a trailing ``*.json`` file name is dropped; None for a URL
    naming no path (then the manifest's name is taken on a first install)."""
    segs = [unquote(x) for x in urlsplit(url).path.split("/") if x]
    if segs and segs[-1].endswith(".json"):
        segs.pop()
    for i in range(len(segs) - 2, -1, -1):
        if segs[i] == "packages":
            rest = segs[i + 2 :]
            if rest in ([], ["files"]) or (
                len(rest) == 3 and rest[0] == "versions" and rest[2] == "files"
            ):
                return segs[i + 1]
            break
    return segs[-1] if segs else None


class _Fetch:
    def __init__(
        self,
        url: str,
        dest: Path,
        *,
        mirrors: Sequence[str],
        policy: TrustPolicy | None,
        cache_dir: Path | None,
        fallback_dir: Path | None,
        manifest_ttl: timedelta,
        file_ttl: timedelta,
        offline: bool,
        jobs: int,
        progress: FetchProgress | None,
        transport: httpx.BaseTransport | None,
        http: HttpConfig | None,
        ledger: LedgerSink | None,
        now: datetime | None,
        rebuild: RebuildFn | None,
        salvage: SalvageFn | None,
        package: str | None = None,
        step: StepHook | None = None,
        root: RootTrust | None = None,
    ) -> None:
        self.url = url
        self.package = package
        self.step = step
        #: the package name the manifest must carry (set by :meth:`run`)
        self.expected: str | None = package
        self.record_now: InstallRecord | None = None
        self.dest = Path(dest).absolute()
        self.sources = [make_source(url, "primary")] + [
            make_source(m, f"mirror {i}") for i, m in enumerate(mirrors, 1)
        ]
        self.policy = policy
        self.cache = Cache(cache_dir) if cache_dir is not None else None
        self.fallback_dir = Path(fallback_dir) if fallback_dir is not None else None
        self.manifest_ttl = manifest_ttl
        self.file_ttl = file_ttl
        self.offline = offline
        self.jobs = max(1, jobs)
        self.progress = progress
        self.ledger = ledger
        self.now = now or utcnow()
        cfg = http or HttpConfig()
        if cfg.max_connections < self.jobs * 2:
            cfg = dataclasses.replace(cfg, max_connections=self.jobs * 2)
        self.fetcher = Fetcher(cfg, transport)
        self.rebuild: RebuildFn = rebuild if rebuild is not None else rebuild_component
        self.salvage: SalvageFn = salvage if salvage is not None else parts_from_original
        self.warnings: list[str] = []
        self._lock = threading.Lock()
        self._downloaded = 0
        self._abort = threading.Event()
        self._events: list[tuple[str, dict[str, Any]]] = []
        self._pin_ok = [True] * len(self.sources)
        # the root of trust (client/roots.py): a given root or the one pinned in the cache
        if root is None and cache_dir is not None:
            root = RootTrust(cache_dir=Path(cache_dir))
        self.roots = None if root is None else RootSession(
            root, self.fetcher, self.sources[0].base, self.now,
            offline=offline, warnings=self.warnings,
        )

    def close(self) -> None:
        self.fetcher.close()

    # --- ledger & progress -------------------------------------------------

    def record(self, entry_type: str, data: dict[str, Any]) -> None:
        """Queue a ledger event; :meth:`flush_ledger` writes them from the
        calling thread (ledger stores need not be thread-safe)."""
        if self.ledger is None:
            return
        with self._lock:
            self._events.append((entry_type, data))

    def flush_ledger(self) -> None:
        if self.ledger is None:
            return
        with self._lock:
            events, self._events = self._events, []
        for entry_type, data in events:
            try:
                self.ledger(entry_type, data)
            except Exception as exc:  # the ledger must not break an install
                self.warnings.append(f"ledger: {entry_type} not recorded: {exc}")

    def _net(self, n: int) -> None:
        with self._lock:
            self._downloaded += n
        if self.progress is not None:
            self.progress.advance(n)

    def _retract(self, n: int) -> None:
        if self.progress is not None and n:
            self.progress.advance(-n)

    # --- manifest ----------------------------------------------------------

    def trust(self, data: bytes, where: str) -> tuple[Manifest, str]:
        m = (
            self.roots.load_manifest(data, where, self.url, self.expected)
            if self.roots is not None
            else None
        )
        if m is None:
            m = load_manifest(
                data, where, policy=self.policy, state=None, now=self.now, name=self.url
            )
        if self.expected is not None and m.name != self.expected:
            # every package on a server is signed by the same key: a mirror or
            # man-in-the-middle must not install another one instead
            raise PackageMismatchError(
                f"manifest is for package '{m.name}', not the '{self.expected}' asked for",
                where,
            )
        if self.policy is None and m.expires is not None and m.expires <= self.now:
            raise ExpiredError(
                f"manifest '{m.name}' v{m.version} expired at {format_time(m.expires)}", where
            )
        digest = manifest_digest(m)
        if self.cache is not None:
            self.cache.trust_state.check(m.name, m.version, digest, where)
        rec = self.record_now
        seen = rec.highest(m.name) if rec is not None else None
        if seen is not None:
            seen_version, seen_digest = seen
            if m.version < seen_version:
                raise RollbackError(
                    f"version {m.version} is older than installed version {seen_version} "
                    f"of '{m.name}' (rollback)",
                    where,
                )
            if m.version == seen_version and digest != seen_digest:
                raise RollbackError(
                    f"version {m.version} of '{m.name}' differs from the installed one", where
                )
        return m, digest

    def manifest(self) -> tuple[Manifest, str, str]:
        primary = self.sources[0]
        cached = self.cache.manifest(primary.manifest_url) if self.cache is not None else None
        errors: list[AuraSealError] = []
        if cached is not None:
            data, meta = cached
            if self.offline or self.now - meta.fetched_at < self.manifest_ttl:
                try:
                    return *self.trust(data, f"{primary.manifest_url} (cached)"), "cache"
                except TrustError as exc:
                    if self.offline:
                        raise
                    errors.append(exc)
        if self.offline:
            raise StorageError("no cached manifest to use offline", primary.manifest_url)
        for i, src in enumerate(self.sources):
            try:
                if i == 0 and cached is not None:
                    # ETag only: Last-Modified has one-second resolution, so a manifest
                    # replaced within the second would be taken as unchanged
                    got = self.fetcher.get_small(src.manifest_url, etag=cached[1].etag)
                else:
                    got = self.fetcher.get_small(src.manifest_url)
                self._net_quiet(len(got.data))
                if got.status == 304 and cached is not None:
                    m, digest = self.trust(cached[0], src.manifest_url)
                    if self.cache is not None:
                        self.cache.touch_manifest(primary.manifest_url, cached[1], self.now)
                    return m, digest, "revalidated"
                m, digest = self.trust(got.data, src.manifest_url)
                if self.cache is not None:
                    self.cache.store_manifest(
                        primary.manifest_url,
                        got.data,
                        self.now,
                        got.etag if i == 0 else None,
                        got.last_modified if i == 0 else None,
                    )
                return m, digest, src.label
            except (NetworkError, TrustError, InputError, IntegrityError) as exc:
                errors.append(exc)
                self.record(
                    "fetch.manifest_rejected",
                    {"url": src.manifest_url, "error": str(exc), "exit_code": exc.exit_code},
                )
        if cached is not None and all(isinstance(e, NetworkError) for e in errors):
            m, digest = self.trust(cached[0], f"{primary.manifest_url} (cached)")
            self.warnings.append("manifest: no source answered; used the cached copy")
            return m, digest, "stale cache"
        for family in (TrustError, InputError, IntegrityError):
            for e in errors:
                if isinstance(e, family):
                    raise e
        raise errors[0]

    # --- one file ----------------------------------------------------------

    def _copy_verified(
        self, src: Path, target: Path, entry: FileEntry, keep_mtime: float | None = None
    ) -> bytes:
        ver = StreamVerifier(entry.integrity, str(src))
        try:
            with open(src, "rb") as fi, open(target, "wb") as fo:
                while chunk := fi.read(COPY_CHUNK):
                    ver.update(chunk)
                    if ver.bytes_seen > entry.size:
                        break
                    fo.write(chunk)
                if ver.bytes_seen != entry.size:
                    raise DigestMismatchError(
                        f"size differs from the manifest's {entry.size} bytes", str(src)
                    )
                ver.verify()
            if keep_mtime is not None:
                os.utime(target, (keep_mtime, keep_mtime))
        except OSError as exc:
            raise StorageError(f"cannot copy: {exc.strerror}", str(src)) from exc
        return ver.digest()

    def _download(self, url: str, target: Path, entry: FileEntry) -> bytes:
        ver = StreamVerifier(entry.integrity, url)
        seen = 0

        def count(n: int) -> None:
            nonlocal seen
            seen += n
            self._net(n)

        try:
            try:
                with open(target, "wb") as fh:
                    self.fetcher.download(url, _VerifySink(fh, ver), entry.size, progress=count)
                    ver.verify()
            except OSError as exc:
                raise StorageError(f"cannot write: {exc.strerror}", str(target)) from exc
        except AuraSealError:
            self._retract(seen)
            raise
        return ver.digest()

    def _via(self, i: int, make_url: Callable[[bool], str], get: Callable[[str], T]) -> T:
        """``get`` from source ``i``'s pinned (versioned) URL, or from its plain
        URL if it has none or the host does not serve kept versions (404)."""
        if self.sources[i].pinned_base is not None and self._pin_ok[i]:
            try:
                return get(make_url(True))
            except NetworkError as exc:
                if "HTTP 404" not in exc.what:
                    raise
                self._pin_ok[i] = False
        return get(make_url(False))

    @staticmethod
    def _part_url(src: Source, entry: FileEntry, number: int, pinned: bool) -> str:
        return src.part_url(entry, number, pinned=pinned)

    def _fetch_part(self, entry: FileEntry, number: int) -> tuple[bytes | None, list[str]]:
        assert entry.recovery is not None
        info = entry.recovery.parts[number]
        n = len(self.sources)
        rejected: list[str] = []
        for j in range(n):
            if self._abort.is_set():
                break
            i = (number + j) % n
            src = self.sources[i]

            def get(url: str) -> bytes:
                buf = io.BytesIO()
                self.fetcher.download(url, buf, info.size, progress=self._net_quiet)
                data = buf.getvalue()
                verify_bytes(data, info.integrity, url)
                return data

            try:
                data = self._via(i, functools.partial(self._part_url, src, entry, number), get)
            except AuraSealError as exc:
                rejected.append(f"{src.label} part {number}: {exc.what}")
                continue
            return data, rejected
        return None, rejected

    def _net_quiet(self, n: int) -> None:
        with self._lock:
            self._downloaded += n

    def _salvage(self, entry: FileEntry, target: Path, into: dict[int, bytes]) -> None:
        """Add to ``into`` the parts the damaged copy at ``target`` still re-creates
        exactly; each is checked against the manifest's part integrity here."""
        rec = entry.recovery
        if rec is None or entry.size > SALVAGE_MAX or len(into) >= rec.k:
            return
        try:
            data = target.read_bytes()
        except OSError:
            return
        if not data:
            return
        try:
            cands = self.salvage(entry, data)
        except AuraSealError:
            return
        # parts_from_original returns only parts whose SHA-256 it compared with
        # the manifest's; any other salvage function's output is checked here
        checked = self.salvage is parts_from_original
        for n, part in cands.items():
            if n in into or not 0 <= n < len(rec.parts):
                continue
            if not checked:
                try:
                    verify_bytes(part, rec.parts[n].integrity, part_name(entry.path, n))
                except AuraSealError:
                    continue  # never use an unverified byte
            into[n] = part

    def _from_parts(
        self,
        entry: FileEntry,
        target: Path,
        pool: ThreadPoolExecutor,
        report: FileReport,
        salvaged: Mapping[int, bytes] | None = None,
    ) -> None:
        rec = entry.recovery
        assert rec is not None
        total = len(rec.parts)
        good: dict[int, bytes] = dict(salvaged or {})
        report.parts_salvaged = len(good)
        # the data parts the salvage could not re-create first, then parity
        order = [n for n in range(min(rec.k, total)) if n not in good]
        order += [n for n in range(rec.k, total) if n not in good]
        pending: dict[Future[tuple[bytes | None, list[str]]], int] = {}
        nxt = 0

        def submit() -> None:
            nonlocal nxt
            fut = pool.submit(self._fetch_part, entry, order[nxt])
            pending[fut] = order[nxt]
            nxt += 1

        while nxt < len(order) and len(pending) < rec.k - len(good):
            submit()
        while pending and len(good) < rec.k:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in done:
                number = pending.pop(fut)
                data, rejected = fut.result()
                report.rejected.extend(rejected)
                report.bad_parts += len(rejected)
                if data is None:
                    if nxt < len(order):
                        submit()
                else:
                    good[number] = data
        for fut in pending:
            fut.cancel()
        if len(good) < rec.k:
            raise ComponentLostError(
                f"only {len(good)} good parts of {total}; {rec.k} needed", entry.path,
                good=len(good), total=total, k=rec.k,
            )
        data = self.rebuild(entry, good)
        verify_bytes(data, entry.integrity, entry.path)
        try:
            with open(target, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            raise StorageError(f"cannot write: {exc.strerror}", str(target)) from exc
        report.parts_used = len(good)

    def _store(self, target: Path, entry: FileEntry, digest: bytes) -> None:
        if self.cache is None:
            return
        try:
            alg = parse_integrity(entry.integrity).algorithm
            self.cache.store_file(target, alg, digest, self.now)
        except AuraSealError as exc:
            with self._lock:
                self.warnings.append(f"cache: {exc}")

    def obtain(self, entry: FileEntry, stage: Staging, pool: ThreadPoolExecutor) -> FileReport:
        if self._abort.is_set():
            raise _Aborted()
        target = stage.file(entry.path)
        report = FileReport(entry.path, entry.size, "")
        errors: list[AuraSealError] = []

        def done(source: str, url: str | None = None, counted: bool = False) -> FileReport:
            report.source = source
            report.url = url
            if self.progress is not None:
                if not counted:
                    self.progress.advance(entry.size)
                self.progress.file_done(entry.path, source)
            self.record(
                "fetch.verified",
                {"path": entry.path, "integrity": entry.integrity, "source": source,
                 "size": entry.size},
            )
            return report

        def refuse(where: str, exc: AuraSealError) -> None:
            errors.append(exc)
            report.rejected.append(f"{where}: {exc.what}")

        # 1. the cache, within its TTL
        stale: Path | None = None
        if self.cache is not None:
            hit = self.cache.lookup_file(entry)
            if hit is not None:
                path, mtime = hit
                age = self.now.astimezone(UTC).timestamp() - mtime
                if self.offline or age < self.file_ttl.total_seconds():
                    try:
                        self._copy_verified(path, target, entry, keep_mtime=mtime)
                        return done("cache")
                    except IntegrityError as exc:
                        self.cache.forget_file(path)
                        refuse("cache", exc)
                else:
                    stale = path
        # 2. the copy already installed in DIR (same bytes as this manifest),
        #    aged like a cached copy: by when it was downloaded
        stale_installed: Path | None = None
        inst = self._installed_copy(entry)
        if inst is not None:
            path, mtime = inst
            age = self.now.astimezone(UTC).timestamp() - mtime
            if self.offline or age < self.file_ttl.total_seconds():
                try:
                    self._copy_verified(path, target, entry, keep_mtime=mtime)
                    return done("installed")
                except IntegrityError as exc:
                    report.rejected.append(f"installed: {exc.what}")
            else:
                stale_installed = path
        if not self.offline:
            # 3. the primary, then each mirror; what a damaged copy still
            #    re-creates of the parts is kept for step 4
            salvaged: dict[int, bytes] = {}
            for i, src in enumerate(self.sources):
                if self._abort.is_set():
                    raise _Aborted()
                used: list[str] = []

                def url_for(pinned: bool, src: Source = src, i: int = i) -> str:
                    return src.file_url(entry, use_entry_url=i == 0, pinned=pinned)

                def get(url: str, used: list[str] = used) -> bytes:
                    used.append(url)
                    return self._download(url, target, entry)

                try:
                    digest = self._via(i, url_for, get)
                    url = used[-1]
                except (NetworkError, IntegrityError) as exc:
                    url = used[-1] if used else url_for(False)
                    refuse(src.label, exc)
                    self.record(
                        "fetch.rejected",
                        {"path": entry.path, "url": url, "error": str(exc)},
                    )
                    self._salvage(entry, target, salvaged)
                    continue
                self._store(target, entry, digest)
                return done(src.label, url, counted=True)
            # 4. parts from all sources at once
            if entry.recovery is not None:
                try:
                    self._from_parts(entry, target, pool, report, salvaged)
                    self._store(target, entry, self._digest_of(entry))
                    self.record(
                        "fetch.recovered",
                        {"path": entry.path, "parts_used": report.parts_used,
                         "bad_parts": report.bad_parts,
                         "parts_salvaged": report.parts_salvaged},
                    )
                    return done("parts")
                except AuraSealError as exc:
                    refuse("parts", exc)
        # 5. a stale cached or installed copy (still the same bytes as this manifest)
        for label, old_copy in (("stale cache", stale), ("stale installed", stale_installed)):
            if old_copy is not None:
                try:
                    self._copy_verified(old_copy, target, entry)
                    return done(label)
                except IntegrityError as exc:
                    refuse(label, exc)
        # 6. the local fallback folder, only if it matches this manifest
        if self.fallback_dir is not None:
            for cand in fallback_candidates(self.fallback_dir, entry):
                try:
                    self._copy_verified(cand, target, entry)
                    return done("fallback")
                except IntegrityError as exc:
                    refuse("fallback", exc)
        raise self._refusal(entry, errors, report)

    def _digest_of(self, entry: FileEntry) -> bytes:
        # after a rebuild the bytes matched entry.integrity; cache under its first digest
        return parse_integrity(entry.integrity).digests[0]

    def _installed_copy(self, entry: FileEntry) -> tuple[Path, float] | None:
        if not self.dest.is_dir():
            return None
        try:
            p = resolve_inside(self.dest, entry.path)
            st = p.stat()
        except (AuraSealError, OSError):
            return None
        if p.is_file() and st.st_size == entry.size:
            return p, st.st_mtime
        return None

    def _refusal(
        self, entry: FileEntry, errors: list[AuraSealError], report: FileReport
    ) -> AuraSealError:
        detail = _one_line(report.rejected) or "no source to try"
        if self.offline and not errors:
            return StorageError(
                "not in the cache or the fallback folder (offline)", entry.path
            )
        lost = [e for e in errors if isinstance(e, UnrecoverableError)]
        if lost:
            e0 = lost[0]
            return ComponentLostError(
                f"no intact copy and too few good parts: {detail}", entry.path,
                good=getattr(e0, "good", 0), total=getattr(e0, "total", 0), k=getattr(e0, "k", 0),
            )
        if any(isinstance(e, IntegrityError) for e in errors):
            return DigestMismatchError(f"no copy matches the manifest: {detail}", entry.path)
        return NetworkError(f"could not fetch: {detail}", entry.path)

    # --- the whole package -------------------------------------------------

    def run(self) -> FetchReport:
        try:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create directory: {exc.strerror}", str(self.dest)) from exc
        with install_lock(self.dest):
            # finish or undo a fetch/rollback killed half-way; drop dead temps
            self.record_now = recover(self.dest)
            cur = self.record_now.current if self.record_now is not None else None
            if self.expected is None:
                self.expected = cur.name if cur is not None else package_name_from_url(self.url)
            return self._run()

    def _run(self) -> FetchReport:
        t0 = time.monotonic()
        manifest, digest, msource = self.manifest()
        self.sources = [s.pinned(manifest.version) for s in self.sources]
        self._pin_ok = [True] * len(self.sources)
        if self.cache is not None:
            # re-checked under the cache's lock: another fetch may have moved on
            self.cache.trust_state.check_and_record(
                manifest.name, manifest.version, digest, self.url
            )
        self.record(
            "fetch.manifest",
            {"url": self.url, "name": manifest.name, "version": manifest.version,
             "digest": digest, "source": msource},
        )
        if self.progress is not None:
            self.progress.start(manifest.total_size, len(manifest.files))
        stage = Staging(self.dest)
        try:
            reports = self._all_files(manifest, stage)
            self._check_stage(manifest, stage)
            rec = swap_in(
                stage,
                Installed(manifest.name, manifest.version, digest, self.url, format_time(utcnow())),
                self.step,
                locked=True,
            )
        except BaseException:
            stage.discard()
            raise
        previous = rec.previous.version if rec.previous is not None else None
        report = FetchReport(
            url=self.url,
            dest=str(self.dest),
            name=manifest.name,
            version=manifest.version,
            manifest_source=msource,
            previous_version=previous,
            files=reports,
            bytes_downloaded=self._downloaded,
            seconds=time.monotonic() - t0,
            warnings=self.warnings,
        )
        self.record(
            "fetch.installed",
            {"dest": str(self.dest), "name": manifest.name, "version": manifest.version,
             "sources": report.sources()},
        )
        return report

    def _all_files(self, manifest: Manifest, stage: Staging) -> list[FileReport]:
        """Obtain every file; each one's fsync starts in the background as soon
        as it is complete (overlapping the downloads still running), and all of
        them have finished, sizes checked, before this returns."""
        results: dict[str, FileReport] = {}
        synced: dict[str, Future[None]] = {}
        with (
            ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="sync") as sync_pool,
            ThreadPoolExecutor(self.jobs, thread_name_prefix="fetch") as files_pool,
            ThreadPoolExecutor(self.jobs, thread_name_prefix="part") as parts_pool,
        ):
            futs = {
                files_pool.submit(self.obtain, e, stage, parts_pool): e for e in manifest.files
            }
            first: BaseException | None = None
            for fut in as_completed(futs):
                try:
                    r = fut.result()
                except _Aborted:
                    continue
                except BaseException as exc:
                    if first is None:
                        first = exc
                        self._abort.set()
                        for f in futs:
                            f.cancel()
                    continue
                results[r.path] = r
                e = futs[fut]
                synced[e.path] = sync_pool.submit(_sync_file, stage.path / e.path, e)
            if first is not None:
                for sf in synced.values():
                    sf.cancel()
                raise first
            for e in manifest.files:  # re-raise the first failed sync, in manifest order
                synced[e.path].result()
        return [results[e.path] for e in manifest.files]

    def _check_stage(self, manifest: Manifest, stage: Staging) -> None:
        """Make the directories durable before the swap (every file was checked
        and fsynced by :meth:`_all_files`)."""
        for d in {(stage.path / e.path).parent for e in manifest.files}:
            fsync_dir(d)


def _sync_file(p: Path, e: FileEntry) -> None:
    """Check an assembled file's size and fsync it (the stage is ours: names
    were checked when it was created)."""
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError as exc:
        raise StorageError("missing after assembly", e.path) from exc
    try:
        size = os.fstat(fd).st_size
        if size != e.size:
            raise IntegrityError(f"assembled size {size} != {e.size}", e.path)
        os.fsync(fd)
    except OSError as exc:
        raise StorageError(f"cannot sync: {exc.strerror}", e.path) from exc
    finally:
        os.close(fd)


def fetch_package(
    url: str,
    dest: Path,
    *,
    mirrors: Sequence[str] = (),
    policy: TrustPolicy | None = None,
    cache_dir: Path | None = None,
    fallback_dir: Path | None = None,
    manifest_ttl: timedelta = DEFAULT_MANIFEST_TTL,
    file_ttl: timedelta = DEFAULT_FILE_TTL,
    offline: bool = False,
    jobs: int = DEFAULT_JOBS,
    progress: FetchProgress | None = None,
    transport: httpx.BaseTransport | None = None,
    http: HttpConfig | None = None,
    ledger: LedgerSink | None = None,
    now: datetime | None = None,
    rebuild: RebuildFn | None = None,
    salvage: SalvageFn | None = None,
    package: str | None = None,
    step: StepHook | None = None,
    root: RootTrust | None = None,
) -> FetchReport:
    """Fetch the package at ``url`` into ``dest``: verify, repair, install atomically.

    Raises an :class:`~auraseal.errors.AuraSealError` (and leaves ``dest``
    exactly as it was) when the manifest cannot be trusted (exit 3), a file
    has no copy matching it (1), too few parts survive (4), or the network
    or disk fails (5).

    The manifest must name ``package``; without it, the package installed in
    ``dest``, else the last segment of ``url`` (see
    :func:`package_name_from_url`); another package is refused (exit 3).
    ``step`` is called after each step of the install (tests inject kills).
    A fetch or rollback killed half-way is finished or undone first.

    ``root`` (or, without it, a root pinned in ``cache_dir`` by an earlier
    fetch) makes the root of trust decide which keys sign manifests, in place
    of ``policy`` (see :mod:`auraseal.client.roots`).
    """
    f = _Fetch(
        url, dest, mirrors=mirrors, policy=policy, cache_dir=cache_dir,
        fallback_dir=fallback_dir, manifest_ttl=manifest_ttl, file_ttl=file_ttl,
        offline=offline, jobs=jobs, progress=progress, transport=transport, http=http,
        ledger=ledger, now=now, rebuild=rebuild, salvage=salvage, package=package, step=step,
        root=root,
    )
    try:
        return f.run()
    except AuraSealError as exc:
        f.record(
            "fetch.refused",
            {"url": url, "dest": str(f.dest), "error": str(exc), "exit_code": exc.exit_code},
        )
        raise
    finally:
        f.flush_ledger()
        f.close()
