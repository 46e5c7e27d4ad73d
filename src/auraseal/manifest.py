"""Manifests: one document per package listing every file's integrity.

Three formats are read and written (see ``docs/MANIFEST.md``):

* ``native`` — a signed envelope ``{"signed": {...}, "signatures": [...]}``
  whose ``signed`` part has ``_type``, ``spec_version``, ``name``, a
  monotonically increasing integer ``version``, ``created``, ``expires`` and
  ``files`` (path → size, integrity, parts, recovery).
* ``seed`` — the flat ``integrity-manifest.json`` of seed 000 §6.
* ``blockhub`` — BlockHub's ``index.json`` (``version``, ``lastUpdated``,
  ``files{name:{url,sha256,size}}``).

Fields a format carries that the model has no slot for are kept in
``extra`` so a round trip through any format loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from auraseal._canonical import canonical_json, canonical_sha256
from auraseal._fs import is_temp_name, resolve_inside, safe_relpath, walk_files
from auraseal._time import format_time, parse_time, utcnow
from auraseal.errors import (
    AuraSealError,
    DigestMismatchError,
    ExpiredError,
    ManifestFormatError,
    StorageError,
    ThresholdError,
    TreeMismatchError,
    UsageError,
)
from auraseal.httpsig import FileSignatures, sign_digest
from auraseal.integrity import (
    CHUNK,
    auraseal_string,
    check_integrity,
    hash_file,
    parse_integrity,
    sri_token,
    verify_file,
)
from auraseal.signing import (
    PublicKey,
    SignatureMemo,
    Signer,
    TrustPolicy,
    TrustState,
    envelope_signers,
    sign_envelope,
    verify_envelope,
    verify_envelope_signers,
)

__all__ = [
    "DEFAULT_EXPIRES",
    "FORMATS",
    "MANIFEST_NAME",
    "SPEC_VERSION",
    "FileEntry",
    "Manifest",
    "ParsedManifest",
    "PartInfo",
    "RecoveryInfo",
    "TreeReport",
    "VerifiedManifest",
    "build_manifest",
    "check_tree",
    "dump_manifest",
    "dump_signed",
    "is_trust_file",
    "load_manifest",
    "manifest_digest",
    "open_manifest",
    "parse_manifest",
    "part_name",
    "sign_http",
    "verify_tree",
]

MANIFEST_NAME = "integrity-manifest.json"
#: roots of trust and the online timestamp served beside a manifest
#: (docs/KEYS.md): never part of the file list
_TRUST_FILE = re.compile(r"^(?:root/[1-9][0-9]{0,8}\.json|timestamp\.json)$")


def is_trust_file(rel: str) -> bool:
    """``root/<N>.json`` or ``timestamp.json`` at the top of a package tree."""
    return bool(_TRUST_FILE.match(rel))
SPEC_VERSION = 1
#: Manifests whose files carry HTTP signatures (``http``, docs/FORMAT.md) are version 2.
HTTP_SPEC_VERSION = 2
READABLE_SPECS = (SPEC_VERSION, HTTP_SPEC_VERSION)
MANIFEST_TYPE = "auraseal/manifest"
DEFAULT_EXPIRES = timedelta(days=30)
FORMATS = ("native", "seed", "blockhub")
Progress = Callable[[int], None] | None


def part_name(path: str, number: int) -> str:
    """The file name of part ``number`` of component ``path``."""
    return f"{path}.part.{number}"


# --- model --------------------------------------------------------------------


@dataclass(frozen=True)
class PartInfo:
    """One part file of a sealed component."""

    number: int
    integrity: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "integrity": self.integrity, "size": self.size}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> PartInfo:
        if not isinstance(d, dict):
            raise ManifestFormatError("part must be an object", where)
        number = _int(d, "number", where)
        integ = _str(d, "integrity", where)
        check_integrity(integ, f"{where}.integrity")
        return cls(number=number, integrity=integ, size=_int(d, "size", where))


@dataclass(frozen=True)
class RecoveryInfo:
    """How a component was sealed: codec, data parts ``k``, parity ``m``, parts."""

    codec: str
    k: int
    m: int
    block_size: int
    compressed_size: int
    parts: tuple[PartInfo, ...]
    # Added by sealing (docs/FORMAT.md §2); 0 means the single-stripe default.
    engine: str = "zfec"
    stripe_size: int = 0
    fragment_size: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "k": self.k,
            "m": self.m,
            "block_size": self.block_size,
            "compressed_size": self.compressed_size,
            "engine": self.engine,
            "stripe_size": self.stripe_size or self.k * self.block_size,
            "fragment_size": self.fragment_size or self.block_size,
            "parts": [p.to_dict() for p in self.parts],
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> RecoveryInfo:
        if not isinstance(d, dict):
            raise ManifestFormatError("recovery must be an object", where)
        raw_parts = d.get("parts")
        if not isinstance(raw_parts, list):
            raise ManifestFormatError("recovery.parts must be a list", where)
        parts = tuple(PartInfo.from_dict(p, f"{where}.parts[{i}]") for i, p in enumerate(raw_parts))
        info = cls(
            codec=_str(d, "codec", where),
            k=_int(d, "k", where),
            m=_int(d, "m", where),
            block_size=_int(d, "block_size", where),
            compressed_size=_int(d, "compressed_size", where),
            parts=parts,
            engine=_str(d, "engine", where) if "engine" in d else "zfec",
            stripe_size=_int(d, "stripe_size", where) if "stripe_size" in d else 0,
            fragment_size=_int(d, "fragment_size", where) if "fragment_size" in d else 0,
        )
        if info.k < 1 or len(parts) != info.k + info.m or info.k + info.m > 256:
            raise ManifestFormatError("recovery needs 1 <= k, k+m parts, k+m <= 256", where)
        if [p.number for p in parts] != list(range(len(parts))):
            raise ManifestFormatError("recovery parts must be numbered 0..k+m-1", where)
        return info


@dataclass(frozen=True)
class FileEntry:
    """One file of a package."""

    path: str
    size: int
    integrity: str
    recovery: RecoveryInfo | None = None
    url: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def parts(self) -> int:
        if self.recovery is not None:
            return len(self.recovery.parts)
        n = self.extra.get("parts", 1)
        return n if isinstance(n, int) else 1

    def part_names(self) -> list[str]:
        if self.recovery is None:
            return []
        return [part_name(self.path, p.number) for p in self.recovery.parts]

    @property
    def http(self) -> FileSignatures | None:
        """The file's HTTP signatures (signature-based SRI), if it was signed for HTTP."""
        raw = self.extra.get("http")
        return None if raw is None else FileSignatures.from_dict(raw, f"{self.path}.http")


