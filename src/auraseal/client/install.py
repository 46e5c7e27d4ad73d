"""Atomic installs of a package directory, with one previous version kept.

A package is assembled in a staging directory *next to* ``DIR`` (same file
system), verified there, and swapped in with ``renameat2(RENAME_EXCHANGE)``
— one atomic step on Linux; elsewhere two renames. Next to ``DIR`` live::

    .<DIR>.auraseal-stage-XXXX/    while a fetch assembles (removed on failure)
    .<DIR>.auraseal-prev/          the version installed before (for rollback)
    .<DIR>.auraseal.json           the install record (format in docs/CLIENT.md)

``DIR`` itself holds exactly the package's files. A failure before the swap
leaves ``DIR`` untouched.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auraseal._fs import atomic_write_bytes, fsync_dir, resolve_inside
from auraseal.errors import NotFoundError, StorageError

__all__ = [
    "INSTALL_FORMAT",
    "INSTALL_VERSION",
    "InstallRecord",
    "Installed",
    "Staging",
    "exchange",
    "read_record",
    "rollback",
    "swap_in",
]

INSTALL_FORMAT = "auraseal-install"
INSTALL_VERSION = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@dataclass(frozen=True)
class Installed:
    """One installed version: manifest name, version and digest."""

    name: str
    version: int
    digest: str
    url: str
    installed_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "url": self.url,
            "installed_at": self.installed_at,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Installed | None:
        if d is None:
            return None
        if not isinstance(d, dict):
            raise StorageError("install record entry must be an object", where)
        try:
            return cls(
                name=str(d["name"]),
                version=int(d["version"]),
                digest=str(d["digest"]),
                url=str(d["url"]),
                installed_at=str(d["installed_at"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StorageError(f"install record entry is incomplete: {exc}", where) from exc


@dataclass(frozen=True)
class InstallRecord:
    current: Installed | None
    previous: Installed | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": INSTALL_FORMAT,
            "version": INSTALL_VERSION,
            "current": None if self.current is None else self.current.to_dict(),
            "previous": None if self.previous is None else self.previous.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> InstallRecord:
        if not isinstance(d, dict) or d.get("format") != INSTALL_FORMAT:
            raise StorageError(f"not a {INSTALL_FORMAT} record", where)
        if d.get("version") != INSTALL_VERSION:
            raise StorageError(f"unsupported install record version {d.get('version')!r}", where)
        return cls(
            Installed.from_dict(d.get("current"), where),
            Installed.from_dict(d.get("previous"), where),
        )


def _sibling(dest: Path, suffix: str) -> Path:
    return dest.parent / f".{dest.name}.auraseal{suffix}"


def prev_dir(dest: Path) -> Path:
    return _sibling(dest, "-prev")


def record_path(dest: Path) -> Path:
    return _sibling(dest, ".json")


def read_record(dest: Path) -> InstallRecord | None:
    p = record_path(dest)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read install record: {exc.strerror}", str(p)) from exc
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise StorageError("install record is not JSON", str(p)) from exc
    return InstallRecord.from_dict(doc, str(p))


def write_record(dest: Path, record: InstallRecord) -> None:
    atomic_write_bytes(record_path(dest), json.dumps(record.to_dict(), indent=2).encode())


def _renameat2() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def exchange(a: Path, b: Path) -> None:
    """Atomically swap two existing paths (Linux ``RENAME_EXCHANGE``); where
    unsupported, fall back to three renames through a temp name."""
    fn = _renameat2()
    if fn is not None:
        rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
        if rc == 0:
            fsync_dir(a.parent)
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise StorageError(f"cannot swap directories: {os.strerror(err)}", str(b))
    tmp = a.parent / f".{a.name}.swap"
    try:
        os.rename(a, tmp)
        os.rename(b, a)
        os.rename(tmp, b)
    except OSError as exc:
        raise StorageError(f"cannot swap directories: {exc.strerror}", str(b)) from exc
    fsync_dir(a.parent)


class Staging:
    """A temp directory next to ``dest`` where a package is assembled."""

    def __init__(self, dest: Path) -> None:
        self.dest = Path(dest).absolute()
        self.consumed = False
        if self.dest.exists() and not self.dest.is_dir():
            raise StorageError("destination exists and is not a directory", str(dest))
        try:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(
                tempfile.mkdtemp(prefix=f".{self.dest.name}.auraseal-stage-", dir=self.dest.parent)
            )
        except OSError as exc:
            raise StorageError(
                f"cannot create staging directory: {exc.strerror}", str(dest)
            ) from exc

    def file(self, rel: str) -> Path:
        """The staging path for package file ``rel`` (parents created)."""
        p = resolve_inside(self.path, rel)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create directory: {exc.strerror}", rel) from exc
        return p

    def discard(self) -> None:
        """Remove the staging directory (unless it was swapped in)."""
        if not self.consumed:
            shutil.rmtree(self.path, ignore_errors=True)


def swap_in(stage: Staging, installed: Installed) -> InstallRecord:
    """Make the staged tree ``DIR``; the old ``DIR`` becomes the previous version."""
    dest = stage.dest
    old = read_record(dest)
    prev = prev_dir(dest)
    os.chmod(stage.path, 0o755)  # noqa: S103 - a package directory is world-readable
    if dest.exists():
        exchange(stage.path, dest)
        stage.consumed = True  # stage.path now holds the old version: never discard it
        # stage.path now holds the old version: keep it as the previous one.
        shutil.rmtree(prev, ignore_errors=True)
        try:
            os.rename(stage.path, prev)
        except OSError as exc:
            raise StorageError(f"cannot keep previous version: {exc.strerror}", str(prev)) from exc
        previous = old.current if old is not None else None
    else:
        shutil.rmtree(prev, ignore_errors=True)
        try:
            os.rename(stage.path, dest)
        except OSError as exc:
            raise StorageError(f"cannot install: {exc.strerror}", str(dest)) from exc
        stage.consumed = True
        previous = None
    fsync_dir(dest.parent)
    record = InstallRecord(current=installed, previous=previous)
    write_record(dest, record)
    return record


def rollback(dest: Path) -> InstallRecord:
    """Swap ``DIR`` with the version installed before it (again to undo)."""
    dest = Path(dest).absolute()
    prev = prev_dir(dest)
    if not prev.is_dir():
        raise NotFoundError("no previous version to roll back to", str(dest))
    if not dest.exists():
        raise NotFoundError("nothing installed", str(dest))
    old = read_record(dest)
    exchange(prev, dest)
    record = InstallRecord(
        current=old.previous if old else None, previous=old.current if old else None
    )
    with contextlib.suppress(StorageError):
        write_record(dest, record)
    return record
