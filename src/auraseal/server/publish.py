"""Authenticated publish: bearer tokens, bounded upload, safe unzip, trust checks.

A publish is ``PUT /packages/{name}`` with ``Authorization: Bearer <token>``
and a sealed package zip (``docs/FORMAT.md``) as the body. Before anything
becomes visible the server checks, in order: the token (SHA-256 hashes in the
token file, compared in constant time), the size limit, the zip's safety, the
manifest's signatures against the trusted keys and threshold, its name and
version (strictly greater than the version served and than any version
trusted before), and a full scrub (every original and part intact). Only then
is the unpacked tree swapped in atomically (:meth:`PackageStore.install`).

A *manifest-only* publish (the body is just a signed manifest, e.g. one that
``auraseal resign`` refreshed) passes the same checks; its ``files`` must be
identical to the served version's (:func:`check_manifest_update`), and the new
version directory is made of hard links to the served version's files
(:meth:`PackageStore.link_files`) plus the new manifest.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auraseal._fs import is_temp_name, resolve_inside, walk_files
from auraseal.errors import (
    ConfigError,
    InputError,
    IntegrityError,
    RollbackError,
    StorageError,
    ThresholdError,
)
from auraseal.integrity import parse_integrity
from auraseal.manifest import (
    MANIFEST_NAME,
    Manifest,
    VerifiedManifest,
    is_trust_file,
    open_manifest,
    part_name,
)
from auraseal.sealing.component import ComponentSpec, check_part_stream
from auraseal.sealing.package import Package, ZipLimits, check_zip
from auraseal.sealing.source import MemberSource, ReadRange
from auraseal.signing import TrustPolicy, TrustState

__all__ = [
    "MAX_MANIFEST_BYTES",
    "TOKEN_PREFIX",
    "ExtractLimits",
    "FilesDifferError",
    "PayloadTooLargeError",
    "SourceHook",
    "TokenSet",
    "ZipUploadSource",
    "check_manifest_update",
    "check_package",
    "check_version",
    "hash_token",
    "new_token",
    "open_upload_manifest",
    "safe_extract",
]

TOKEN_PREFIX = "sha256:"  # noqa: S105 - a prefix, not a secret
COPY_CHUNK = 1 << 20
#: An upload may always unpack to this much, whatever its compression ratio.
RATIO_FLOOR = 1 << 20


#: Largest manifest accepted as a manifest-only publish (the store reads no more).
MAX_MANIFEST_BYTES = 64 << 20


class PayloadTooLargeError(InputError):
    """An upload (or what it unpacks to) is larger than the server accepts (413)."""


class FilesDifferError(InputError):
    """A manifest-only publish whose files are not the served version's (409)."""