@dataclass(frozen=True)
class Manifest:
    """A package's manifest (the ``signed`` part of the native envelope)."""

    name: str
    version: int
    created: datetime
    expires: datetime | None
    files: tuple[FileEntry, ...]
    spec_version: int = SPEC_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def entry(self, path: str) -> FileEntry:
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(path)

    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    # native ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        files: dict[str, Any] = {}
        for f in self.files:
            d: dict[str, Any] = dict(f.extra)
            d.update({"size": f.size, "integrity": f.integrity, "parts": f.parts})
            if f.recovery is not None:
                d["recovery"] = f.recovery.to_dict()
            if f.url is not None:
                d["url"] = f.url
            files[f.path] = d
        doc: dict[str, Any] = dict(self.extra)
        doc.update(
            {
                "_type": MANIFEST_TYPE,
                "spec_version": self.spec_version,
                "name": self.name,
                "version": self.version,
                "created": format_time(self.created),
                "expires": None if self.expires is None else format_time(self.expires),
                "files": files,
            }
        )
        return doc

    @classmethod
    def from_dict(cls, d: Any, where: str = "manifest") -> Manifest:
        if not isinstance(d, dict):
            raise ManifestFormatError("manifest must be a JSON object", where)
        if d.get("_type") != MANIFEST_TYPE:
            raise ManifestFormatError(f"_type must be '{MANIFEST_TYPE}'", where)
        spec = _int(d, "spec_version", where)
        if spec not in READABLE_SPECS:
            raise ManifestFormatError(
                f"unsupported spec_version {spec} (this AuraSeal reads 1 and 2)", where
            )
        raw_files = d.get("files")
        if not isinstance(raw_files, dict):
            raise ManifestFormatError("'files' must be an object", where)
        entries = []
        for path, fd in raw_files.items():
            fw = f"{where}: files[{path!r}]"
            safe_relpath(path, fw)
            if not isinstance(fd, dict):
                raise ManifestFormatError("file entry must be an object", fw)
            integ = _str(fd, "integrity", fw)
            check_integrity(integ, fw)
            rec = fd.get("recovery")
            recovery = None if rec is None else RecoveryInfo.from_dict(rec, f"{fw}.recovery")
            url = fd.get("url")
            if url is not None and not isinstance(url, str):
                raise ManifestFormatError("url must be a string", fw)
            extra = {
                k: v
                for k, v in fd.items()
                if k not in ("size", "integrity", "parts", "recovery", "url")
            }
            if recovery is None and "parts" in fd:
                extra["parts"] = fd["parts"]
            if "http" in extra:
                FileSignatures.from_dict(extra["http"], f"{fw}.http")
            entries.append(
                FileEntry(path, _int(fd, "size", fw), integ, recovery, url, extra)
            )
        version = _int(d, "version", where)
        expires = d.get("expires")
        known = ("_type", "spec_version", "name", "version", "created", "expires", "files")
        return cls(
            name=_str(d, "name", where),
            version=version,
            created=parse_time(_str(d, "created", where), f"{where}.created"),
            expires=None if expires is None else parse_time(str(expires), f"{where}.expires"),
            files=tuple(sorted(entries, key=lambda e: e.path)),
            spec_version=spec,
            extra={k: v for k, v in d.items() if k not in known},
        )

    # seed 000 §6 -------------------------------------------------------------

    def to_seed(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in self.files:
            d: dict[str, Any] = {"integrity": f.integrity, "size": f.size, "parts": f.parts}
            d.update({k: v for k, v in f.extra.items() if k != "parts"})
            out[f.path] = d
        return out

    @classmethod
    def from_seed(cls, d: Any, where: str = "manifest", name: str = "") -> Manifest:
        if not isinstance(d, dict):
            raise ManifestFormatError("seed manifest must be a JSON object", where)
        entries = []
        for path, fd in d.items():
            fw = f"{where}: {path!r}"
            safe_relpath(path, fw)
            if not isinstance(fd, dict):
                raise ManifestFormatError("entry must be an object", fw)
            integ = _str(fd, "integrity", fw)
            check_integrity(integ, fw)
            extra = {k: v for k, v in fd.items() if k not in ("integrity", "size")}
            entries.append(FileEntry(path, _int(fd, "size", fw), integ, extra=extra))
        return cls(
            name=name or "package",
            version=0,
            created=utcnow(),
            expires=None,
            files=tuple(sorted(entries, key=lambda e: e.path)),
            extra={"format": "seed"},
        )

    # BlockHub index.json (seed 003) -----------------------------------------

    def to_blockhub(self, base_url: str | None = None) -> dict[str, Any]:
        files: dict[str, Any] = {}
        for f in self.files:
            integ = parse_integrity(f.integrity)
            digest = next(
                (d for d in integ.digests if integ.algorithm == "sha256"),
                None,
            )
            extra_hex = f.extra.get("sha256")
            if digest is None and not isinstance(extra_hex, str):
                raise ManifestFormatError(
                    "BlockHub index.json needs a sha256 digest; build with --algorithm sha256"
                    " or without --format blockhub",
                    f.path,
                )
            hexd = digest.hex() if digest is not None else str(extra_hex)
            url = f.url or (base_url.rstrip("/") + "/" + f.path if base_url else f.path)
            d: dict[str, Any] = {k: v for k, v in f.extra.items() if k not in ("parts",)}
            d.update({"url": url, "sha256": hexd, "size": f.size})
            files[f.path] = d
        doc: dict[str, Any] = {
            k: v for k, v in self.extra.items() if k not in ("format", "blockhub_version")
        }
        doc.update(
            {
                "version": str(self.extra.get("blockhub_version", self.version)),
                "lastUpdated": str(self.extra.get("lastUpdated", format_time(self.created))),
                "files": files,
            }
        )
        return doc

    @classmethod
    def from_blockhub(cls, d: Any, where: str = "index.json", name: str = "") -> Manifest:
        if not isinstance(d, dict) or not isinstance(d.get("files"), dict):
            raise ManifestFormatError("index.json needs a 'files' object", where)
        entries = []
        for key, fd in d["files"].items():
            fw = f"{where}: files[{key!r}]"
            safe_relpath(key, fw)
            if not isinstance(fd, dict):
                raise ManifestFormatError("entry must be an object", fw)
            hexd = _str(fd, "sha256", fw)
            try:
                raw = bytes.fromhex(hexd)
            except ValueError as exc:
                raise ManifestFormatError("sha256 is not hex", fw) from exc
            if len(raw) != 32:
                raise ManifestFormatError("sha256 must be 64 hex digits", fw)
            extra = {k: v for k, v in fd.items() if k not in ("url", "sha256", "size")}
            url = fd.get("url")
            entries.append(
                FileEntry(
                    key,
                    _int(fd, "size", fw),
                    sri_token("sha256", raw),
                    url=url if isinstance(url, str) else None,
                    extra=extra,
                )
            )
        ver = str(d.get("version", "0"))
        last = d.get("lastUpdated")
        try:
            created = parse_time(str(last), where) if last else utcnow()
        except AuraSealError:
            created = utcnow()
        top_extra = {k: v for k, v in d.items() if k not in ("files", "version")}
        top_extra.update({"format": "blockhub", "blockhub_version": ver})
        return cls(
            name=name or "index",
            version=_semver_int(ver),
            created=created,
            expires=None,
            files=tuple(sorted(entries, key=lambda e: e.path)),
            extra=top_extra,
        )


def _semver_int(text: str) -> int:
    """``"1.2.3"`` → 1002003 so BlockHub versions compare as integers."""
    nums = []
    for p in text.split(".")[:3]:
        digits = "".join(c for c in p if c.isdigit())
        nums.append(int(digits) if digits else 0)
    while len(nums) < 3:
        nums.append(0)
    return nums[0] * 1_000_000 + nums[1] * 1_000 + nums[2]


def _int(d: Mapping[str, Any], key: str, where: str) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ManifestFormatError(f"'{key}' must be a non-negative integer", where)
    return v


def _str(d: Mapping[str, Any], key: str, where: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v:
        raise ManifestFormatError(f"'{key}' must be a non-empty string", where)
    return v


# --- JSON in and out ------------------------------------------------------------


def _no_duplicates(where: str) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise ManifestFormatError(f"duplicate key {k!r}", where)
            out[k] = v
        return out

    return hook


def parse_json(data: bytes, where: str) -> Any:
    """Parse JSON, refusing duplicate keys (an entry listed twice)."""
    try:
        return json.loads(data, object_pairs_hook=_no_duplicates(where))
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, ManifestFormatError):
            raise
        raise ManifestFormatError(f"not valid JSON: {exc}", where) from exc


def detect_format(doc: Any) -> str:
    if isinstance(doc, dict) and isinstance(doc.get("signed"), dict):
        return "native"
    if isinstance(doc, dict) and doc.get("_type") == MANIFEST_TYPE:
        return "native"
    if isinstance(doc, dict) and isinstance(doc.get("files"), dict) and "lastUpdated" in doc:
        return "blockhub"
    return "seed"


def manifest_digest(manifest: Manifest) -> str:
    """Hex SHA-256 of the canonical JSON of ``manifest`` as this code writes it:
    for a manifest just built (seal, resign). A manifest read from bytes is
    identified by :attr:`VerifiedManifest.digest`, over the bytes that were
    signed (equal to this for a manifest AuraSeal wrote)."""
    return canonical_sha256(manifest.to_dict())


def dump_signed(manifest: Manifest, keys: Sequence[Signer] = ()) -> bytes:
    """The native envelope as pretty JSON bytes, signed by each of ``keys``."""
    env = sign_envelope(manifest.to_dict(), keys)
    return (json.dumps(env, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def dump_manifest(
    manifest: Manifest,
    fmt: str = "native",
    keys: Sequence[Signer] = (),
    base_url: str | None = None,
) -> bytes:
    """Serialize in one of :data:`FORMATS` (only ``native`` carries signatures)."""
    if fmt == "native":
        return dump_signed(sign_http(manifest, keys), keys)
    if keys:
        raise ManifestFormatError(f"the {fmt} format cannot carry signatures", fmt)
    doc = manifest.to_seed() if fmt == "seed" else manifest.to_blockhub(base_url)
    if fmt not in FORMATS:
        raise ManifestFormatError(f"unknown format (use {', '.join(FORMATS)})", fmt)
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


@dataclass
class ParsedManifest:
    """A manifest parsed once from its bytes, its signatures not yet judged.

    ``body`` is what the signatures cover -- the RFC 8785 canonical JSON of a
    native envelope's ``signed`` object (of the whole document for an unsigned
    manifest) -- and ``digest`` (hex SHA-256 of ``body``) is the manifest's
    identity for rollback checks, trust state and timestamps: it is over the
    bytes that were signed, never over a re-serialization of the parsed
    :class:`Manifest`. Each signature is verified at most once, whatever is
    asked (:meth:`signers`, :meth:`verify`).
    """

    raw: bytes
    where: str
    doc: Any
    format: str
    manifest: Manifest
    body: bytes
    digest: str
    memo: SignatureMemo = field(default_factory=dict, repr=False)

    @property
    def signed(self) -> bool:
        return self.format == "native" and isinstance(self.doc, dict) and "signed" in self.doc

    def signers(self) -> list[PublicKey]:
        """The keys carried in the envelope whose signatures verify (trust on first use)."""
        if not self.signed:
            return []
        return envelope_signers(self.doc, self.where, body=self.body, memo=self.memo)

    def verify(
        self, policy: TrustPolicy | None, now: datetime | None = None
    ) -> VerifiedManifest:
        """Judge the signatures against ``policy`` (None: no check) and the expiry.

        With ``policy``: the document must be a native envelope whose
        signatures meet the threshold (:class:`~auraseal.errors.TrustError`
        otherwise), and it must not be expired
        (:class:`~auraseal.errors.ExpiredError`)."""
        good: frozenset[str] = frozenset()
        if policy is not None:
            if self.format != "native":
                raise ThresholdError(f"a {self.format} manifest carries no signatures", self.where)
            if not self.signed:
                raise ThresholdError("manifest is not signed", self.where)
            good = verify_envelope_signers(
                self.doc, policy, self.where, body=self.body, memo=self.memo
            )[1]
            m = self.manifest
            if m.expires is not None and m.expires <= (now or utcnow()):
                raise ExpiredError(
                    f"manifest '{m.name}' v{m.version} expired at {format_time(m.expires)}",
                    self.where,
                )
        return VerifiedManifest(self.manifest, self.raw, self.digest, good, policy)


@dataclass(frozen=True)
class VerifiedManifest:
    """A manifest accepted under a policy: the parsed manifest, the exact bytes
    it came from, the digest over its signed bytes (see :class:`ParsedManifest`)
    and the ids of the trusted keys whose signatures verified under ``policy``
    (None: accepted without a signature check)."""

    manifest: Manifest
    raw: bytes
    digest: str
    signers: frozenset[str] = frozenset()
    policy: TrustPolicy | None = None


def parse_manifest(data: bytes, where: str = "manifest", name: str = "") -> ParsedManifest:
    """Parse a manifest in any supported format, once (signatures not checked yet)."""
    doc = parse_json(data, where)
    fmt = detect_format(doc)
    if fmt == "native":
        signed = doc.get("signed", doc)
        manifest = Manifest.from_dict(signed, where)
    else:
        signed = doc
        manifest = (
            Manifest.from_blockhub(doc, where, name)
            if fmt == "blockhub"
            else Manifest.from_seed(doc, where, name)
        )
    body = canonical_json(signed)
    return ParsedManifest(
        data, where, doc, fmt, manifest, body, hashlib.sha256(body).hexdigest()
    )


def open_manifest(
    data: bytes,
    where: str = "manifest",
    *,
    policy: TrustPolicy | None = None,
    now: datetime | None = None,
    name: str = "",
) -> VerifiedManifest:
    """:func:`parse_manifest` then :meth:`ParsedManifest.verify`: the one way a
    manifest's bytes become a trusted manifest (parsed once, each signature
    verified once, digest over the signed bytes)."""
    return parse_manifest(data, where, name).verify(policy, now)


def load_manifest(
    data: bytes,
    where: str = "manifest",
    *,
    policy: TrustPolicy | None = None,
    state: TrustState | None = None,
    now: datetime | None = None,
    record: bool = True,
    name: str = "",
) -> Manifest:
    """Parse a manifest in any supported format and, given a policy, trust it
    (:func:`open_manifest`). With ``state``: a version lower than the one
    trusted before, or the same version with other content (another digest
    over the signed bytes), raises :class:`~auraseal.errors.RollbackError`;
    an accepted manifest is recorded unless ``record`` is false.
    """
    vm = open_manifest(data, where, policy=policy, now=now, name=name)
    manifest = vm.manifest
    if state is not None:
        state.check(manifest.name, manifest.version, vm.digest, where)
        if record:
            state.record(manifest.name, manifest.version, vm.digest)
    return manifest


def read_manifest_file(path: Path, **kwargs: Any) -> Manifest:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read manifest: {exc.strerror}", str(path)) from exc
    return load_manifest(data, str(path), **kwargs)


# --- building and verifying trees ---------------------------------------------------


def _jobs(jobs: int | None) -> int:
    return max(1, jobs if jobs is not None else (os.cpu_count() or 1))


def _hash_all(
    root: Path,
    paths: Iterable[str],
    algorithm: str,
    jobs: int | None,
    progress: Progress,
    *,
    sizes: Mapping[str, int] | None = None,
) -> dict[str, bytes]:
    """Digest of every file, ``jobs`` threads at once (hashlib releases the GIL).

    With ``sizes``, the biggest files are started first, so the threads finish
    together. Each thread reads into one reused buffer. Each directory is
    proved to lie inside ``root`` once (:func:`resolve_inside`), and each file
    is opened with ``O_NOFOLLOW`` in it; only a file that is a symlink (which
    :func:`walk_files` listed because it stays inside) is resolved on its own.
    """
    real = root.resolve()
    names = list(paths)
    order = sorted(names, key=lambda p: -sizes[p]) if sizes is not None else names
    dirs: dict[str, Path] = {}
    local = threading.local()

    def one(rel: str) -> bytes:
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = bytearray(CHUNK)
        parent, _, leaf = safe_relpath(rel).rpartition("/")
        base = dirs.get(parent)
        if base is None:
            base = dirs[parent] = resolve_inside(real, parent) if parent else real
        try:
            return hash_file(base / leaf, algorithm, progress, buffer=buf, flags=os.O_NOFOLLOW)
        except StorageError:
            if not os.path.islink(base / leaf):
                raise
        return hash_file(resolve_inside(real, rel), algorithm, progress, buffer=buf)

    with ThreadPoolExecutor(max_workers=_jobs(jobs)) as pool:
        digests = dict(zip(order, pool.map(one, order), strict=True))
    return {n: digests[n] for n in names}


def build_manifest(
    root: Path,
    *,
    name: str,
    version: int = 1,
    expires: timedelta | None = DEFAULT_EXPIRES,
    algorithm: str = "sha512",
    jobs: int | None = None,
    progress: Progress = None,
    exclude: frozenset[str] = frozenset({MANIFEST_NAME}),
    base_url: str | None = None,
    now: datetime | None = None,
) -> Manifest:
    """Hash every regular file below ``root`` (both cores) into a manifest."""
    root = Path(root)
    paths = [p for p in walk_files(root, exclude=exclude) if not is_trust_file(p)]
    sizes = {p: (root / p).stat().st_size for p in paths}
    digests = _hash_all(root, paths, algorithm, jobs, progress, sizes=sizes)
    created = now or utcnow()
    files = tuple(
        FileEntry(
            path=p,
            size=sizes[p],
            integrity=(
                sri_token(algorithm, digests[p])
                if algorithm == "sha256"
                else auraseal_string(digests[p], algorithm=algorithm)
            ),
            url=(base_url.rstrip("/") + "/" + p) if base_url else None,
        )
        for p in paths
    )
    return Manifest(
        name=name,
        version=version,
        created=created,
        expires=None if expires is None else created + expires,
        files=files,
    )


@dataclass
class Mismatch:
    path: str
    expected: str
    actual: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "expected": self.expected, "actual": self.actual}


@dataclass
class TreeReport:
    """Every difference between a tree and its manifest."""

    checked: int = 0
    modified: list[Mismatch] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.modified or self.missing or self.unexpected)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "modified": [m.to_dict() for m in self.modified],
            "missing": self.missing,
            "unexpected": self.unexpected,
        }

    def summary(self) -> str:
        return (
            f"{len(self.modified)} modified, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected of {self.checked} checked"
        )


