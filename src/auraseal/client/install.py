"""Crash-safe installs of a package directory, with one previous version kept.

A package is assembled in a staging directory *next to* ``DIR`` (same file
system), verified there, and swapped in with ``renameat2(RENAME_EXCHANGE)``
— one atomic step on Linux; elsewhere three renames. Next to ``DIR`` live::

    .<DIR>.auraseal-tmp-fetch-<pid>-<rand>/  while a fetch assembles (a temp)
    .<DIR>.auraseal-prev/                     the version installed before (for rollback)
    .<DIR>.auraseal.json                      the install record and journal (docs/CLIENT.md)
    .<DIR>.auraseal.lock                      held (flock) while DIR is being changed

``DIR`` itself holds exactly the package's files. A failure before the swap
leaves ``DIR`` untouched.

Every change of ``DIR`` (install or rollback) is journaled: before the first
rename the record is rewritten with a ``pending`` intent naming the new tree
and the old one (by inode), where the new tree comes from, and the record to
write when done. Every later step is idempotent; a process killed at any point
leaves a state that :func:`recover` (run under the lock by the next fetch or
rollback) rolls forward when the new tree already is, or can be, ``DIR``, and
back otherwise. The previous copy is moved aside (to a temp name) and only
deleted after the new previous copy is in place and recorded.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from auraseal._fs import (
    atomic_write_bytes,
    clean_stale_temps,
    file_lock,
    fsync_dir,
    is_temp_name,
    make_temp_dir,
    rename_exchange,
    resolve_inside,
    temp_name,
)
from auraseal.errors import NotFoundError, StorageError, TreeMismatchError

__all__ = [
    "FOREIGN",
    "INSTALL_FORMAT",
    "INSTALL_VERSION",
    "TEMP_KINDS",
    "InstallRecord",
    "Installed",
    "Pending",
    "Staging",
    "StepHook",
    "exchange",
    "foreign_entries",
    "install_lock",
    "read_record",
    "recover",
    "rollback",
    "swap_in",
    "tree_fingerprint",
]

#: the ``name`` recorded for a tree that was in DIR before AuraSeal installed
#: there (``fetch --force``): the previous copy then holds the user's files
FOREIGN = ""
INSTALL_FORMAT = "auraseal-install"
INSTALL_VERSION = 1
#: temp kinds made next to DIR: the staging tree (and its swap name) and
#: a previous copy being deleted
TEMP_KINDS = frozenset({"fetch", "old"})

#: ``step(name)`` is called after each durable step of an install or rollback
#: (tests kill the process there to prove every step is recoverable).
StepHook = Callable[[str], None]


def _no_step(_name: str) -> None:
    return None


@dataclass(frozen=True)
class Installed:
    """One installed version: manifest name, version and digest, and the
    fingerprint of its tree (names and sizes, see :func:`tree_fingerprint`)."""

    name: str
    version: int
    digest: str
    url: str
    installed_at: str
    tree: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "url": self.url,
            "installed_at": self.installed_at,
        }
        if self.tree is not None:
            d["tree"] = self.tree
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Installed | None:
        if d is None:
            return None
        if not isinstance(d, dict):
            raise StorageError("install record entry must be an object", where)
        try:
            tree = d.get("tree")
            return cls(
                name=str(d["name"]),
                version=int(d["version"]),
                digest=str(d["digest"]),
                url=str(d["url"]),
                installed_at=str(d["installed_at"]),
                tree=None if tree is None else str(tree),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StorageError(f"install record entry is incomplete: {exc}", where) from exc


@dataclass(frozen=True)
class Pending:
    """A journaled change of DIR (``op`` "install" or "rollback").

    The new tree starts at ``source`` (a name beside DIR) with inode
    ``new_ino``; the tree in DIR before has ``old_ino`` (None if DIR was
    absent) and becomes the previous copy if ``old_to_prev`` (else it is
    deleted); ``swap`` is the temp name used by the three-rename exchange;
    ``current``/``previous`` are the record once done.
    """

    op: str
    source: str
    swap: str
    new_ino: int
    old_ino: int | None
    old_to_prev: bool
    current: Installed | None
    previous: Installed | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "source": self.source,
            "swap": self.swap,
            "new_ino": self.new_ino,
            "old_ino": self.old_ino,
            "old_to_prev": self.old_to_prev,
            "current": None if self.current is None else self.current.to_dict(),
            "previous": None if self.previous is None else self.previous.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Pending | None:
        if d is None:
            return None
        if not isinstance(d, dict):
            raise StorageError("install record 'pending' must be an object", where)
        try:
            old_ino = d["old_ino"]
            p = cls(
                op=str(d["op"]),
                source=str(d["source"]),
                swap=str(d["swap"]),
                new_ino=int(d["new_ino"]),
                old_ino=None if old_ino is None else int(old_ino),
                old_to_prev=bool(d["old_to_prev"]),
                current=Installed.from_dict(d.get("current"), where),
                previous=Installed.from_dict(d.get("previous"), where),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StorageError(f"install record 'pending' is incomplete: {exc}", where) from exc
        # names come from a file: only our own temp names (or the previous copy)
        if "/" in p.swap or not is_temp_name(p.swap) or "/" in p.source or not (
            is_temp_name(p.source) or p.source.endswith(".auraseal-prev")
        ):
            raise StorageError("install record 'pending' names a foreign path", where)
        return p


@dataclass(frozen=True)
class InstallRecord:
    """What DIR holds (``current``), what the previous copy holds, the
    highest version installed per package name (``seen``: rollback state kept
    even when DIR changes package) and an unfinished change (``pending``)."""

    current: Installed | None
    previous: Installed | None
    seen: dict[str, tuple[int, str]] = field(default_factory=dict)
    pending: Pending | None = None

    def highest(self, name: str) -> tuple[int, str] | None:
        """The highest (version, digest) of ``name`` ever installed in DIR."""
        best = self.seen.get(name)
        for e in (self.current, self.previous):
            if e is not None and e.name == name and (best is None or e.version > best[0]):
                best = (e.version, e.digest)
        return best

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": INSTALL_FORMAT,
            "version": INSTALL_VERSION,
            "current": None if self.current is None else self.current.to_dict(),
            "previous": None if self.previous is None else self.previous.to_dict(),
        }
        if self.seen:
            d["seen"] = {
                n: {"version": v, "digest": dg} for n, (v, dg) in sorted(self.seen.items())
            }
        if self.pending is not None:
            d["pending"] = self.pending.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> InstallRecord:
        if not isinstance(d, dict) or d.get("format") != INSTALL_FORMAT:
            raise StorageError(f"not a {INSTALL_FORMAT} record", where)
        if d.get("version") != INSTALL_VERSION:
            raise StorageError(f"unsupported install record version {d.get('version')!r}", where)
        seen: dict[str, tuple[int, str]] = {}
        raw = d.get("seen") or {}
        if not isinstance(raw, dict):
            raise StorageError("install record 'seen' must be an object", where)
        try:
            for n, s in raw.items():
                seen[str(n)] = (int(s["version"]), str(s["digest"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise StorageError(f"install record 'seen' is incomplete: {exc}", where) from exc
        return cls(
            Installed.from_dict(d.get("current"), where),
            Installed.from_dict(d.get("previous"), where),
            seen,
            Pending.from_dict(d.get("pending"), where),
        )


def _sibling(dest: Path, suffix: str) -> Path:
    return dest.parent / f".{dest.name}.auraseal{suffix}"


def prev_dir(dest: Path) -> Path:
    return _sibling(dest, "-prev")


def record_path(dest: Path) -> Path:
    return _sibling(dest, ".json")


def lock_path(dest: Path) -> Path:
    return _sibling(dest, ".lock")


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


def install_lock(dest: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the exclusive lock on changes of ``dest`` (waits for another holder)."""
    return file_lock(lock_path(Path(dest).absolute()), 0o644)