def hash_token(token: str) -> str:
    """The line stored for ``token``: ``sha256:<hex>`` (tokens are 256-bit random)."""
    return TOKEN_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh random token and the hashed line to store for it."""
    token = "aspub_" + secrets.token_urlsafe(32)
    return token, hash_token(token)


@dataclass(frozen=True)
class TokenSet:
    """The hashed tokens allowed to publish."""

    hashes: tuple[bytes, ...]

    @classmethod
    def load(cls, path: Path | None) -> TokenSet:
        if path is None:
            return cls(())
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read token file: {exc.strerror}", str(path)) from exc
        out = []
        for n, raw_line in enumerate(text.splitlines(), 1):
            line = raw_line.strip()
            if not line or line.startswith("#"):
                continue
            word = line.split()[0]
            if not word.startswith(TOKEN_PREFIX):
                raise ConfigError(
                    "token lines must be 'sha256:<hex>' (see `auraseal publish-token`)",
                    f"{path}:{n}",
                )
            try:
                raw = bytes.fromhex(word[len(TOKEN_PREFIX) :])
            except ValueError as exc:
                raise ConfigError("token hash is not hex", f"{path}:{n}") from exc
            if len(raw) != 32:
                raise ConfigError("token hash must be 64 hex digits", f"{path}:{n}")
            out.append(raw)
        return cls(tuple(out))

    def check(self, authorization: str | None) -> bool:
        """True if ``authorization`` is ``Bearer <token>`` for a stored hash.

        Every stored hash is compared (constant time each, no early exit).
        """
        if not authorization or not self.hashes:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or len(token) > 512:
            return False
        digest = hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).digest()
        ok = False
        for h in self.hashes:
            ok |= hmac.compare_digest(digest, h)
        return ok


@dataclass(frozen=True)
class ExtractLimits:
    """What an upload may unpack to (see :func:`safe_extract`)."""

    max_total: int
    max_entries: int
    max_ratio: int


def _zip_plan(
    zf: zipfile.ZipFile, upload_size: int, limits: ExtractLimits
) -> list[zipfile.ZipInfo]:
    """The file entries of an upload zip, refusing hostile archives before
    anything is written, by the one zip validator
    (:func:`auraseal.sealing.package.check_zip`; see :func:`safe_extract`)."""
    zl = ZipLimits(
        max_entries=limits.max_entries, max_entry=limits.max_total, max_total=limits.max_total,
        max_ratio=limits.max_ratio, ratio_min_size=1 << 16, archive_size=upload_size,
        ratio_floor=RATIO_FLOOR, too_large=PayloadTooLargeError,
    )
    return list(check_zip(zf, "upload", zl).values())


def _open_zip(zip_path: Path) -> tuple[zipfile.ZipFile, int]:
    try:
        return zipfile.ZipFile(zip_path), os.path.getsize(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InputError(f"not a readable zip archive: {exc}", "upload") from exc


class ZipUploadSource:
    """An upload zip as a :class:`~auraseal.sealing.source.MemberSource`:
    each member is inflated as a stream, read front to back (a read that is
    not where the previous one stopped starts the member again). A member that
    inflates past its declared size is refused (a lying zip bomb), and the
    CRC-32 is checked when a member is read to its end."""

    def __init__(self, zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> None:
        self._zf = zf
        self._infos = {i.filename: i for i in infos}

    @property
    def where(self) -> str:
        return "upload"

    def names(self) -> list[str]:
        return list(self._infos)

    def size(self, name: str) -> int | None:
        info = self._infos.get(name)
        return None if info is None else info.file_size

    def reader(self, name: str) -> ReadRange | None:
        info = self._infos.get(name)
        if info is None:
            return None
        state: dict[str, Any] = {"fh": None, "pos": 0}
        where = f"upload: {name!r}"

        def read(off: int, length: int) -> bytes:
            try:
                if state["fh"] is None or state["pos"] != off:
                    if state["fh"] is not None:
                        state["fh"].close()
                    state["fh"], state["pos"] = self._zf.open(info), 0
                    while state["pos"] < off:  # rare: only a reader that goes back
                        got = state["fh"].read(min(COPY_CHUNK, off - state["pos"]))
                        if not got:
                            break
                        state["pos"] += len(got)
                data: bytes = state["fh"].read(length)
            except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
                raise InputError(f"corrupt archive entry: {exc}", where) from exc
            except OSError as exc:
                raise StorageError(f"cannot read upload: {exc.strerror}", where) from exc
            state["pos"] += len(data)
            if state["pos"] > info.file_size:
                raise PayloadTooLargeError("entry inflates past its declared size", where)
            if not data:  # the end (zipfile checked the CRC-32 on the way)
                state["fh"].close()
                state["fh"] = None
            return data

        return read


def _copy_member(
    source: MemberSource, name: str, dest: Path | None, where: str
) -> Iterator[bytes]:
    """Member ``name`` of ``source`` in chunks, each read once, written to
    ``dest`` (if given) from that same read; exactly its declared size."""
    size = source.size(name)
    read = source.reader(name)
    if size is None or read is None:
        raise IntegrityError("missing", where)
    out = None
    try:
        if dest is not None:
            dest.parent.mkdir(parents=True, exist_ok=True)
            out = open(dest, "xb")  # noqa: SIM115 - closed in finally
        off = 0
        while off < size:
            chunk = bytes(read(off, min(COPY_CHUNK, size - off)))
            if not chunk:
                raise InputError("entry is shorter than declared", where)
            if out is not None:
                out.write(chunk)
            off += len(chunk)
            yield chunk
        if read(off, 1):  # nothing after the declared end (and the CRC checked)
            raise PayloadTooLargeError("entry inflates past its declared size", where)
    except OSError as exc:
        raise StorageError(f"cannot unpack: {exc.strerror}", where) from exc
    finally:
        if out is not None:
            out.close()


def safe_extract(
    zip_path: Path,
    dest: Path,
    *,
    max_total: int,
    max_entries: int,
    max_ratio: int,
) -> list[str]:
    """Unpack a package zip into the empty directory ``dest``, refusing hostile archives.

    Refused before anything is written, by the one zip validator
    (:func:`auraseal.sealing.package.check_zip`): not a zip, unsafe names
    (``..``, absolute, backslash, NUL, overlong), duplicates, a name that is
    both a file and a directory, symlinks, encryption, more than
    ``max_entries`` entries, declared sizes above ``max_total``, a member with
    a compression ratio above ``max_ratio``, or declared sizes adding up to
    more than ``max_ratio`` times the archive's own size (at least
    :data:`RATIO_FLOOR`): many small entries cannot add up to a bomb either
    (the size and ratio refusals are :class:`PayloadTooLargeError`, 413).
    While writing, a member that inflates past its declared size is refused
    too (a lying zip bomb), so nothing larger than that bound is ever written.
    """
    zf, upload_size = _open_zip(zip_path)
    with zf:
        files = _zip_plan(zf, upload_size, ExtractLimits(max_total, max_entries, max_ratio))
        src = ZipUploadSource(zf, files)
        for info in files:
            where = f"upload: {info.filename!r}"
            for _ in _copy_member(src, info.filename, resolve_inside(dest, info.filename), where):
                pass
    return [i.filename for i in files]


def open_upload_manifest(
    data: bytes, name: str, policy: TrustPolicy | None
) -> VerifiedManifest:
    """The uploaded manifest, parsed once and each signature verified once
    against the trusted keys (threshold), not expired, naming ``name``."""
    if policy is None:
        raise ThresholdError("the server trusts no publisher key (--trusted-key)", "publish")
    vm = open_manifest(data, f"upload: {MANIFEST_NAME}", policy=policy)
    if vm.manifest.name != name:
        raise InputError(f"manifest names package '{vm.manifest.name}', not '{name}'", "upload")
    return vm


def check_version(
    name: str, vm: VerifiedManifest, *, current_version: int | None, state: TrustState | None
) -> None:
    """Refuse (RollbackError, 409) a version not above the served and trusted ones.

    A publish calls this twice: with the other checks, and again under the
    cross-process publish lock right before the swap, since another worker
    may have published meanwhile. The trust state compares the digest over
    the manifest's signed bytes."""
    version = vm.manifest.version
    if current_version is not None and version <= current_version:
        raise RollbackError(
            f"version {version} is not greater than the served version {current_version}",
            name,
        )
    if state is not None:
        state.check(name, version, vm.digest, name)