def verify_tree(
    root: Path,
    manifest: Manifest,
    *,
    progress: Progress = None,
    jobs: int | None = None,
    exclude: frozenset[str] = frozenset({MANIFEST_NAME}),
) -> TreeReport:
    """Compare ``root`` with ``manifest``: report every modified, missing and
    unexpected file (part files listed in the manifest are checked too).

    AuraSeal's own temp files (:func:`~auraseal._fs.is_temp_name`, in any
    directory, e.g. left by a killed ``repair``) are not reported as
    unexpected: the command that made them removes them on its next run.
    """
    root = Path(root)
    present = set(walk_files(root, exclude=exclude))
    expected: dict[str, str] = {}
    for f in manifest.files:
        expected[f.path] = f.integrity
        if f.recovery is not None:
            for p in f.recovery.parts:
                expected[part_name(f.path, p.number)] = p.integrity
    report = TreeReport()
    report.missing = sorted(set(expected) - present)
    report.unexpected = sorted(
        p
        for p in present - set(expected)
        if not any(map(is_temp_name, p.split("/"))) and not is_trust_file(p)
    )
    todo = sorted(set(expected) & present)
    real = root.resolve()

    def one(rel: str) -> Mismatch | None:
        try:
            verify_file(resolve_inside(real, rel), expected[rel], rel, progress)
        except DigestMismatchError as exc:
            return Mismatch(rel, exc.expected, exc.actual)
        return None

    with ThreadPoolExecutor(max_workers=_jobs(jobs)) as pool:
        results = list(pool.map(one, todo))
    report.checked = len(expected)
    report.modified = [m for m in results if m is not None]
    return report


