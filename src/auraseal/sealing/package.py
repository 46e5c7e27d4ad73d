"""Reading a sealed package from a directory or a zip, safely.

A zip is checked as a whole when it is opened, before anything is read from
it or written anywhere: unsafe names (``..``, absolute, backslash, NUL,
drive letters), symlink entries, encrypted entries, duplicate names, unknown
compression methods and zip bombs (declared sizes, compression ratio,
entry count) are refused with :class:`~auraseal.errors.UnsafePathError` /
:class:`~auraseal.errors.InputError`.
"""

from __future__ import annotations

import contextlib
import os
import stat
import struct
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType

from auraseal._fs import atomic_writer, resolve_inside, safe_relpath, walk_files
from auraseal.errors import (
    InputError,
    ManifestFormatError,
    NotFoundError,
    StorageError,
    UnsafePathError,
)
from auraseal.manifest import MANIFEST_NAME, Manifest, load_manifest, part_name
from auraseal.signing import TrustPolicy, TrustState

__all__ = [
    "MAX_ENTRIES",
    "MAX_ENTRY_SIZE",
    "MAX_RATIO",
    "MAX_TOTAL_SIZE",
    "Package",
    "ZipLimits",
    "check_zip",
    "extract_zip",
    "open_package",
    "write_target",
]

MAX_ENTRIES = 1_000_000
MAX_ENTRY_SIZE = 16 << 30
MAX_TOTAL_SIZE = 64 << 30
MAX_RATIO = 200
MAX_MANIFEST = 256 << 20
_LOCAL = struct.Struct("<4sHHHHHIIIHH")

ReadRange = Callable[[int, int], bytes]


@dataclass(frozen=True)
class ZipLimits:
    """What :func:`check_zip` accepts. The defaults are a package's; the
    server's upload passes its own (and its 413 error type)."""

    max_entries: int = MAX_ENTRIES
    max_entry: int = MAX_ENTRY_SIZE
    max_total: int = MAX_TOTAL_SIZE
    max_ratio: int = MAX_RATIO
    #: the per-entry compression ratio is checked above this declared size
    ratio_min_size: int = 1 << 20
    #: with the archive's size: the declared sizes add up to at most
    #: ``max_ratio`` times it (at least ``ratio_floor``), so many small entries
    #: cannot add up to a bomb either
    archive_size: int | None = None
    ratio_floor: int = 1 << 20
    #: raised for a count, size or ratio above the limits
    too_large: type[InputError] = InputError


def check_zip(
    zf: zipfile.ZipFile, where: str, limits: ZipLimits = ZipLimits()
) -> dict[str, zipfile.ZipInfo]:
    """Refuse a hostile archive; return its file entries by name (in archive order).

    The one zip validator: unsafe names (``..``, absolute, backslash, NUL,
    overlong), duplicates, a name that is both a file and a directory,
    symlinks, encryption, compression other than stored/deflate, too many
    entries, declared sizes or compression ratios above ``limits``.
    """
    infos = zf.infolist()
    big = limits.too_large
    if len(infos) > limits.max_entries:
        raise big(f"zip has more than {limits.max_entries} entries", where)
    ratio_total = None
    if limits.archive_size is not None:
        floor = limits.ratio_floor // max(limits.max_ratio, 1)
        ratio_total = limits.max_ratio * max(limits.archive_size, floor)
    seen: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        raw = info.filename
        name = raw[:-1] if raw.endswith("/") else raw
        ew = f"{where}: {raw!r}"
        safe_relpath(name, ew)
        if name in seen or raw in seen:
            raise UnsafePathError("duplicate name in zip", ew)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnsafePathError("symlink entry in zip", ew)
        if info.flag_bits & 0x1:
            raise InputError("encrypted zip entry", ew)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise InputError(f"unsupported zip compression {info.compress_type}", ew)
        if info.file_size > limits.max_entry:
            raise big(f"zip entry declares {info.file_size} bytes (zip bomb?)", ew)
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise InputError("stored zip entry with differing sizes", ew)
        if info.file_size > limits.ratio_min_size and info.file_size > limits.max_ratio * max(
            1, info.compress_size
        ):
            raise big(f"zip entry compression ratio above {limits.max_ratio}:1 (zip bomb?)", ew)
        total += info.file_size
        if total > limits.max_total:
            raise big(f"zip declares more than {limits.max_total} bytes (zip bomb?)", where)
        if ratio_total is not None and total > ratio_total:
            raise big(
                f"zip unpacks to more than {limits.max_ratio} times its size (zip bomb?)", where
            )
        if raw.endswith("/"):
            seen[raw] = info
            continue
        seen[name] = info
    files = {n: i for n, i in seen.items() if not n.endswith("/")}
    dirs = {"/".join(n.split("/")[:i]) for n in files for i in range(1, n.count("/") + 1)}
    clash = dirs & files.keys()
    if clash:
        raise InputError("name is both a file and a directory", f"{where}: {sorted(clash)[0]!r}")
    return files


