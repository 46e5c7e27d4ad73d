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
from dataclasses import dataclass
from pathlib import Path

from auraseal._fs import resolve_inside
from auraseal.errors import (
    ConfigError,
    InputError,
    IntegrityError,
    RollbackError,
    StorageError,
    ThresholdError,
)
from auraseal.manifest import MANIFEST_NAME, Manifest, load_manifest, manifest_digest, verify_tree
from auraseal.sealing.package import ZipLimits, check_zip
from auraseal.signing import TrustPolicy, TrustState

__all__ = [
    "MAX_MANIFEST_BYTES",
    "TOKEN_PREFIX",
    "FilesDifferError",
    "PayloadTooLargeError",
    "TokenSet",
    "check_manifest_update",
    "check_package",
    "check_version",
    "hash_token",
    "new_token",
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
    try:
        zf = zipfile.ZipFile(zip_path)
        upload_size = os.path.getsize(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InputError(f"not a readable zip archive: {exc}", "upload") from exc
    limits = ZipLimits(
        max_entries=max_entries, max_entry=max_total, max_total=max_total, max_ratio=max_ratio,
        ratio_min_size=1 << 16, archive_size=upload_size, ratio_floor=RATIO_FLOOR,
        too_large=PayloadTooLargeError,
    )
    with zf:
        entries = check_zip(zf, "upload", limits)
        names = list(entries)
        files = list(entries.values())
        written = 0
        for info in files:
            target = resolve_inside(dest, info.filename)
            target.parent.mkdir(parents=True, exist_ok=True)
            n = 0
            try:
                with zf.open(info) as src, open(target, "xb") as out:
                    while True:
                        chunk = src.read(COPY_CHUNK)
                        if not chunk:
                            break
                        n += len(chunk)
                        written += len(chunk)
                        if n > info.file_size or written > max_total:
                            raise PayloadTooLargeError(
                                "entry inflates past its declared size",
                                f"upload: {info.filename!r}",
                            )
                        out.write(chunk)
            except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
                where = f"upload: {info.filename!r}"
                raise InputError(f"corrupt archive entry: {exc}", where) from exc
            except OSError as exc:
                raise StorageError(f"cannot unpack: {exc.strerror}", info.filename) from exc
            if n != info.file_size:
                raise InputError("entry is shorter than declared", f"upload: {info.filename!r}")
    return names


def check_version(
    name: str, manifest: Manifest, *, current_version: int | None, state: TrustState | None
) -> None:
    """Refuse (RollbackError, 409) a version not above the served and trusted ones.

    A publish calls this twice: with the other checks, and again under the
    cross-process publish lock right before the swap, since another worker
    may have published meanwhile."""
    if current_version is not None and manifest.version <= current_version:
        raise RollbackError(
            f"version {manifest.version} is not greater than the served version "
            f"{current_version}",
            name,
        )
    if state is not None:
        state.check(name, manifest.version, manifest_digest(manifest), name)


def check_manifest_update(
    data: bytes,
    name: str,
    served: Manifest,
    *,
    policy: TrustPolicy | None,
    state: TrustState | None,
) -> Manifest:
    """The cheap checks of a manifest-only publish, before anything is linked.

    The manifest must be signed by the trusted keys (threshold), not expired,
    name ``name``, carry a version above ``served`` (and any trusted before),
    and list exactly the served version's files: same paths, sizes,
    integrity, parts and recovery. :func:`check_package` then checks the
    linked tree in full, as for any publish."""
    if policy is None:
        raise ThresholdError("the server trusts no publisher key (--trusted-key)", "publish")
    manifest = load_manifest(data, f"upload: {MANIFEST_NAME}", policy=policy)
    if manifest.name != name:
        raise InputError(f"manifest names package '{manifest.name}', not '{name}'", "upload")
    check_version(name, manifest, current_version=served.version, state=state)
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
    return manifest


def check_package(
    staging: Path,
    name: str,
    *,
    policy: TrustPolicy | None,
    current_version: int | None,
    state: TrustState | None,
) -> Manifest:
    """Every check a publish must pass before it is installed (nothing is written)."""
    mpath = staging / MANIFEST_NAME
    try:
        data = mpath.read_bytes()
    except OSError as exc:
        raise InputError(f"package has no {MANIFEST_NAME}", "upload") from exc
    if policy is None:
        raise ThresholdError("the server trusts no publisher key (--trusted-key)", "publish")
    manifest = load_manifest(data, f"upload: {MANIFEST_NAME}", policy=policy)
    if manifest.name != name:
        raise InputError(f"manifest names package '{manifest.name}', not '{name}'", "upload")
    check_version(name, manifest, current_version=current_version, state=state)
    report = verify_tree(staging, manifest, jobs=2)
    if not report.ok:
        raise IntegrityError(f"package does not match its manifest: {report.summary()}", "upload")
    from auraseal.server.healing import scrub_view  # noqa: PLC0415
    from auraseal.server.store import _build_view  # noqa: PLC0415

    health = scrub_view(_build_view(name, staging, data))
    bad = [c.path for c in health.components if c.state != "intact"]
    if bad:
        raise IntegrityError(f"{len(bad)} component(s) fail the scrub", f"upload: {bad[0]}")
    return manifest
