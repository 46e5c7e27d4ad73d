"""``GET /packages/<name>``: the package as one zip, built only from verified bytes.

The archive of a version is built at most once at a time per package, across
every worker process (an ``fcntl.flock`` on ``zips/<name>.lock``): concurrent
first requests wait for the one build and then share its file. Every member
is hashed while it is copied into the zip and checked against the manifest;
a mismatch aborts the build (nothing is kept) with
:class:`~auraseal.errors.DigestMismatchError`, so the caller can repair and
try again. Members carry a fixed timestamp, so the archive of a version is the
same bytes (and the same ETag) whenever it is rebuilt.

Cached archives are named ``<name>-<version>-<manifest digest>.zip`` (with an
``.sri`` sidecar holding the zip's integrity) and are removed by
:func:`invalidate_archives` after every repair and publish. Temp zips use the
shared temp scheme (kind ``zip``) and leftovers of dead processes are removed
at start-up (:func:`clean_archive_temps`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import zipfile
from pathlib import Path

from auraseal._fs import atomic_write_bytes, atomic_writer, clean_stale_temps
from auraseal.errors import StorageError, UnsafePathError
from auraseal.integrity import StreamVerifier
from auraseal.server.config import STATE_DIR
from auraseal.server.locks import file_lock
from auraseal.server.store import PackageView

__all__ = ["archive_dir", "build_archive", "clean_archive_temps", "invalidate_archives"]

TEMP_KIND = "zip"
_CHUNK = 1 << 20
_EPOCH = (1980, 1, 1, 0, 0, 0)


def archive_dir(root: Path) -> Path:
    """Where cached archives live: ``ROOT/.auraseal/zips``."""
    return Path(root).resolve() / STATE_DIR / "zips"


def _mine(name: str) -> re.Pattern[str]:
    return re.compile(re.escape(name) + r"-[0-9]+-[0-9a-f]{16}\.(zip|sri)")


def _remove_cached(zdir: Path, name: str, keep: str | None = None) -> None:
    mine = _mine(name)
    with contextlib.suppress(OSError):
        for old in os.listdir(zdir):
            if mine.fullmatch(old) and old.rsplit(".", 1)[0] != keep:
                with contextlib.suppress(OSError):
                    (zdir / old).unlink()


def invalidate_archives(root: Path, name: str) -> None:
    """Drop every cached archive of ``name`` (after a repair or a publish)."""
    zdir = archive_dir(root)
    if not zdir.is_dir():
        return
    with file_lock(zdir / f"{name}.lock"):
        _remove_cached(zdir, name)


def clean_archive_temps(root: Path) -> list[str]:
    """Remove temp zips left by dead processes (called at start-up)."""
    return clean_stale_temps(archive_dir(root), {TEMP_KIND})


def _copy_verified(view: PackageView, zf: zipfile.ZipFile) -> None:
    for rel in sorted(view.resources):
        res = view.resources[rel]
        path = view.path_of(res)
        real = os.path.realpath(path)
        if not real.startswith(str(view.dir) + os.sep):
            raise UnsafePathError("file resolves outside the package", f"{view.name}/{rel}")
        info = zipfile.ZipInfo(rel, date_time=_EPOCH)
        info.compress_type = zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        info.file_size = res.size
        verifier = StreamVerifier(res.integrity, f"{view.name}/{rel}")
        try:
            with open(real, "rb") as src, zf.open(info, "w", force_zip64=res.size > 1 << 30) as out:
                while chunk := src.read(_CHUNK):
                    verifier.update(chunk)
                    if verifier.bytes_seen > res.size:
                        break
                    out.write(chunk)
        except OSError as exc:
            raise StorageError(f"cannot read: {exc.strerror}", f"{view.name}/{rel}") from exc
        verifier.verify()


def build_archive(root: Path, view: PackageView) -> tuple[Path, str]:
    """The zip of ``view`` (the layout of docs/FORMAT.md, ZIP_STORED) and its integrity;
    built once.

    Raises :class:`~auraseal.errors.DigestMismatchError` if a stored byte does
    not match the manifest (the caller repairs and calls again).
    """
    zdir = archive_dir(root)
    try:
        zdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create: {exc.strerror}", str(zdir)) from exc
    base = f"{view.name}-{view.version}-{view.manifest_bytes_digest()}"
    zpath, side = zdir / f"{base}.zip", zdir / f"{base}.sri"
    with file_lock(zdir / f"{view.name}.lock"):
        if zpath.is_file() and side.is_file():
            return zpath, side.read_text().strip()
        _remove_cached(zdir, view.name)
        # the zip is complete (and fsynced) before its name appears; it counts
        # as cached once the .sri beside it is written too
        with (
            atomic_writer(zpath, kind=TEMP_KIND) as fh,
            zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf,
        ):
            _copy_verified(view, zf)
        h = hashlib.sha256()
        try:
            with open(zpath, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    h.update(chunk)
        except OSError as exc:
            raise StorageError(f"cannot read archive: {exc.strerror}", str(zpath)) from exc
        integrity = "sha256-" + base64.b64encode(h.digest()).decode()
        atomic_write_bytes(side, (integrity + "\n").encode())
    return zpath, integrity
