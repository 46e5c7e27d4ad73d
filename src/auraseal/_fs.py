"""Filesystem helpers shared by every part: safe names and atomic writes.

Nothing here prints.  Every failure is an :mod:`auraseal.errors` type.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from auraseal.errors import StorageError, UnsafePathError

__all__ = [
    "MAX_NAME_BYTES",
    "atomic_write_bytes",
    "atomic_writer",
    "clean_stale_temps",
    "file_lock",
    "fsync_dir",
    "is_temp_name",
    "make_temp_dir",
    "rename_exchange",
    "resolve_inside",
    "safe_relpath",
    "temp_name",
    "walk_files",
]

#: Longest relative name accepted (bytes of UTF-8), and longest single segment.
MAX_NAME_BYTES = 4096
MAX_SEGMENT_BYTES = 255


def safe_relpath(name: str, where: str = "") -> str:
    """Return ``name`` if it is a safe relative POSIX path, else raise.

    Refused: empty names, absolute paths, ``..`` or ``.`` segments, empty
    segments (``a//b``), backslashes, NUL and other control characters,
    drive letters, and names longer than :data:`MAX_NAME_BYTES`.
    """
    where = where or repr(name)
    if not isinstance(name, str) or name == "":
        raise UnsafePathError("empty file name", where)
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise UnsafePathError(f"name longer than {MAX_NAME_BYTES} bytes", where)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise UnsafePathError("control character (such as NUL) in name", where)
    if "\\" in name:
        raise UnsafePathError("backslash in name", where)
    if name.startswith("/"):
        raise UnsafePathError("absolute path", where)
    if len(name) >= 2 and name[1] == ":":
        raise UnsafePathError("drive-letter path", where)
    for seg in name.split("/"):
        if seg == "":
            raise UnsafePathError("empty path segment", where)
        if seg in (".", ".."):
            raise UnsafePathError(f"'{seg}' segment in path", where)
        if len(seg.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
            raise UnsafePathError(f"path segment longer than {MAX_SEGMENT_BYTES} bytes", where)
    return name


def resolve_inside(root: Path, rel: str, *, must_exist: bool = False) -> Path:
    """Join a safe relative name onto ``root`` and prove it stays inside.

    Symlinks along the way are resolved; a path whose real location is
    outside ``root`` is refused, so nothing outside the tree is ever read or
    written through a link.
    """
    safe_relpath(rel)
    real_root = root.resolve()
    candidate = real_root / rel
    real = candidate.resolve()
    if real != real_root and real_root not in real.parents:
        raise UnsafePathError("resolves outside the tree (symlink?)", rel)
    if must_exist and not real.exists():
        raise StorageError("no such file", rel)
    return candidate


def walk_files(root: Path, *, exclude: frozenset[str] = frozenset()) -> list[str]:
    """List regular files below ``root`` as sorted relative POSIX names.

    Symlinks that resolve inside the tree to a regular file are listed under
    their own name; a symlink leaving the tree raises
    :class:`~auraseal.errors.UnsafePathError`. Directories reached through
    symlinks are not followed. Names in ``exclude`` (relative) are skipped.
    """
    real_root = root.resolve()
    if not real_root.is_dir():
        raise StorageError("not a directory", str(root))
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(real_root, followlinks=False):
        base = Path(dirpath)
        for d in list(dirnames):
            p = base / d
            if p.is_symlink():
                target = p.resolve()
                if target != real_root and real_root not in target.parents:
                    rel = p.relative_to(real_root).as_posix()
                    raise UnsafePathError("symlink leaves the tree", rel)
                dirnames.remove(d)
        for f in filenames:
            p = base / f
            rel = p.relative_to(real_root).as_posix()
            if rel in exclude:
                continue
            safe_relpath(rel)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                target = p.resolve()
                if real_root not in target.parents:
                    raise UnsafePathError("symlink leaves the tree", rel)
                if not target.is_file():
                    continue
            elif not stat.S_ISREG(st.st_mode):
                continue
            out.append(rel)
    out.sort()
    return out


#: Every temp file or directory AuraSeal creates is named
#: ``.<stem>.auraseal-tmp-<kind>-<pid>-<random>`` so that (a) each command can
#: remove the leftovers of a killed run of its own kind when it starts, and
#: (b) verification can tell them apart from package files.
TEMP_MARK = ".auraseal-tmp-"
_TEMP_RE = re.compile(r"^\..*\.auraseal-tmp-([a-z][a-z0-9]*)-([0-9]+)-[0-9a-f]+(?:\.[a-z]+)?$")


def temp_name(stem: str, kind: str) -> str:
    """A fresh temp name for ``stem`` owned by this process (see :data:`TEMP_MARK`)."""
    if not kind.isalnum() or not kind.islower():
        raise ValueError(f"temp kind must be lower-case alphanumeric: {kind!r}")
    return f".{stem}{TEMP_MARK}{kind}-{os.getpid()}-{secrets.token_hex(6)}"


def is_temp_name(name: str) -> bool:
    """True if the last segment of ``name`` is an AuraSeal temp name."""
    return _TEMP_RE.match(name.rsplit("/", 1)[-1]) is not None


def make_temp_dir(parent: Path, stem: str, kind: str) -> Path:
    """Create and return an empty temp directory in ``parent`` named by :func:`temp_name`."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
        path = parent / temp_name(stem, kind)
        path.mkdir(mode=0o700)
    except OSError as exc:
        raise StorageError(f"cannot create temp directory: {exc.strerror}", str(parent)) from exc
    return path


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def clean_stale_temps(parent: Path, kinds: frozenset[str] | set[str] | None = None) -> list[str]:
    """Remove temp entries in ``parent`` (not recursive) left by dead processes.

    Only names made by :func:`temp_name` are considered, only of the given
    ``kinds`` (all kinds if None), and only when the process that made them
    no longer exists: a temp of a running command (this one included) is never
    touched. Returns the names removed. Errors are ignored: cleaning is best
    effort and must never make a command fail.
    """
    removed: list[str] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        m = _TEMP_RE.match(name)
        if m is None or (kinds is not None and m.group(1) not in kinds):
            continue
        if _pid_alive(int(m.group(2))):
            continue
        p = parent / name
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except OSError:
            continue
        removed.append(name)
    return sorted(removed)


@contextlib.contextmanager
def file_lock(path: Path, mode: int = 0o600) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block.

    The lock belongs to the open file description, so it excludes other
    processes and other threads of this process alike (each call opens the
    file anew); it is released when the block ends or the process dies.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise StorageError(f"cannot open lock file: {exc.strerror}", str(path)) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it is durable (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o644, *, kind: str = "write") -> Iterator[BinaryIO]:
    """Write ``path`` through a temp file in the same directory.

    The temp file is named by :func:`temp_name` with ``kind`` (the command
    writing it, so that the command can remove its own stale leftovers).

    The temp file is flushed, fsynced, given ``mode`` and renamed over
    ``path`` only if the block exits normally; on any exception it is
    removed and ``path`` is untouched.
    """
    path = Path(path)
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = str(parent / temp_name(path.name, kind))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StorageError(f"cannot create temp file: {exc.strerror}", str(parent)) from exc
    ok = False
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        ok = True
    except OSError as exc:
        raise StorageError(f"cannot write: {exc.strerror}", str(path)) from exc
    finally:
        if not ok:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    fsync_dir(parent)


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int, where: str) -> None:
    """Write all of ``data`` at ``offset`` of ``fd``; a failure (ENOSPC, EIO) is a
    :class:`~auraseal.errors.StorageError` naming ``where`` (exit 5)."""
    view = memoryview(data)
    try:
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
    except OSError as exc:
        raise StorageError(f"cannot write: {exc.strerror}", where) from exc


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Atomically replace ``path`` with ``data`` (temp file, fsync, rename)."""
    with atomic_writer(path, mode) as fh:
        fh.write(data)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@functools.cache
def _renameat2() -> Any:
    """libc's ``renameat2`` (Linux), or None where there is none."""
    import ctypes  # noqa: PLC0415  (only for a swap)
    import ctypes.util  # noqa: PLC0415

    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def rename_exchange(a: Path, b: Path) -> int:
    """Atomically swap two existing paths (Linux ``renameat2(RENAME_EXCHANGE)``).

    The one binding of ``renameat2``. Returns 0 once swapped, else the errno:
    ``ENOSYS`` where libc has no ``renameat2``; ``ENOSYS``, ``EINVAL`` or
    ``ENOTSUP`` where the kernel or file system cannot exchange (the caller
    then falls back to renames).
    """
    fn = _renameat2()
    if fn is None:
        return errno.ENOSYS
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return 0
    import ctypes  # noqa: PLC0415

    return ctypes.get_errno() or errno.EIO