def check_manifest_update(
    vm: VerifiedManifest,
    name: str,
    served: Manifest,
    *,
    state: TrustState | None,
) -> None:
    """The cheap checks of a manifest-only publish, before anything is linked.

    ``vm`` (from :func:`open_upload_manifest`) must carry a version above
    ``served`` (and any trusted before), and list exactly the served
    version's files: same paths, sizes, integrity, parts and recovery.
    :func:`check_package` then checks the linked tree in full, as for any
    publish."""
    manifest = vm.manifest
    check_version(name, vm, current_version=served.version, state=state)
    mine = {f.path: f for f in manifest.files}
    theirs = {f.path: f for f in served.files}
    if mine != theirs:
        changed = sorted(set(mine) ^ set(theirs)) or sorted(
            p for p in mine if mine[p] != theirs[p]
        )
        raise FilesDifferError(
            "files differ from the served version "
            f"(v{served.version}; first: {changed[0]!r}): upload the whole package",
            name,
        )


def _allowed_extra(name: str) -> bool:
    """Members a package may hold besides its files and parts (as verify_tree)."""
    return name == MANIFEST_NAME or is_trust_file(name) or any(
        map(is_temp_name, name.split("/"))
    )


def _check_members(
    source: MemberSource, manifest: Manifest, present: Iterable[str], copy_to: Path | None
) -> None:
    """Check every file and part of ``manifest`` in ``source``, reading each
    byte once (and, with ``copy_to``, writing it there from that same read)."""
    wanted = {n for e in manifest.files for n in (e.path, *e.part_names())}
    have = set(present)
    missing = sorted(wanted - have)
    unexpected = sorted(n for n in have - wanted if not _allowed_extra(n))
    if missing or unexpected:
        first = missing[0] if missing else unexpected[0]
        raise IntegrityError(
            f"package does not match its manifest: {len(missing)} missing, "
            f"{len(unexpected)} unexpected", f"upload: {first}",
        )
    for entry in manifest.files:
        where = f"upload: {entry.path}"
        integ = parse_integrity(entry.integrity, entry.path)
        if source.size(entry.path) != entry.size:
            raise IntegrityError(f"size differs from the manifest's {entry.size}", where)
        h = hashlib.new(integ.algorithm)
        for chunk in _copy_member(source, entry.path, _dest(copy_to, entry.path), where):
            h.update(chunk)
        if not integ.matches(h.digest()):
            raise IntegrityError("file does not match its manifest digest", where)
        if entry.recovery is None:
            continue
        spec = ComponentSpec.from_entry(entry)
        for n in range(spec.total):
            pname = part_name(entry.path, n)
            pwhere = f"upload: {pname}"
            check_part_stream(spec, n, _copy_member(source, pname, _dest(copy_to, pname), pwhere),
                              pwhere)
    if copy_to is not None:
        for extra in sorted(have - wanted - {MANIFEST_NAME}):
            for _ in _copy_member(source, extra, _dest(copy_to, extra), f"upload: {extra}"):
                pass


