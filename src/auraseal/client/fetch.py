"""The fetch flow: trusted manifest → verified files → atomic install.

See ``docs/CLIENT.md`` for the order of sources and what each refusal means.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import httpx

from auraseal._fs import fsync_dir, make_temp_dir, pwrite_all, resolve_inside
from auraseal._time import format_time, utcnow
from auraseal.client._parts_http import PartRequest, fetch_run
from auraseal.client.blockhub import Source, fallback_candidates, make_source
from auraseal.client.cache import Cache
from auraseal.client.http import Fetcher, HttpConfig
from auraseal.client.install import (
    FOREIGN,
    Installed,
    InstallRecord,
    Staging,
    StepHook,
    foreign_entries,
    install_lock,
    prev_dir,
    read_record,
    recover,
    swap_in,
)
from auraseal.client.roots import RootSession, RootTrust, pinned_root
from auraseal.client.trust import TrustAnchor, load_pin, pin_path
from auraseal.client.witnessed import WitnessPolicy, require_witnessed
from auraseal.errors import (
    AuraSealError,
    BadSignatureError,
    ComponentLostError,
    DestinationNotEmptyError,
    DigestMismatchError,
    ExpiredError,
    InputError,
    IntegrityError,
    NetworkError,
    NoTrustAnchorError,
    PackageMismatchError,
    PinnedKeyError,
    RollbackError,
    StorageError,
    ThresholdError,
    TrustError,
    UnknownKeyError,
    UnrecoverableError,
    UsageError,
)
from auraseal.events import EventSink
from auraseal.integrity import StreamVerifier, parse_integrity, verify_file
from auraseal.manifest import (
    FileEntry,
    Manifest,
    ParsedManifest,
    parse_manifest,
    part_name,
)
from auraseal.sealing import parts_from_copy, rebuild_file
from auraseal.sealing.unseal import rebuild_from_readers
from auraseal.signing import TrustPolicy

__all__ = [
    "DEFAULT_FILE_TTL",
    "DEFAULT_JOBS",
    "DEFAULT_MANIFEST_TTL",
    "FetchProgress",
    "FetchReport",
    "FileReport",
    "fetch_package",
    "package_name_from_url",
]

DEFAULT_MANIFEST_TTL = timedelta(hours=1)
DEFAULT_FILE_TTL = timedelta(hours=6)
DEFAULT_JOBS = 4
COPY_CHUNK = 1024 * 1024
#: threads fsyncing finished files while others still download
SYNC_THREADS = 2
#: pipelined runs tried for one batch of parts before one request per part
RUN_ATTEMPTS = 4
#: ``rebuild(entry, part_files_by_number, target)``: write the file to ``target``
#: from k part files already verified against the manifest (checked again after)
RebuildFn = Callable[[FileEntry, Mapping[int, Path], Path], None]
#: ``salvage(entry, damaged_copy, scratch_dir, skip)`` -> candidate part files by
#: number, written in ``scratch_dir`` (verified by the caller unless the default)
SalvageFn = Callable[[FileEntry, Path, Path, Collection[int]], Mapping[int, Path]]
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
    #: how the manifest was trusted (see :meth:`_Fetch.trust`): ``mode`` is
    #: ``trusted-key``, ``pinned``, ``pinned-now`` or ``unsigned``
    trust: dict[str, Any] = field(default_factory=dict)
    #: when the manifest used was fetched, if it was a cached copy
    manifest_cached_at: str | None = None

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
            "manifest_cached_at": self.manifest_cached_at,
            "trust": dict(self.trust),
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
            f"{trust_text(self.trust)}; "
            f"{self.bytes_downloaded} bytes downloaded in {self.seconds:.2f}s"
        )


def trust_text(trust: Mapping[str, Any]) -> str:
    """One phrase saying how a manifest was trusted (the ``trust`` of a report)."""
    mode = trust.get("mode")
    if mode == "unsigned":
        return "UNSIGNED: signatures not checked (--allow-unsigned)"
    good, keys, thr = trust.get("signatures"), trust.get("trusted_keys"), trust.get("threshold")
    if mode == "pinned-now":
        return (
            f"trust on first use: pinned {keys} key(s), threshold {thr}, "
            f"for '{trust.get('name')}' in {trust.get('pin')}; later fetches require them"
        )
    kind = "pinned" if mode == "pinned" else "trusted"
    return f"verified: {good} of {keys} {kind} signatures (threshold {thr})"


class _VerifySink:
    """Hashes and writes a download to ``fh``. A failed write (a full disk,
    EIO) is a :class:`StorageError` naming ``where`` (exit 5), never one more
    network failure to retry elsewhere: the HTTP layer lets it through."""

    def __init__(self, fh: BinaryIO, verifier: StreamVerifier, where: Path) -> None:
        self.fh = fh
        self.verifier = verifier
        self.where = where

    def write(self, data: bytes, /) -> object:
        self.verifier.update(data)
        try:
            return self.fh.write(data)
        except OSError as exc:
            raise StorageError(f"cannot write: {exc.strerror}", str(self.where)) from exc


@dataclass(frozen=True)
class _Slot:
    """One downloaded part: ``size`` bytes at ``base`` of the spool's parts
    file (written only once verified against the manifest is it used)."""

    fd: int
    base: int
    size: int
    #: the spool file (named by a failed write)
    where: str = ""

    def read(self, off: int, length: int) -> bytes:
        if off >= self.size:
            return b""
        return os.pread(self.fd, min(length, self.size - off), self.base + off)

    def write(self, pos: int, data: bytes) -> None:
        if pos + len(data) > self.size:  # the caller caps bodies at the size
            raise StorageError("part larger than its slot", f"spool offset {self.base}")
        # a failed write is the local disk, not the server: the fetch stops (exit 5)
        pwrite_all(self.fd, data, self.base + pos, self.where)


class _SlotSink:
    """A :class:`~auraseal.client.http.Sink` filling one slot, hashing as it goes."""

    def __init__(self, slot: _Slot, verifier: StreamVerifier) -> None:
        self.slot = slot
        self.verifier = verifier
        self.pos = 0

    def write(self, data: bytes, /) -> object:
        self.verifier.update(data)
        self.slot.write(self.pos, data)
        self.pos += len(data)
        return len(data)


class _Spool:
    """Scratch space for one file's recovery, in a temp directory (``_fs``
    scheme, kind ``parts``) next to the staged file, made on first use and
    removed by :meth:`close` — the stage is only swapped in after every
    file's spool is gone. Downloaded parts go to one sparse file, each at a
    fixed slot (the sum of the sizes of the parts before it): one file
    created per component rather than one per part (creating thousands of
    small files was most of the cost of a rebuild). Salvaged parts are files
    in the same directory."""

    def __init__(self, parent: Path, stem: str) -> None:
        self._parent = parent
        self._stem = stem
        self._path: Path | None = None
        self._fd: int | None = None
        self._bases: list[int] = []
        self._lock = threading.Lock()

    def dir(self) -> Path:
        with self._lock:
            return self._dir()

    def _dir(self) -> Path:
        if self._path is None:
            self._path = make_temp_dir(self._parent, self._stem, "parts")
        return self._path

    def slot(self, entry: FileEntry, number: int) -> _Slot:
        assert entry.recovery is not None
        parts = entry.recovery.parts
        with self._lock:
            if self._fd is None:
                path = self._dir() / "parts"
                try:
                    self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                                       0o600)
                except OSError as exc:
                    raise StorageError(f"cannot create: {exc.strerror}", str(path)) from exc
                base = 0
                for info in parts:
                    self._bases.append(base)
                    base += info.size
            where = str(self._dir() / "parts")
            return _Slot(self._fd, self._bases[number], parts[number].size, where)

    def materialize(self, number: int, slot: _Slot | _Held) -> Path:
        """The part in ``slot`` as a file of its own (for a custom rebuild)."""
        path = self.dir() / f"part.{number}"
        with open(path, "wb") as fh:
            fh.write(slot.read(0, slot.size))
        return path

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._path is not None:
                shutil.rmtree(self._path, ignore_errors=True)
                self._path = None


#: a verified part: a salvaged part file, or a downloaded part's slot
@dataclass(frozen=True)
class _Held:
    """A salvaged part kept in memory (verified against the manifest)."""

    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, off: int, length: int) -> bytes:
        return self.data[off : off + length]


_Part = Path | _Slot | _Held


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
        events: EventSink | None,
        now: datetime | None,
        rebuild: RebuildFn | None,
        salvage: SalvageFn | None,
        package: str | None = None,
        step: StepHook | None = None,
        allow_unsigned: bool = False,
        trust_on_first_use: bool = False,
        force: bool = False,
        root: RootTrust | None = None,
        witnessed: WitnessPolicy | None = None,
    ) -> None:
        self.url = url
        self.witnessed = witnessed
        self.allow_unsigned = allow_unsigned
        self.trust_on_first_use = trust_on_first_use
        self.force = force
        #: how the manifest returned by :meth:`manifest` was trusted
        self.trust_info: dict[str, Any] = {}
        #: keys to pin (trust on first use) once every file is verified
        self.new_anchor: TrustAnchor | None = None
        self.manifest_cached_at: datetime | None = None
        self.foreign = 0
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
        self.events = events
        self.now = now or utcnow()
        cfg = http or HttpConfig()
        if cfg.max_connections < self.jobs * 2:
            cfg = dataclasses.replace(cfg, max_connections=self.jobs * 2)
        self.fetcher = Fetcher(cfg, transport)
        self.rebuild: RebuildFn = rebuild if rebuild is not None else rebuild_file
        self.salvage: SalvageFn = salvage if salvage is not None else parts_from_copy
        self.warnings: list[str] = []
        self._lock = threading.Lock()
        self._downloaded = 0
        self._abort = threading.Event()
        self._queued: list[tuple[str, dict[str, Any]]] = []
        self._pin_ok = [True] * len(self.sources)
        self._pipe_ok = [True] * len(self.sources)
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
        if self.events is None:
            return
        with self._lock:
            self._queued.append((entry_type, data))

    def flush_ledger(self) -> None:
        if self.events is None:
            return
        with self._lock:
            queued, self._queued = self._queued, []
        for entry_type, data in queued:
            try:
                self.events.record(entry_type, data)
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

    def _policy(
        self, name: str, parsed: ParsedManifest, where: str
    ) -> tuple[TrustPolicy | None, str, TrustAnchor | None]:
        """The policy a manifest for ``name`` must meet, how it was chosen, and
        the anchor to pin if it is a first use. Explicit keys win; then the
        keys pinned for the package; then (opt-in) the keys that signed this
        manifest; then (opt-in) no check at all."""
        if self.policy is not None:
            return self.policy, "trusted-key", None
        if self.cache is not None:
            anchor = self.cache.pin(name)
            if anchor is not None:
                return anchor.policy(), "pinned", anchor
        if self.trust_on_first_use:
            keys = parsed.signers()
            if not keys:
                raise NoTrustAnchorError(
                    "--trust-on-first-use: the manifest carries no valid signature with a "
                    "public key to pin (unsigned, or signed by an older AuraSeal); "
                    "pass --trusted-key PUB",
                    where,
                )
            # every key that signed, all of them required: a pin never asks less
            # of later manifests than this first one showed (safer than 1)
            anchor = TrustAnchor(
                name, tuple(keys), len(keys), pinned_at=self.now, source=self.url
            )
            return anchor.policy(), "pinned-now", anchor
        if self.allow_unsigned:
            return None, "unsigned", None
        raise NoTrustAnchorError(no_anchor_message(name), where)

    def trust(self, data: bytes, where: str) -> tuple[Manifest, str]:
        """Parse ``data`` once, verify each signature once, and return the
        manifest with its digest over the signed bytes (rollback, trust state)."""
        parsed = parse_manifest(data, where, self.url)
        anchor: TrustAnchor | None = None
        policy: TrustPolicy | None
        by_root = (
            self.roots.load_manifest(parsed, self.expected) if self.roots is not None else None
        )
        if by_root is not None:
            # a root of trust (given, pinned, or first use of the server's) decides
            vm, mode = by_root, "root"
            name = self.expected if self.expected is not None else vm.manifest.name
            policy = vm.policy
        else:
            name = self.expected if self.expected is not None else parsed.manifest.name
            policy, mode, anchor = self._policy(name, parsed, where)
            try:
                vm = parsed.verify(policy, self.now)
            except (BadSignatureError, UnknownKeyError, ThresholdError) as exc:
                if mode != "pinned" or self.cache is None or policy is None:
                    raise
                pin = pin_path(self.cache.root, name)
                raise PinnedKeyError(
                    f"not signed by the {len(policy.keys)} key(s) pinned for '{name}' "
                    f"(threshold {policy.threshold}) in {pin}: {exc.what}; if the "
                    "publisher really changed keys, check the new key out of band, then "
                    "delete that file or pass --trusted-key",
                    where,
                ) from exc
        m, good, digest = vm.manifest, vm.signers, vm.digest
        if self.expected is not None and m.name != self.expected:
            # every package on a server is signed by the same key: a mirror or
            # man-in-the-middle must not install another one instead
            raise PackageMismatchError(
                f"manifest is for package '{m.name}', not the '{self.expected}' asked for",
                where,
            )
        if policy is None and m.expires is not None and m.expires <= self.now:
            raise ExpiredError(
                f"manifest '{m.name}' v{m.version} expired at {format_time(m.expires)}", where
            )
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
        # the accepted candidate: how it was trusted (for the report)
        self.new_anchor = anchor if mode == "pinned-now" else None
        self.trust_info = {
            "mode": mode,
            "name": m.name,
            "verified": policy is not None,
            "signatures": len(good),
            "trusted_keys": 0 if policy is None else len({k.key_id for k in policy.keys}),
            "threshold": 0 if policy is None else policy.threshold,
            "key_ids": sorted(good),
            "pin": None if anchor is None or self.cache is None
            else str(pin_path(self.cache.root, name)),
        }
        return m, digest

    def manifest(self) -> tuple[Manifest, str, str]:
        """The trusted manifest, where it came from. Online, every fetch asks
        the server (with ``If-None-Match`` when a copy is cached: a 304 is one
        small request), so a fetch right after a publish sees it; the cached
        copy stands in only when no source answers, and only within the
        manifest TTL (said in the report). Offline uses the cached copy."""
        primary = self.sources[0]
        cached = self.cache.manifest(primary.manifest_url) if self.cache is not None else None
        errors: list[AuraSealError] = []
        if self.offline:
            if cached is None:
                raise StorageError("no cached manifest to use offline", primary.manifest_url)
            self.manifest_cached_at = cached[1].fetched_at
            return *self.trust(cached[0], f"{primary.manifest_url} (cached)"), "cache"
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
            data, meta = cached
            when = format_time(meta.fetched_at)
            if self.now - meta.fetched_at >= self.manifest_ttl:
                raise NetworkError(
                    f"no source answered ({errors[0].what}) and the cached manifest from "
                    f"{when} is older than the manifest TTL ({self.manifest_ttl})",
                    primary.manifest_url,
                )
            m, digest = self.trust(data, f"{primary.manifest_url} (cached)")
            self.manifest_cached_at = meta.fetched_at
            self.warnings.append(f"using cached manifest from {when} (server unreachable)")
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
                sink = _VerifySink(fo, ver, target)
                while chunk := fi.read(COPY_CHUNK):
                    if ver.bytes_seen + len(chunk) > entry.size:
                        ver.update(chunk)
                        break
                    sink.write(chunk)
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
                    sink = _VerifySink(fh, ver, target)
                    self.fetcher.download(url, sink, entry.size, progress=count)
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

    def _fetch_part(
        self, entry: FileEntry, number: int, spool: _Spool, skip: int | None = None
    ) -> tuple[_Slot | None, list[str]]:
        """Download part ``number`` into its slot of the spool, verified against
        the manifest while it streams to disk, from each source in turn but
        ``skip``; the slot, or None and the refusals."""
        assert entry.recovery is not None
        info = entry.recovery.parts[number]
        n = len(self.sources)
        rejected: list[str] = []
        dest = spool.slot(entry, number)
        for j in range(n):
            if self._abort.is_set():
                break
            i = (number + j) % n
            if i == skip:
                continue
            src = self.sources[i]

            def get(url: str) -> _Slot:
                ver = StreamVerifier(info.integrity, url)
                try:
                    sink = _SlotSink(dest, ver)
                    self.fetcher.download(url, sink, info.size, progress=self._net_quiet)
                except OSError as exc:
                    raise StorageError(f"cannot write the spool: {exc.strerror}",
                                       entry.path) from exc
                ver.verify()
                return dest

            try:
                got = self._via(i, functools.partial(self._part_url, src, entry, number), get)
            except StorageError:
                raise  # the local disk failed, not this source: stop
            except AuraSealError as exc:
                rejected.append(f"{src.label} part {number}: {exc.what}")
                continue
            return got, rejected
        return None, rejected  # the slot's bytes (unverified) are never read

    def _fetch_parts(
        self, entry: FileEntry, numbers: Sequence[int], spool: _Spool
    ) -> list[tuple[int, _Slot | None, list[str]]]:
        """Download the parts ``numbers``: pipelined in runs on one connection
        to one source while it allows (client/_parts_http.py); a part whose
        answer was refused, and what the runs did not deliver, one request per
        part from every source in turn (:meth:`_fetch_part`, which also learns
        whether the source serves pinned URLs)."""
        assert entry.recovery is not None
        out: list[tuple[int, _Slot | None, list[str]]] = []
        todo = list(numbers)
        n = len(self.sources)
        i = numbers[0] % n if numbers else 0
        src = self.sources[i]
        c = self.fetcher.config
        for _ in range(RUN_ATTEMPTS):
            if len(todo) < 2 or not self._pipe_ok[i] or self._abort.is_set():
                break
            pinned = src.pinned_base is not None and self._pin_ok[i]
            slots = {num: spool.slot(entry, num) for num in todo}
            reqs = [
                PartRequest(
                    num, src.part_url(entry, num, pinned=pinned), slots[num].size,
                    entry.recovery.parts[num].integrity, slots[num].fd, slots[num].base,
                    slots[num].where,
                )
                for num in todo
            ]
            res = fetch_run(
                reqs, timeout=c.timeout, min_rate=c.min_rate, grace=c.grace,
                user_agent=c.user_agent, count=self._net_quiet, cancelled=self._abort.is_set,
            )
            if not res.persistent:
                self._pipe_ok[i] = False
            out.extend((num, slots[num], []) for num in res.got)
            for num, what in res.rejected:
                if pinned and what == "HTTP 404":
                    # maybe no kept versions there: the per-part path asks the plain URL
                    out.append((num, *self._fetch_part(entry, num, spool)))
                else:  # this source's answer was refused: the others, one request each
                    one, rejected = self._fetch_part(entry, num, spool, skip=i)
                    out.append((num, one, [f"{src.label} part {num}: {what}", *rejected]))
            todo = list(res.leftover)
            if not res.got and not res.rejected:
                break  # no progress on this connection: one request per part
        for num in todo:
            one, rejected = self._fetch_part(entry, num, spool)
            out.append((num, one, rejected))
        return out

    def _net_quiet(self, n: int) -> None:
        with self._lock:
            self._downloaded += n

    def _salvage(
        self, entry: FileEntry, target: Path, into: dict[int, _Part], spool: _Spool
    ) -> None:
        """Add to ``into`` the parts the damaged copy at ``target`` still re-creates
        exactly (streamed from disk: bounded memory whatever the size); each is
        checked against the manifest's part integrity. Salvage only saves
        downloads: if it fails for any reason, the parts are fetched instead."""
        rec = entry.recovery
        if rec is None or len(into) >= rec.k:
            return
        try:
            if target.stat().st_size == 0:
                return
        except OSError:
            return  # nothing was downloaded
        held: dict[int, bytes] = {}
        cands: Mapping[int, Path]
        try:
            if self.salvage is parts_from_copy:  # small components: matches kept in memory
                cands = parts_from_copy(entry, target, spool.dir(), frozenset(into), keep=held)
            else:
                cands = self.salvage(entry, target, spool.dir(), frozenset(into))
        except AuraSealError:
            return
        except Exception as exc:  # I/O or a bug: it must not cost the fetch; say so
            with self._lock:
                self.warnings.append(
                    f"{entry.path}: salvage skipped: {type(exc).__name__}: {exc}"
                )
            return
        # parts_from_copy keeps only parts whose SHA-256 it compared with the
        # manifest's; any other salvage function's output is checked here
        checked = self.salvage is parts_from_copy
        for n, part in cands.items():
            if n in into or not 0 <= n < len(rec.parts):
                continue
            if not checked:
                try:
                    verify_file(part, rec.parts[n].integrity, part_name(entry.path, n))
                except (AuraSealError, OSError):
                    continue  # never use an unverified byte
            into[n] = part
        for n, data in held.items():
            if n not in into:
                into[n] = _Held(data)

    def _from_parts(
        self,
        entry: FileEntry,
        target: Path,
        pool: ThreadPoolExecutor,
        report: FileReport,
        *,
        salvaged: Mapping[int, _Part],
        spool: _Spool,
    ) -> None:
        rec = entry.recovery
        assert rec is not None
        total = len(rec.parts)
        good: dict[int, _Part] = dict(salvaged)
        report.parts_salvaged = len(good)
        # the data parts the salvage could not re-create first, then parity
        order = [n for n in range(min(rec.k, total)) if n not in good]
        order += [n for n in range(rec.k, total) if n not in good]
        pending: dict[Future[list[tuple[int, _Slot | None, list[str]]]], int] = {}
        nxt = 0
        c = self.fetcher.config

        def submit(count: int) -> None:
            """Ask for the next ``count`` parts of ``order``, in runs of at most
            ``run_parts`` parts / ``run_bytes`` bytes, at least ``jobs`` runs
            when there are enough parts (16 or more a run) to share out."""
            nonlocal nxt
            take = order[nxt : nxt + count]
            nxt += len(take)
            if not take:
                return
            size = max([1, *(rec.parts[x].size for x in take)])
            runs = max(
                -(-len(take) // max(1, c.run_parts)),
                -(-len(take) * size // max(1, c.run_bytes)),
                min(self.jobs, len(take) // 16),
                1,
            )
            per = -(-len(take) // runs)
            for j in range(0, len(take), per):
                batch = take[j : j + per]
                pending[pool.submit(self._fetch_parts, entry, batch, spool)] = len(batch)

        try:
            submit(rec.k - len(good))
            while pending and len(good) < rec.k:
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for fut in done:
                    pending.pop(fut)
                    for number, data, rejected in fut.result():
                        report.rejected.extend(rejected)
                        report.bad_parts += len(rejected)
                        if data is not None:
                            good[number] = data
                short = rec.k - len(good) - sum(pending.values())
                if short > 0:
                    submit(short)
        finally:
            for fut in pending:
                fut.cancel()
            wait(list(pending))  # none may still be writing into the spool
        if len(good) < rec.k:
            raise ComponentLostError(
                f"only {len(good)} good parts of {total}; {rec.k} needed", entry.path,
                good=len(good), total=total, k=rec.k,
            )
        # decoded stripe by stripe into a temp file next to target, renamed
        # over it only if the whole file matches the manifest
        chosen = dict(sorted(good.items())[: rec.k])
        try:
            if self.rebuild is rebuild_file:
                self._rebuild_spooled(entry, chosen, target)
            else:
                self.rebuild(entry, {
                    n: p if isinstance(p, Path) else spool.materialize(n, p)
                    for n, p in chosen.items()
                }, target)
                verify_file(target, entry.integrity, entry.path)
        except OSError as exc:
            where = str(exc.filename) if exc.filename else str(target)
            raise StorageError(f"cannot rebuild: {exc.strerror or exc}", where) from exc
        except IntegrityError:
            target.unlink(missing_ok=True)
            raise
        report.parts_used = len(good)

    @staticmethod
    def _rebuild_spooled(entry: FileEntry, parts: Mapping[int, _Part], target: Path) -> None:
        """:func:`rebuild_file` from salvaged part files and spool slots."""
        with contextlib.ExitStack() as stack:
            readers: dict[int, Callable[[int, int], bytes]] = {}
            for n, p in parts.items():
                if isinstance(p, Path):
                    fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
                    stack.callback(os.close, fd)
                    readers[n] = functools.partial(_pread_at, fd)
                else:
                    readers[n] = p.read
            rebuild_from_readers(entry, readers, target)

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
        spool = _Spool(target.parent, target.name)
        try:
            return self._obtain(entry, target, pool, spool)
        except StorageError as exc:
            # a write into the stage or a spool failed (e.g. a full disk):
            # name the file of DIR it was for, not a temp path
            if exc.where.startswith(str(stage.path)):
                raise StorageError(exc.what, str(self.dest / entry.path)) from exc
            raise
        finally:
            spool.close()

    def _obtain(
        self, entry: FileEntry, target: Path, pool: ThreadPoolExecutor, spool: _Spool
    ) -> FileReport:
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
            salvaged: dict[int, _Part] = {}
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
                    self._salvage(entry, target, salvaged, spool)
                    target.unlink(missing_ok=True)  # the damaged copy: never kept
                    continue
                self._store(target, entry, digest)
                return done(src.label, url, counted=True)
            # 4. parts from all sources at once
            if entry.recovery is not None:
                try:
                    self._from_parts(
                        entry, target, pool, report, salvaged=salvaged, spool=spool
                    )
                    self._store(target, entry, self._digest_of(entry))
                    self.record(
                        "fetch.recovered",
                        {"path": entry.path, "parts_used": report.parts_used,
                         "bad_parts": report.bad_parts,
                         "parts_salvaged": report.parts_salvaged},
                    )
                    return done("parts")
                except StorageError:
                    # the local disk failed (full, read-only, a directory in
                    # the way): exit 5 naming that path, never "lost" or a
                    # network failure, and no other source can fix it
                    raise
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
            self.foreign = check_destination(self.dest, self.record_now, self.force)
            if self.expected is None:
                self.expected = installed_name(self.record_now) or package_name_from_url(
                    self.url
                )
            return self._run()

    def _run(self) -> FetchReport:
        t0 = time.monotonic()
        manifest, digest, msource = self.manifest()
        if self.witnessed is not None:  # before anything is written (client/witnessed.py)
            self.trust_info["witnessed"] = require_witnessed(
                self.fetcher, self.sources[0].base, manifest, digest, self.witnessed)
        self.sources = [s.pinned(manifest.version) for s in self.sources]
        self._pin_ok = [True] * len(self.sources)
        self._pipe_ok = [self.fetcher.can_pipeline(s.base) for s in self.sources]
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
            if self.new_anchor is not None and self.cache is not None:
                # every file verified: pin the keys (under the trust lock) before the swap
                pin, written = self.cache.save_pin(self.new_anchor, self.url)
                if not written:  # pinned meanwhile by another fetch, to the same keys
                    self.trust_info["mode"] = "pinned"
                self.trust_info["pin"] = str(pin)
            old_prev = self.record_now.previous if self.record_now is not None else None
            rec = swap_in(
                stage,
                Installed(manifest.name, manifest.version, digest, self.url, format_time(utcnow())),
                self.step,
                locked=True,
            )
        except BaseException:
            stage.discard()
            raise
        if self.foreign:
            self.warnings.append(
                f"{self.dest} was not an AuraSeal install: its {self.foreign} entries were "
                f"moved to {prev_dir(self.dest)}; 'auraseal rollback {self.dest}' restores "
                "them until the next fetch replaces that copy"
            )
        elif (
            old_prev is not None
            and old_prev.name == FOREIGN
            and (rec.previous is None or rec.previous.name != FOREIGN)
        ):
            self.warnings.append(
                f"removed {prev_dir(self.dest)}: the files that were in {self.dest} before "
                "'fetch --force' (kept until this fetch)"
            )
        previous = (
            rec.previous.version
            if rec.previous is not None and rec.previous.name != FOREIGN
            else None
        )
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
            trust=self.trust_info,
            manifest_cached_at=None
            if self.manifest_cached_at is None
            else format_time(self.manifest_cached_at),
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


def _pread_at(fd: int, off: int, length: int) -> bytes:
    return os.pread(fd, length, off)


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


def no_anchor_message(name: str | None) -> str:
    what = f"package '{name}'" if name else "this package (the URL names none: --package)"
    return (
        f"no trust anchor for {what}: pass --trusted-key PUB, or --trust-on-first-use "
        "to pin the keys it is signed with now, or --allow-unsigned to install without "
        "checking signatures"
    )


def installed_name(record: InstallRecord | None) -> str | None:
    """The package installed in DIR per its record (None for user files)."""
    cur = record.current if record is not None else None
    return cur.name if cur is not None and cur.name != FOREIGN else None


def check_destination(dest: Path, record: InstallRecord | None, force: bool) -> int:
    """How many entries of a non-empty DIR that is not an AuraSeal install
    ``--force`` will move to the previous copy (0: nothing foreign). Without
    ``force`` such a DIR is refused."""
    n = foreign_entries(dest, record)
    if n and not force:
        raise DestinationNotEmptyError(
            f"not empty ({n} entries) and not an AuraSeal install; nothing was changed "
            "(--force moves its files to the rollback copy and installs)",
            str(dest),
        )
    return n


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
    events: EventSink | None = None,
    now: datetime | None = None,
    rebuild: RebuildFn | None = None,
    salvage: SalvageFn | None = None,
    package: str | None = None,
    step: StepHook | None = None,
    allow_unsigned: bool = False,
    trust_on_first_use: bool = False,
    force: bool = False,
    root: RootTrust | None = None,
    witnessed: WitnessPolicy | None = None,
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

    Trust (docs/CLIENT.md, "Trust"): ``policy`` (explicit keys), else the keys
    pinned for the package in ``cache_dir``, else with ``trust_on_first_use``
    the keys that signed this manifest (pinned once every file verified), else
    with ``allow_unsigned`` no signature check (reported as ``unsigned``);
    with none of them the fetch is refused (exit 3) before anything is written.
    A non-empty ``dest`` that is not an AuraSeal install is refused (exit 2)
    unless ``force``: then its files become the previous copy (rollback).
    ``root`` (or, without it, a root pinned in ``cache_dir`` by an earlier
    fetch) makes the root of trust decide which keys sign manifests, in place
    of ``policy`` (see :mod:`auraseal.client.roots`). ``witnessed`` requires the
    publish of the version to be proven in a witnessed ledger
    (:mod:`auraseal.client.witnessed`; exit 3 otherwise). Verifications,
    recoveries and refusals are reported to ``events`` (if given; a sink that
    raises becomes a warning in the report).
    """
    dest = Path(dest).absolute()
    if trust_on_first_use and cache_dir is None:
        raise UsageError(
            "--trust-on-first-use needs a cache to pin the keys in (drop --no-cache)",
            "--trust-on-first-use",
        )
    if witnessed is not None and offline:
        raise UsageError("--require-witnessed-log needs the network (drop --offline)",
                         "--require-witnessed-log")
    for u in (url, *mirrors):
        make_source(u, "check")  # a malformed URL is a usage error (exit 2) first
    # refusals that must leave no trace: checked before anything is created
    record = read_record(dest) if dest.parent.is_dir() else None
    check_destination(dest, record, force)
    if policy is None and root is None and not trust_on_first_use and not allow_unsigned:
        name = package or installed_name(record) or package_name_from_url(url)
        pinned = name is not None and cache_dir is not None and (
            load_pin(cache_dir, name) is not None or pinned_root(cache_dir, name) is not None
        )
        if not pinned:
            raise NoTrustAnchorError(no_anchor_message(name), url)
    f = _Fetch(
        url, dest, mirrors=mirrors, policy=policy, cache_dir=cache_dir,
        fallback_dir=fallback_dir, manifest_ttl=manifest_ttl, file_ttl=file_ttl,
        offline=offline, jobs=jobs, progress=progress, transport=transport, http=http,
        events=events, now=now, rebuild=rebuild, salvage=salvage, package=package, step=step,
        allow_unsigned=allow_unsigned, trust_on_first_use=trust_on_first_use, force=force,
        root=root, witnessed=witnessed,
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