class Package:
    """A sealed package opened from a directory or a zip; use as a context manager."""

    def __init__(
        self,
        where: str,
        manifest: Manifest,
        *,
        root: Path | None = None,
        zip_path: Path | None = None,
        zf: zipfile.ZipFile | None = None,
        entries: dict[str, zipfile.ZipInfo] | None = None,
    ) -> None:
        self.where = where
        self.manifest = manifest
        self.root = root
        self.zip_path = zip_path
        self._zf = zf
        self._entries = entries or {}
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._cache: dict[str, bytes] = {}
        if zip_path is not None:
            try:
                self._fd = os.open(zip_path, os.O_RDONLY)
            except OSError as exc:
                raise StorageError(f"cannot open: {exc.strerror}", str(zip_path)) from exc
        self._offsets: dict[str, int] = {}
        #: called as ``on_read(name, nbytes)`` for each chunk :meth:`iter_chunks`
        #: yields (progress within a file; see ``sealing._progress``)
        self.on_read: Callable[[str, int], None] | None = None

    @property
    def is_zip(self) -> bool:
        return self._zf is not None

    def close(self) -> None:
        if self._zf is not None:
            self._zf.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Package:
        return self

    def __exit__(
        self,
        t: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- member access --------------------------------------------------------

    def _path(self, name: str) -> Path | None:
        assert self.root is not None
        try:
            p = resolve_inside(self.root, name)
        except (UnsafePathError, OSError, RuntimeError):  # RuntimeError: symlink loop
            return None
        try:
            st = os.stat(p)
        except OSError:
            return None
        return p if stat.S_ISREG(st.st_mode) else None

    def size(self, name: str) -> int | None:
        """Size of member ``name`` or ``None`` if it is missing (or not a regular file)."""
        if self._zf is not None:
            info = self._entries.get(name)
            return None if info is None else info.file_size
        p = self._path(name)
        if p is None:
            return None
        try:
            return p.stat().st_size
        except OSError:
            return None

    def _zip_offset(self, info: zipfile.ZipInfo) -> int:
        off = self._offsets.get(info.filename)
        if off is None:
            assert self._fd is not None
            head = os.pread(self._fd, _LOCAL.size, info.header_offset)
            if len(head) != _LOCAL.size or head[:4] != b"PK\x03\x04":
                raise StorageError("bad local zip header", info.filename)
            fields = _LOCAL.unpack(head)
            off = info.header_offset + _LOCAL.size + fields[9] + fields[10]
            self._offsets[info.filename] = off
        return off

    def _zip_member(self, name: str, info: zipfile.ZipInfo) -> bytes:
        with self._lock:
            data = self._cache.get(name)
            if data is None:
                assert self._zf is not None
                try:
                    with self._zf.open(info) as fh:
                        data = fh.read(info.file_size + 1)
                except (zipfile.BadZipFile, OSError, EOFError) as exc:
                    raise StorageError(f"cannot read zip entry: {exc}", name) from exc
                self._cache = {name: data}
            return data

    def reader(self, name: str) -> ReadRange | None:
        """``read(offset, length)`` for member ``name``, or ``None`` if missing."""
        if self._zf is not None:
            info = self._entries.get(name)
            if info is None:
                return None
            if info.compress_type == zipfile.ZIP_STORED:
                base = self._zip_offset(info)
                fd = self._fd
                assert fd is not None

                def read_zip(off: int, length: int) -> bytes:
                    try:
                        return os.pread(fd, min(length, max(0, info.file_size - off)), base + off)
                    except OSError as exc:
                        raise StorageError(f"cannot read: {exc.strerror}", name) from exc

                return read_zip

            def read_member(off: int, length: int) -> bytes:
                return self._zip_member(name, info)[off : off + length]

            return read_member
        p = self._path(name)
        if p is None:
            return None
        try:
            return _FileReader(p)
        except OSError:
            return None

    def unreadable(self, name: str) -> str | None:
        """Why member ``name`` is there but cannot be read as a regular file
        (a directory, FIFO or device in its place, a failing ``stat``), or
        ``None`` (readable, absent, or outside the tree). A read failure is
        an I/O problem (exit 5), not damaged data."""
        if self._zf is not None or self.root is None:
            return None
        try:
            p = resolve_inside(self.root, name)
        except (UnsafePathError, OSError, RuntimeError):
            return None
        try:
            st = os.stat(p)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"cannot stat: {exc.strerror}"
        if stat.S_ISREG(st.st_mode):
            return None
        what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        return f"cannot read: {what}"

    def iter_chunks(self, name: str, chunk: int = 8 << 20) -> Iterator[bytes]:
        """Member ``name`` in chunks (raises :class:`NotFoundError` if missing)."""
        read = self.reader(name)
        size = self.size(name)
        if read is None or size is None:
            raise NotFoundError("missing", name)
        off = 0
        while off < size:
            data = read(off, min(chunk, size - off))
            if not data:
                return
            if self.on_read is not None:
                self.on_read(name, len(data))
            yield data
            off += len(data)

    def read_bytes(self, name: str) -> bytes | None:
        size = self.size(name)
        read = self.reader(name)
        if size is None or read is None:
            return None
        return read(0, size)

    def names(self) -> list[str]:
        if self._zf is not None:
            return sorted(self._entries)
        assert self.root is not None
        return walk_files(self.root)


class _FileReader:
    """``read(offset, length)`` over one open file; closes it when dropped.
    A failing read raises :class:`~auraseal.errors.StorageError` naming the file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size

    def __call__(self, off: int, length: int) -> bytes:
        try:
            return os.pread(self.fd, min(length, max(0, self.size - off)), off)
        except OSError as exc:
            raise StorageError(f"cannot read: {exc.strerror}", self.path) from exc

    def __del__(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # AttributeError: open failed
            os.close(self.fd)


def write_target(root: Path, rel: str) -> Path:
    """Where to (atomically) write member ``rel`` of a package directory.

    The parent directory must resolve inside ``root``; the final name is not
    followed: the atomic rename replaces whatever entry is there (a symlink,
    even a looping one, is replaced, never written through).
    """
    safe_relpath(rel)
    parent, _, base = rel.rpartition("/")
    try:
        real_parent = resolve_inside(root, parent) if parent else root.resolve()
    except RuntimeError as exc:  # symlink loop in a parent
        raise UnsafePathError("symlink loop", rel) from exc
    return real_parent / base


def _check_manifest_names(manifest: Manifest, where: str) -> None:
    paths = set(manifest.paths())
    for e in manifest.files:
        if e.path == MANIFEST_NAME:
            raise ManifestFormatError("a file is named like the manifest", where)
        for n in range(len(e.recovery.parts) if e.recovery else 0):
            if part_name(e.path, n) in paths:
                raise ManifestFormatError(
                    f"{part_name(e.path, n)!r} is both a file and a part", where
                )


def open_package(
    path: Path | str,
    *,
    policy: TrustPolicy | None = None,
    state: TrustState | None = None,
    now: datetime | None = None,
) -> Package:
    """Open a package directory or zip and load (and, with ``policy``, trust) its manifest."""
    path = Path(path)
    where = str(path)
    if path.is_dir():
        mpath = path / MANIFEST_NAME
        try:
            if mpath.is_symlink():
                raise UnsafePathError("manifest is a symlink", str(mpath))
            with open(mpath, "rb") as fh:
                data = fh.read(MAX_MANIFEST + 1)
        except OSError as exc:
            raise NotFoundError(f"no readable {MANIFEST_NAME}: {exc.strerror}", where) from exc
        if len(data) > MAX_MANIFEST:
            raise InputError("manifest too large", str(mpath))
        manifest = load_manifest(data, str(mpath), policy=policy, state=state, now=now)
        _check_manifest_names(manifest, where)
        return Package(where, manifest, root=path)
    if not path.is_file():
        raise NotFoundError("no such package (directory or zip)", where)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"not a package directory or a readable zip: {exc}", where) from exc
    try:
        entries = check_zip(zf, where)
        info = entries.get(MANIFEST_NAME)
        if info is None:
            raise NotFoundError(f"zip has no {MANIFEST_NAME}", where)
        if info.file_size > MAX_MANIFEST:
            raise InputError("manifest too large", f"{where}: {MANIFEST_NAME}")
        try:
            with zf.open(info) as fh:
                data = fh.read(MAX_MANIFEST + 1)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise StorageError(f"cannot read manifest from zip: {exc}", where) from exc
        manifest = load_manifest(
            data, f"{where}: {MANIFEST_NAME}", policy=policy, state=state, now=now
        )
        _check_manifest_names(manifest, where)
        return Package(where, manifest, zip_path=path, zf=zf, entries=entries)
    except BaseException:
        zf.close()
        raise


def extract_zip(pkg: Package, dest: Path) -> list[str]:
    """Copy every file member of a (checked) zip package into ``dest``, atomically per file."""
    if not pkg.is_zip:
        raise InputError("not a zip package", pkg.where)
    written = []
    for name in pkg.names():
        target = resolve_inside(dest, name)
        with atomic_writer(target) as out:
            for chunk in pkg.iter_chunks(name):
                out.write(chunk)
        written.append(name)
    return written


def copy_tree_member(pkg: Package, name: str, dest: Path) -> None:
    """Copy one member to ``dest`` atomically."""
    with atomic_writer(dest) as out:
        for chunk in pkg.iter_chunks(name):
            out.write(chunk)