def _dest(root: Path | None, name: str) -> Path | None:
    return None if root is None else resolve_inside(root, name)


#: ``wrap(source) -> source``: a test seam that sees every member read of a publish
#: check (e.g. :class:`~auraseal.sealing.source.CountingSource`)
SourceHook = Callable[[MemberSource], MemberSource]


def check_package(
    staging: Path,
    name: str,
    *,
    policy: TrustPolicy | None,
    current_version: int | None,
    state: TrustState | None,
    upload: Path | None = None,
    limits: ExtractLimits | None = None,
    verified: VerifiedManifest | None = None,
    wrap: SourceHook | None = None,
) -> VerifiedManifest:
    """Every check a publish must pass before it is installed.

    With ``upload`` (a package zip), its members are unpacked into the empty
    directory ``staging`` (within ``limits``, refusing hostile archives as
    :func:`safe_extract`) and checked from the same read; without it,
    ``staging`` is a package tree already in place (a manifest-only publish:
    hard links to the served files plus the new manifest, whose
    ``verified`` form the caller has). Either way the manifest is parsed once
    and each signature verified once, and every byte of every original and
    part is read once while it is hashed: every file must match its digest
    and every part its header and footer (nothing less than intact is
    published), no file may be missing or unexpected.
    """
    mwhere = f"upload: {MANIFEST_NAME}"
    if upload is None:
        if verified is None:
            try:
                data = (staging / MANIFEST_NAME).read_bytes()
            except OSError as exc:
                raise InputError(f"package has no {MANIFEST_NAME}", "upload") from exc
            verified = open_upload_manifest(data, name, policy)
        check_version(name, verified, current_version=current_version, state=state)
        tree = Package(str(staging), verified.manifest, root=staging)
        src: MemberSource = wrap(tree) if wrap is not None else tree
        _check_members(src, verified.manifest, walk_files(staging), None)
        return verified
    zf, upload_size = _open_zip(upload)
    with zf:
        files = _zip_plan(zf, upload_size, limits or ExtractLimits(1 << 62, 1 << 30, 1 << 30))
        zsrc = ZipUploadSource(zf, files)
        src = wrap(zsrc) if wrap is not None else zsrc
        size = src.size(MANIFEST_NAME)
        if size is None:
            raise InputError(f"package has no {MANIFEST_NAME}", "upload")
        if size > MAX_MANIFEST_BYTES:
            raise PayloadTooLargeError(f"manifest larger than {MAX_MANIFEST_BYTES} bytes", mwhere)
        data = b"".join(_copy_member(src, MANIFEST_NAME, staging / MANIFEST_NAME, mwhere))
        vm = open_upload_manifest(data, name, policy)
        check_version(name, vm, current_version=current_version, state=state)
        _check_members(src, vm.manifest, zsrc.names(), staging)
        return vm