def check_tree(root: Path, manifest: Manifest, **kwargs: Any) -> TreeReport:
    """:func:`verify_tree`, raising :class:`TreeMismatchError` on any difference."""
    report = verify_tree(root, manifest, **kwargs)
    if not report.ok:
        raise TreeMismatchError(report.summary(), str(root), report=report)
    return report


def with_files(manifest: Manifest, files: Iterable[FileEntry]) -> Manifest:
    """A copy of ``manifest`` with ``files`` (sorted by path)."""
    return replace(manifest, files=tuple(sorted(files, key=lambda e: e.path)))



def resign_manifest(
    data: bytes,
    keys: Sequence[Signer],
    where: str = "manifest",
    *,
    version: int | None = None,
    expires: timedelta | None = DEFAULT_EXPIRES,
    now: datetime | None = None,
    require_own_signature: bool = True,
) -> tuple[Manifest, bytes]:
    """A new version of a signed manifest: the same files, a fresh expiry, new signatures.

    This is how a publisher keeps a package fresh without re-sealing it.
    The version goes up (default: by one; an explicit ``version`` must be
    greater), ``created`` is ``now`` and ``expires`` is ``now + expires``.
    With ``require_own_signature`` (the default) the input must carry a valid
    signature by at least one of ``keys`` (an expired manifest is fine), so a
    publisher never vouches by mistake for a file list someone else wrote.
    Returns the new manifest and its signed envelope bytes.
    """
    if not keys:
        raise UsageError("resigning needs at least one signing key", where)
    doc = parse_json(data, where)
    if detect_format(doc) != "native" or "signed" not in doc:
        if require_own_signature:
            raise ThresholdError("manifest is not signed; nothing to re-sign", where)
        signed = doc.get("signed", doc) if isinstance(doc, dict) else doc
    elif require_own_signature:
        signed = verify_envelope(doc, TrustPolicy([k.public for k in keys], 1), where)
    else:
        signed = doc["signed"]
    manifest = Manifest.from_dict(signed, where)
    new_version = manifest.version + 1 if version is None else version
    if new_version <= manifest.version:
        raise UsageError(
            f"new version {new_version} must be greater than {manifest.version}", where
        )
    moment = now or utcnow()
    new = sign_http(
        replace(
            manifest,
            version=new_version,
            created=moment,
            expires=None if expires is None else moment + expires,
        ),
        keys,
    )
    return new, dump_signed(new, keys)


def sign_http(manifest: Manifest, keys: Sequence[Signer]) -> Manifest:
    """Sign every file for browsers (signature-based SRI): each file entry's
    ``http`` holds its ``Unencoded-Digest`` and one RFC 9421 signature per key,
    ``created``/``expires`` taken from the manifest; old ones are replaced.
    Computed from the recorded digests (no file is read); sha384 files get
    none (browsers refuse sha-384). With no keys the manifest is unchanged;
    a manifest with HTTP signatures is ``spec_version`` 2."""
    if not keys:
        return manifest
    files = []
    for f in manifest.files:
        extra = {k: v for k, v in f.extra.items() if k != "http"}
        sigs = sign_digest(f.integrity, keys, manifest.created, manifest.expires)
        if sigs is not None:
            extra["http"] = sigs.to_dict()
        files.append(replace(f, extra=extra))
    signed_any = any("http" in f.extra for f in files)
    spec = HTTP_SPEC_VERSION if signed_any else manifest.spec_version
    return replace(manifest, files=tuple(files), spec_version=spec)
