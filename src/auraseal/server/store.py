"""The package store below ROOT, and its atomic publish swap.

Layout (see ``docs/SERVER.md``)::

    ROOT/<name>                      the package being served: a directory, or a
                                     symlink to .versions/<name>/<version>
    ROOT/.versions/<name>/<version>/ unpacked, verified versions (immutable)
    ROOT/.auraseal/                  server state (never served)

A package directory holds ``integrity-manifest.json`` at its root, every
original file at its own path and part ``M`` of a file at ``<path>.part.<M>``
(``docs/FORMAT.md``). Only names the manifest lists are ever served.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auraseal._fs import (
    clean_stale_temps,
    fsync_dir,
    is_temp_name,
    make_temp_dir,
    rename_exchange,
    safe_relpath,
    temp_name,
)
from auraseal.errors import (
    AuraSealError,
    NotFoundError,
    StorageError,
    UnsafePathError,
)
from auraseal.manifest import MANIFEST_NAME, Manifest, load_manifest, part_name
from auraseal.server.config import STATE_DIR, VERSIONS_DIR, check_package_name
from auraseal.server.locks import file_lock
from auraseal.server.static import content_type_for, etag_for_integrity

__all__ = ["PackageStore", "PackageView", "Resource", "ViewKey", "view_key"]


@dataclass(frozen=True)
class Resource:
    """A servable name inside a package: the manifest, a file, or a part."""

    rel: str
    kind: str  # "manifest" | "file" | "part"
    integrity: str
    etag: str
    size: int
    content_type: str
    component: str
    #: Unencoded-Digest / Signature-Input / Signature of a file signed for HTTP
    signature_headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class PackageView:
    """One loaded version of one package (immutable snapshot)."""

    name: str
    version: int
    dir: Path
    manifest: Manifest
    manifest_bytes: bytes
    resources: dict[str, Resource]
    #: per-route memo of prepared responses (filled by the app; the view is immutable)
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def size(self) -> int:
        """Bytes on disk of everything the package serves (files, parts, manifest)."""
        return sum(r.size for r in self.resources.values())

    def resource(self, rel: str) -> Resource:
        res = self.resources.get(rel)
        if res is None:
            raise NotFoundError("no such file in package", f"{self.name}/{rel}")
        return res

    def path_of(self, res: Resource) -> Path:
        return self.dir / res.rel

    def manifest_bytes_digest(self) -> str:
        """First 16 hex digits of SHA-256 of the manifest bytes (names cached artefacts)."""
        return hashlib.sha256(self.manifest_bytes).hexdigest()[:16]


def _build_view(name: str, real_dir: Path, data: bytes) -> PackageView:
    manifest = load_manifest(data, f"{name}/{MANIFEST_NAME}")
    digest = hashlib.sha256(data).digest()
    import base64  # noqa: PLC0415

    m_integ = "sha256-" + base64.b64encode(digest).decode()
    res: dict[str, Resource] = {
        MANIFEST_NAME: Resource(
            MANIFEST_NAME, "manifest", m_integ, etag_for_integrity(m_integ), len(data),
            "application/json", "",
        )
    }
    for f in manifest.files:
        safe_relpath(f.path)
        sigs = f.http
        res[f.path] = Resource(
            f.path, "file", f.integrity, etag_for_integrity(f.integrity), f.size,
            content_type_for(f.path), f.path,
            sigs.headers() if sigs is not None else (),
        )
        if f.recovery is not None:
            for p in f.recovery.parts:
                rel = part_name(f.path, p.number)
                res[rel] = Resource(
                    rel, "part", p.integrity, etag_for_integrity(p.integrity), p.size,
                    "application/octet-stream", f.path,
                )
    return PackageView(name, manifest.version, real_dir, manifest, data, res)


#: What identifies one loaded version: (device, inode, size, mtime_ns) of its manifest.
ViewKey = tuple[int, int, int, int]


def view_key(manifest_path: str) -> ViewKey | None:
    """The :data:`ViewKey` of the manifest at ``manifest_path`` (one ``stat``), None if absent."""
    try:
        st = os.stat(manifest_path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


#: Temp kinds (``_fs.temp_name``) of the store: uploads, staging directories,
#: the new symlink of a swap and a plain directory being replaced.
UPLOAD_KIND = "upload"
STAGING_KIND = "staging"
LINK_KIND = "link"
OLD_KIND = "old"


class PackageStore:
    """Reads packages below ``root`` and installs new versions atomically."""

    def __init__(self, root: Path, keep_versions: int = 3) -> None:
        self.root = Path(root)
        self.keep_versions = max(1, keep_versions)
        self._lock = threading.Lock()
        self._views: dict[ViewKey, PackageView] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / STATE_DIR).mkdir(exist_ok=True)
        (self.root / VERSIONS_DIR).mkdir(exist_ok=True)
        self.real_root = self.root.resolve()
        self._root_str = str(self.real_root)

    # --- reading --------------------------------------------------------------

    def names(self) -> list[str]:
        """Names of the packages being served (sorted)."""
        out = []
        try:
            entries = sorted(os.listdir(self.real_root))
        except OSError as exc:
            raise StorageError(f"cannot list: {exc.strerror}", str(self.root)) from exc
        for n in entries:
            if check_package_name(n) and (self.real_root / n / MANIFEST_NAME).is_file():
                out.append(n)
        return out

    def _package_dir(self, name: str) -> Path:
        if not check_package_name(name):
            raise NotFoundError("no such package", name)
        return self.real_root / name

    def _inside(self, real: Path) -> None:
        if self.real_root not in real.parents:
            raise UnsafePathError("package resolves outside ROOT", real.name)

    def _load(self, real_dir: Path, name: str) -> PackageView:
        self._inside(real_dir)
        mpath = real_dir / MANIFEST_NAME
        try:
            with open(mpath, "rb") as fh:
                st = os.fstat(fh.fileno())
                key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                with self._lock:
                    view = self._views.get(key)
                if view is not None and view.dir == real_dir:
                    return view
                data = fh.read(64 << 20)
        except FileNotFoundError as exc:
            raise NotFoundError("no such package", name) from exc
        except OSError as exc:
            raise StorageError(f"cannot read manifest: {exc.strerror}", name) from exc
        view = _build_view(name, real_dir, data)
        with self._lock:
            if len(self._views) > 1024:
                self._views.clear()
            self._views[key] = view
        return view

    def manifest_path(self, name: str) -> str:
        """Where the manifest of the version of ``name`` being served is (through its link)."""
        return f"{self._root_str}/{name}/{MANIFEST_NAME}"

    def cached_view(self, name: str) -> PackageView | None:
        """The current version of ``name`` if it is already loaded (one ``stat``), else None."""
        hit = self.cached_view_key(name)
        return None if hit is None else hit[0]

    def cached_view_key(self, name: str) -> tuple[PackageView, ViewKey] | None:
        """:meth:`cached_view` and the key it was found by: while
        ``view_key(manifest_path(name))`` still returns that key, the same
        version is being served (a publish or rollback swaps the link, so the
        manifest's inode changes)."""
        key = view_key(self.manifest_path(name))
        if key is None:
            return None
        with self._lock:
            view = self._views.get(key)
        return None if view is None else (view, key)

    def get(self, name: str) -> PackageView:
        """The version of ``name`` being served now (NotFoundError if none)."""
        d = self._package_dir(name)
        try:
            real = Path(os.path.realpath(d))
        except OSError as exc:
            raise NotFoundError("no such package", name) from exc
        if not real.is_dir():
            raise NotFoundError("no such package", name)
        return self._load(real, name)

    def get_version(self, name: str, version: int) -> PackageView:
        """A kept version of ``name`` (the current one or one in ``.versions``)."""
        current = self.get(name)
        if current.version == version:
            return current
        d = self.real_root / VERSIONS_DIR / name / str(version)
        if not check_package_name(name) or not d.is_dir() or d.is_symlink():
            raise NotFoundError(f"version {version} is not kept", name)
        view = self._load(Path(os.path.realpath(d)), name)
        if view.version != version or version > current.version:
            raise NotFoundError(f"version {version} is not kept", name)
        return view

    def versions(self, name: str) -> list[int]:
        """Versions of ``name`` that can be served (kept ones and the current one)."""
        current = self.get(name).version
        out = {current}
        d = self.real_root / VERSIONS_DIR / name
        with contextlib.suppress(OSError):
            for n in os.listdir(d):
                if n.isdigit() and int(n) < current:
                    out.add(int(n))
        return sorted(out)

    def current_version(self, name: str) -> int | None:
        try:
            return self.get(name).version
        except (NotFoundError, AuraSealError):
            return None

    # --- writing --------------------------------------------------------------

    def lock(self, kind: str, name: str) -> contextlib.AbstractContextManager[None]:
        """An exclusive lock on ``kind`` of ``name`` held across every worker process."""
        return file_lock(self.real_root / STATE_DIR / "locks" / f"{kind}-{name}.lock")

    def staging_dir(self, name: str) -> Path:
        """A fresh empty directory to unpack an upload into (same filesystem)."""
        if not check_package_name(name):
            raise UnsafePathError("invalid package name", name)
        return make_temp_dir(self.real_root / VERSIONS_DIR / name, "staging", STAGING_KIND)

    def link_files(self, view: PackageView, staging: Path) -> int:
        """Fill ``staging`` with every file and part of ``view`` (not its manifest):
        hard links to the immutable version's files, or copies where the
        filesystem cannot link. Returns how many were hard-linked."""
        linked = 0
        for rel, res in view.resources.items():
            if res.kind == "manifest":
                continue
            src = view.path_of(res)
            dst = staging / rel
            try:
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(src, dst, follow_symlinks=False)
                    linked += 1
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                        raise
                    shutil.copyfile(src, dst, follow_symlinks=False)
            except OSError as exc:
                raise StorageError(f"cannot link: {exc.strerror or exc}", f"{view.name}/{rel}"
                                   ) from exc
        return linked

    def install(self, name: str, staging: Path, version: int) -> Path:
        """Make ``staging`` the served version ``version`` of ``name``, atomically.

        The staged directory is renamed to ``.versions/<name>/<version>`` and the
        ``ROOT/<name>`` symlink is replaced in one rename, so a reader sees the
        old version or the new one, never a mix. Old versions beyond
        ``keep_versions`` are removed afterwards.
        """
        vroot = self.real_root / VERSIONS_DIR / name
        target = vroot / str(version)
        link = self.real_root / name
        if target.exists():
            if link.is_symlink() and Path(os.path.realpath(link)) == target:
                raise StorageError("version is already being served", f"{name} v{version}")
            shutil.rmtree(target)
        tmp = self.real_root / temp_name(name, LINK_KIND)
        swapped = False
        try:
            os.rename(staging, target)
            fsync_dir(vroot)
            os.symlink(f"{VERSIONS_DIR}/{name}/{version}", tmp)
            if link.is_symlink() or not link.exists():
                os.replace(tmp, link)
            else:
                self._replace_plain_dir(name, link, tmp, vroot)
            swapped = True
        except OSError as exc:
            where = f"{name} v{version}"
            raise StorageError(f"cannot install: {exc.strerror or exc}", where) from exc
        finally:
            with contextlib.suppress(OSError):
                if tmp.is_symlink():
                    tmp.unlink()
            if not swapped:  # the old version stays served; drop the half-installed one
                shutil.rmtree(target, ignore_errors=True)
        fsync_dir(self.real_root)
        self._prune(name, version)
        return target

    def _replace_plain_dir(self, name: str, link: Path, tmp: Path, vroot: Path) -> None:
        """First publish over a plain directory: swap it for the symlink, keep it as a version."""
        try:
            old_version: int | None = self._load(link.resolve(), name).version
        except AuraSealError:
            old_version = None
        if rename_exchange(tmp, link) == 0:
            old = tmp
        else:  # no renameat2: two renames (a brief gap)
            old = self.real_root / temp_name(name, OLD_KIND)
            os.rename(link, old)
            os.replace(tmp, link)
        dest = vroot / str(old_version) if old_version is not None else None
        if dest is not None and not dest.exists():
            os.rename(old, dest)
        else:
            shutil.rmtree(old, ignore_errors=True)

    def _prune(self, name: str, current: int) -> None:
        vroot = self.real_root / VERSIONS_DIR / name
        try:
            kept = sorted((int(n) for n in os.listdir(vroot) if n.isdigit()), reverse=True)
        except OSError:
            return
        for v in kept[self.keep_versions :]:
            if v != current:
                shutil.rmtree(vroot / str(v), ignore_errors=True)

    def discard(self, staging: Path) -> None:
        """Remove a staging directory (a refused or interrupted publish)."""
        real = Path(os.path.realpath(staging))
        if (self.real_root / VERSIONS_DIR) in real.parents and is_temp_name(real.name):
            shutil.rmtree(real, ignore_errors=True)

    def adopt(self) -> list[str]:
        """Move plain package directories into ``.versions`` and link them (at start).

        After this every served package is a symlink to an immutable version
        directory, so a publish is a single symlink swap and a reader that
        resolved the old target keeps reading one consistent version. Anything
        in the directory that the manifest does not list (unlisted files,
        symlinks) is moved out to ``.auraseal/unlisted/<name>/<version>/``, so
        a version directory holds exactly what may be served (nginx serves it
        as it is). Runs under a cross-process lock and skips what another
        process already adopted, so concurrent starts are safe.
        Returns the names adopted.
        """
        done = []
        with self.lock("adopt", "all"):
            clean_stale_temps(self.real_root, {LINK_KIND, OLD_KIND})
            for name in self.names():
                link = self.real_root / name
                if link.is_symlink():
                    continue
                try:
                    view = self._load(link.resolve(), name)
                except AuraSealError:
                    continue
                vroot = self.real_root / VERSIONS_DIR / name
                dest = vroot / str(view.version)
                if dest.exists():
                    continue
                vroot.mkdir(parents=True, exist_ok=True)
                self.move_unlisted(view, link)
                tmp = self.real_root / temp_name(name, LINK_KIND)
                os.symlink(f"{VERSIONS_DIR}/{name}/{view.version}", tmp)
                try:
                    os.rename(link, dest)
                    os.replace(tmp, link)
                finally:
                    with contextlib.suppress(OSError):
                        if tmp.is_symlink():
                            tmp.unlink()
                fsync_dir(vroot)
                fsync_dir(self.real_root)
                done.append(name)
        with self._lock:
            self._views.clear()
        return done

    def move_unlisted(self, view: PackageView, pkg: Path | None = None) -> list[str]:
        """Move every entry of the package directory that the manifest does not
        list, and every symlink or special file, to ``.auraseal/unlisted/<name>/<version>/``.

        Temp files (a repair in progress) are left alone. Called on adoption and
        before every scrub, so what a static server (nginx) sees in a version
        directory is what the Python server would serve. Returns what was moved.
        """
        pkg = view.dir if pkg is None else pkg
        moved: list[str] = []
        aside = self.real_root / STATE_DIR / "unlisted" / view.name / str(view.version)
        listed = set(view.resources)
        dirs = {"/".join(r.split("/")[:i]) for r in listed for i in range(1, r.count("/") + 1)}
        for dirpath, dirnames, filenames in os.walk(pkg, followlinks=False):
            base = Path(dirpath)
            for entry in [*dirnames, *filenames]:
                p = base / entry
                rel = p.relative_to(pkg).as_posix()
                if is_temp_name(entry) and not p.is_symlink():
                    continue
                keep = (rel in dirs and not p.is_symlink()) or (
                    rel in listed and not p.is_symlink() and p.is_file()
                )
                if keep:
                    continue
                target = aside / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists() or target.is_symlink():
                    target = target.with_name(temp_name(target.name, "unlisted"))
                os.rename(p, target)
                moved.append(rel)
                if entry in dirnames:
                    dirnames.remove(entry)
        return moved

    def clean_staging(self) -> None:
        """Remove staging directories and partial uploads left by dead processes (at start).

        Only temp names (``_fs.temp_name``) whose owning process is gone are
        removed, so a worker starting next to a busy one never deletes its
        upload; names of the older scheme (``.staging-*``, plain upload files)
        are always leftovers and are removed too.
        """
        uploads = self.real_root / STATE_DIR / "uploads"
        clean_stale_temps(uploads, {UPLOAD_KIND})
        with contextlib.suppress(OSError):
            for n in os.listdir(uploads):
                if not is_temp_name(n):
                    with contextlib.suppress(OSError):
                        (uploads / n).unlink()
        clean_stale_temps(self.real_root, {LINK_KIND, OLD_KIND})
        vr = self.real_root / VERSIONS_DIR
        with contextlib.suppress(OSError):
            for name in os.listdir(vr):
                clean_stale_temps(vr / name, {STAGING_KIND})
                with contextlib.suppress(OSError):
                    for n in os.listdir(vr / name):
                        if n.startswith(".staging-"):
                            shutil.rmtree(vr / name / n, ignore_errors=True)