def foreign_entries(dest: Path, record: InstallRecord | None) -> int:
    """The number of entries in ``dest`` when it is a non-empty directory that
    AuraSeal did not install (no record of a current package, or the user's
    own files rolled back into place); else 0."""
    cur = record.current if record is not None else None
    if cur is not None and cur.name != FOREIGN:
        return 0
    try:
        with os.scandir(dest) as it:
            return sum(1 for _ in it)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    except OSError as exc:
        raise StorageError(f"cannot list directory: {exc.strerror}", str(dest)) from exc


def tree_fingerprint(root: Path) -> str:
    """SHA-256 over the sorted ``name NUL size`` lines of every file below
    ``root`` (symlinks listed by name, not followed): tells a complete copy
    from a partly deleted or altered one without reading the contents."""
    lines: list[str] = []
    base = str(root)
    for dirpath, _dirnames, filenames in os.walk(root, followlinks=False):
        for f in filenames:
            p = os.path.join(dirpath, f)
            try:
                size = os.lstat(p).st_size
            except OSError as exc:
                raise StorageError(f"cannot stat: {exc.strerror}", p) from exc
            lines.append(f"{os.path.relpath(p, base)}\0{size}\n")
    lines.sort()
    return hashlib.sha256("".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def _rename(a: Path, b: Path) -> None:
    try:
        os.rename(a, b)
    except OSError as exc:
        raise StorageError(f"cannot rename to {b.name}: {exc.strerror}", str(a)) from exc


def exchange(a: Path, b: Path, tmp: Path | None = None, step: StepHook | None = None) -> None:
    """Atomically swap two existing paths (Linux ``RENAME_EXCHANGE``); where
    unsupported, three renames through ``tmp`` (each reported to ``step``)."""
    step = step or _no_step
    err = rename_exchange(a, b)
    if err == 0:
        fsync_dir(a.parent)
        return
    if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        raise StorageError(f"cannot swap directories: {os.strerror(err)}", str(b))
    tmp = tmp or a.parent / (temp_name(a.name.lstrip("."), "fetch") + ".swap")
    _rename(a, tmp)
    fsync_dir(a.parent)
    step("swap-1")
    _rename(b, a)
    fsync_dir(a.parent)
    step("swap-2")
    _rename(tmp, b)
    fsync_dir(a.parent)


class Staging:
    """A temp directory next to ``dest`` where a package is assembled (named
    by the shared temp scheme, kind ``fetch``)."""

    def __init__(self, dest: Path) -> None:
        self.dest = Path(dest).absolute()
        self.consumed = False
        if self.dest.exists() and not self.dest.is_dir():
            raise StorageError("destination exists and is not a directory", str(dest))
        self.path = make_temp_dir(self.dest.parent, self.dest.name, "fetch")

    def file(self, rel: str) -> Path:
        """The staging path for package file ``rel`` (parents created)."""
        p = resolve_inside(self.path, rel)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create directory: {exc.strerror}", rel) from exc
        return p

    def discard(self) -> None:
        """Remove the staging directory (unless it was handed to the journal)."""
        if not self.consumed:
            shutil.rmtree(self.path, ignore_errors=True)


def _ino(p: Path) -> int | None:
    try:
        st = os.lstat(p)
    except OSError:
        return None
    return st.st_ino if os.path.isdir(p) and not os.path.islink(p) else None


def _trash(p: Path, dest: Path) -> Path | None:
    """Move ``p`` aside to a temp name (kind ``old``) to be deleted later."""
    if not os.path.lexists(p):
        return None
    t = p.parent / temp_name(dest.name, "old")
    _rename(p, t)
    return t


def _seen_with(rec: InstallRecord | None, e: Installed | None) -> dict[str, tuple[int, str]]:
    seen = dict(rec.seen) if rec is not None else {}
    if rec is not None:
        for x in (rec.current, rec.previous):
            if x is not None and (x.name not in seen or x.version > seen[x.name][0]):
                seen[x.name] = (x.version, x.digest)
    if e is not None and (e.name not in seen or e.version > seen[e.name][0]):
        seen[e.name] = (e.version, e.digest)
    return seen


def _apply(dest: Path, rec: InstallRecord, step: StepHook) -> InstallRecord:
    """Finish (roll forward) or undo (roll back) ``rec.pending``; idempotent."""
    pend = rec.pending
    assert pend is not None
    parent = dest.parent
    prev = prev_dir(dest)
    if pend.source != prev.name and not is_temp_name(pend.source):
        raise StorageError("install record 'pending' names a foreign tree", str(dest))
    source = parent / pend.source
    swap = parent / pend.swap
    places = [dest, source, swap, prev]

    def where(ino: int | None) -> Path | None:
        if ino is None:
            return None
        for p in places:
            if _ino(p) == ino:
                return p
        return None

    new_at = where(pend.new_ino)
    if new_at is not None and new_at != dest and not os.path.lexists(dest):
        _rename(new_at, dest)  # first install, or killed inside a three-rename exchange
        fsync_dir(parent)
        new_at = dest
    trash: list[Path] = []
    if new_at == dest:  # forward: DIR is the new tree
        previous = pend.previous
        old_at = where(pend.old_ino)
        if pend.old_to_prev and pend.old_ino is not None:
            if old_at is None:
                previous = None  # cannot happen unless removed by hand: keep no claim
            elif old_at != prev:
                t = _trash(prev, dest)
                if t is not None:
                    trash.append(t)
                fsync_dir(parent)
                step("prev-aside")
                _rename(old_at, prev)
                fsync_dir(parent)
                step("prev-kept")
        else:
            if old_at is not None and old_at != prev:
                t = _trash(old_at, dest)
                if t is not None:
                    trash.append(t)
            if previous is None:
                t = _trash(prev, dest)
                if t is not None:
                    trash.append(t)
            fsync_dir(parent)
            step("old-aside")
        if previous is not None and _ino(prev) is None:
            previous = None
        done = InstallRecord(pend.current, previous, _seen_with(rec, pend.current))
    else:  # back: DIR keeps (or gets back) the old tree
        if not os.path.lexists(dest):
            old_at = where(pend.old_ino)
            if old_at is not None:
                _rename(old_at, dest)
        if new_at is not None and new_at != prev:
            if pend.op == "rollback" and not os.path.lexists(prev):
                _rename(new_at, prev)
            else:
                trash.append(new_at)
        fsync_dir(parent)
        done = InstallRecord(rec.current, rec.previous, rec.seen)
    try:
        write_record(dest, done)
    except StorageError:
        # e.g. no room for the record: the journal on disk still finishes the
        # change later, and no longer names the trash, so never leave it behind
        for t in trash:
            shutil.rmtree(t, ignore_errors=True)
        raise
    step("recorded")
    for t in trash:
        shutil.rmtree(t, ignore_errors=True)
    return done


def recover(dest: Path, step: StepHook | None = None) -> InstallRecord | None:
    """Finish or undo a change of ``dest`` interrupted by a kill, and remove
    the temps of dead processes beside it. Call with :func:`install_lock` held."""
    dest = Path(dest).absolute()
    rec = read_record(dest)
    if rec is not None and rec.pending is not None:
        rec = _apply(dest, rec, step or _no_step)
    clean_stale_temps(dest.parent, TEMP_KINDS)
    return rec


def swap_in(
    stage: Staging,
    installed: Installed,
    step: StepHook | None = None,
    *,
    locked: bool = False,
) -> InstallRecord:
    """Make the staged tree ``DIR``; the old ``DIR`` becomes the previous
    version (unless it is the same version again: then the previous copy is
    kept). Journaled: a kill at any step is finished or undone by :func:`recover`.
    ``locked``: the caller already holds :func:`install_lock`."""
    step = step or _no_step
    dest = stage.dest
    with contextlib.nullcontext() if locked else install_lock(dest):
        old = recover(dest)
        os.chmod(stage.path, 0o755)  # noqa: S103 - a package directory is world-readable
        fsync_dir(stage.path)
        new = replace(installed, tree=tree_fingerprint(stage.path))
        cur = old.current if old is not None else None
        old_ino = _ino(dest)
        if os.path.lexists(dest) and old_ino is None:
            raise StorageError("destination exists and is not a directory", str(dest))
        same = cur is not None and (cur.name, cur.version, cur.digest) == (
            new.name, new.version, new.digest
        )
        if old_ino is None:
            to_prev, previous = False, None
        elif (cur is None or cur.name == FOREIGN) and foreign_entries(dest, old):
            # files AuraSeal did not install (fetch --force): kept as the
            # previous copy, so rollback restores them until the next fetch
            to_prev = True
            previous = cur or Installed(
                FOREIGN, 0, "", "", new.installed_at, tree_fingerprint(dest)
            )
        elif same:
            to_prev, previous = False, old.previous if old is not None else None
        else:
            to_prev, previous = True, cur
        new_ino = _ino(stage.path)
        assert new_ino is not None
        pend = Pending(
            op="install",
            source=stage.path.name,
            swap=stage.path.name + ".swap",
            new_ino=new_ino,
            old_ino=old_ino,
            old_to_prev=to_prev,
            current=new,
            previous=previous,
        )
        base = old or InstallRecord(None, None)
        journaled = replace(base, pending=pend)
        write_record(dest, journaled)
        stage.consumed = True  # the journal owns the staged tree now
        step("journal")
        if old_ino is not None:
            try:
                exchange(stage.path, dest, stage.path.parent / pend.swap, step)
            except StorageError:
                with contextlib.suppress(StorageError):
                    _apply(dest, journaled, _no_step)  # undo: DIR still holds the old tree
                raise
            step("swapped")
        return _apply(dest, journaled, step)


def rollback(dest: Path, step: StepHook | None = None) -> InstallRecord:
    """Swap ``DIR`` with the version installed before it (again to undo).

    Refused when there is no recorded previous copy, or when the previous
    copy is not complete (its files differ from those it was installed with).
    """
    step = step or _no_step
    dest = Path(dest).absolute()
    prev = prev_dir(dest)
    if not dest.parent.is_dir():
        raise NotFoundError("nothing installed", str(dest))
    with install_lock(dest):
        old = recover(dest)
        if _ino(prev) is None:
            raise NotFoundError("no previous version to roll back to", str(dest))
        old_ino = _ino(dest)
        if old_ino is None:
            raise NotFoundError("nothing installed", str(dest))
        if old is None or old.previous is None:
            raise NotFoundError("the previous copy is not recorded", str(prev))
        if old.previous.tree is not None and tree_fingerprint(prev) != old.previous.tree:
            raise TreeMismatchError(
                f"previous copy of '{old.previous.name}' v{old.previous.version} is "
                "incomplete or altered; not rolled back",
                str(prev),
            )
        new_ino = _ino(prev)
        assert new_ino is not None
        pend = Pending(
            op="rollback",
            source=prev.name,
            swap=temp_name(dest.name, "fetch") + ".swap",
            new_ino=new_ino,
            old_ino=old_ino,
            old_to_prev=True,
            current=old.previous,
            previous=old.current,
        )
        journaled = replace(old, pending=pend)
        write_record(dest, journaled)
        step("journal")
        try:
            exchange(prev, dest, dest.parent / pend.swap, step)
        except StorageError:
            with contextlib.suppress(StorageError):
                _apply(dest, journaled, _no_step)
            raise
        step("swapped")
        return _apply(dest, journaled, step)
