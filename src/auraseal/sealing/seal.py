"""Sealing: a source tree becomes a package of originals, part files and a
signed manifest (``docs/FORMAT.md``)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import mmap
import os
import re
import shutil
import threading
import zipfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from auraseal._fs import (
    atomic_writer,
    clean_stale_temps,
    fsync_dir,
    make_temp_dir,
    resolve_inside,
    temp_name,
    walk_files,
)
from auraseal._time import utcnow
from auraseal.errors import StorageError, UnsafePathError, UsageError
from auraseal.events import EventSink, emit
from auraseal.integrity import sri_token
from auraseal.manifest import (
    DEFAULT_EXPIRES,
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    PartInfo,
    dump_signed,
    manifest_digest,
    sign_http,
)
from auraseal.sealing._progress import FileMeter
from auraseal.sealing.codecs import (
    CODEC_NAMES,
    FEED,
    ZstdStream,
    compress,
    compress_stream,
    looks_incompressible,
    sample_compresses,
    sample_spans,
)
from auraseal.sealing.component import (
    DEFAULT_COHERENCE,
    DEFAULT_PART_SIZE,
    SYSTEMATIC,
    ComponentSpec,
    DataFragments,
    PartsWriter,
    Plan,
    ReadRange,
    SyncingWriter,
    WriterFactory,
    fresh_writer,
    integrity_for,
    ordered_map,
    plan_component,
    sync_tree,
)
from auraseal.sealing.erasure import get_engine
from auraseal.sealing.format import FOOTER_SIZE, HEADER_SIZE, stripe_spans
from auraseal.sealing.source import Buffer
from auraseal.signing import Signer

__all__ = [
    "SealOptions",
    "encode_parts",
    "encode_parts_from",
    "seal_file",
    "seal_tree",
    "write_zip",
]

Progress = Callable[[int], None] | None
#: ``ready(end)`` returns once bytes ``[0, end)`` of a component being copied
#: are in place (:class:`_Copy`); ``None``: all of them already are.
Ready = Callable[[int], None] | None

#: Files up to this size are read into memory; larger ones are memory-mapped.
MEMORY_LIMIT = 512 << 20
#: Components at least this big use the stripe pool for hashing and coding.
BIG = 4 << 20
#: Smallest file compressed while it is read (below, compress after reading).
_ZSTD_STREAM_MIN = 8 << 20
_SAMPLE = 256 << 10
_PART_RE = re.compile(r"^(.*)\.part\.(\d+)$")


@dataclass(frozen=True)
class SealOptions:
    part_size: int = DEFAULT_PART_SIZE
    coherence: float = DEFAULT_COHERENCE
    codec: str = "zstd"
    engine: str | None = None
    algorithm: str = "sha512"

    def check(self) -> None:
        if self.codec not in CODEC_NAMES:
            raise UsageError(
                f"unknown codec {self.codec!r} (use {', '.join(CODEC_NAMES)})", "codec"
            )
        if self.algorithm not in ("sha256", "sha384", "sha512"):
            raise UsageError("algorithm must be sha256, sha384 or sha512", "algorithm")
        plan_component(0, self.part_size, self.coherence, self.engine)


def _copy(data: Buffer, dst: Path, writer: WriterFactory = atomic_writer) -> None:
    view = memoryview(data)
    step = 8 << 20
    with writer(dst) as fh:
        for off in range(0, len(view), step):
            fh.write(view[off : off + step])


def _copy_and_hash(  # noqa: PLR0917 - private helper
    data: Buffer,
    dst: Path | None,
    algorithm: str,
    writer: WriterFactory = atomic_writer,
    progress: Progress = None,
    ready: Ready = None,
) -> bytes:
    h = hashlib.new(algorithm)
    view = memoryview(data)
    step = 8 << 20
    if dst is None:
        for off in range(0, len(view), step):
            if ready is not None:
                ready(off + step)
            h.update(view[off : off + step])
            if progress is not None:  # within the file: the bar moves per slice
                progress(len(view[off : off + step]))
        return h.digest()
    with writer(dst) as fh:
        for off in range(0, len(view), step):
            chunk = view[off : off + step]
            h.update(chunk)
            fh.write(chunk)
    return h.digest()


class _ViewReader:
    """``read(n)`` over a buffer, for streaming compressors."""

    def __init__(self, data: Buffer) -> None:
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._view) if n < 0 else min(len(self._view), self._pos + n)
        out = bytes(self._view[self._pos : end])
        self._pos = end
        return out


def _choose_stream(
    codec: str, data: Buffer, tmpdir: Path, stack: contextlib.ExitStack
) -> tuple[str, Buffer]:
    size = len(data)
    if codec == "none" or looks_incompressible(data):
        return "none", data
    if size <= MEMORY_LIMIT:
        out = compress(codec, data)
        return (codec, out) if len(out) < size else ("none", data)
    name = tmpdir / temp_name("stream", "seal")
    try:
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StorageError(f"cannot create temp file: {exc.strerror}", str(tmpdir)) from exc
    stack.callback(os.unlink, name)
    with os.fdopen(fd, "w+b") as fh:
        compress_stream(codec, _ViewReader(data), fh, size)  # type: ignore[arg-type]
        fh.flush()
        csize = fh.tell()
        if csize >= size or csize == 0:
            return "none", data
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    return codec, memoryview(mm)


def encode_parts(
    spec: ComponentSpec,
    stream: Buffer,
    paths: Mapping[int, Path],
    pool: Executor | None = None,
    *,
    expected: Mapping[int, bytes] | None = None,
    writer: WriterFactory = atomic_writer,
    writeback: bool = True,
) -> tuple[dict[int, bytes], dict[int, str]]:
    """Encode ``stream`` into the part files ``paths`` (number -> path), atomically.

    Returns each committed part's whole-file SHA-256, and the parts refused
    because they did not match ``expected`` (when given).
    """
    view = memoryview(stream).cast("B") if len(stream) else memoryview(b"")

    def read(off: int, length: int) -> Buffer:
        return view[off : off + length]

    return encode_parts_from(
        spec, read, paths, pool, expected=expected, writer=writer, writeback=writeback
    )


def encode_parts_from(
    spec: ComponentSpec,
    read: ReadRange,
    paths: Mapping[int, Path],
    pool: Executor | None = None,
    *,
    expected: Mapping[int, bytes] | None = None,
    writer: WriterFactory = atomic_writer,
    writeback: bool = True,
) -> tuple[dict[int, bytes], dict[int, str]]:
    """:func:`encode_parts` over a stream read stripe by stripe with
    ``read(offset, length)`` (e.g. ``os.pread`` of a file): only the stripes
    in flight are in memory (one without a ``pool``). When only data parts
    are written and the code is systematic, nothing is encoded: each
    fragment is read as it is written (one fragment in memory)."""
    engine = spec.engine()
    k, m = spec.plan.k, spec.plan.m
    if spec.plan.engine in SYSTEMATIC and all(n < k for n in paths):
        with PartsWriter(spec, paths, 1, writer, writeback=writeback) as parts:
            for off, length in spec.spans():
                parts.add(DataFragments(spec, read, off, length))
            return parts.finish(expected)

    def one(span: tuple[int, int]) -> list[Buffer]:
        off, length = span
        return engine.encode(k, m, read(off, length))

    threads = 2 if pool is not None else 1
    with PartsWriter(spec, paths, threads, writer, writeback=writeback) as parts:
        for frags in ordered_map(pool, one, spec.spans()):
            parts.add(frags)
        return parts.finish(expected)


@dataclass
class _Source:
    """A source file's bytes (read into memory, or memory-mapped)."""

    data: Buffer


def _read_source(path: Path, stack: contextlib.ExitStack, rel: str) -> _Source:
    """The file's bytes (read into memory, or memory-mapped above MEMORY_LIMIT)."""
    try:
        fh = stack.enter_context(open(path, "rb"))  # noqa: SIM115
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return _Source(b"")
        if size > MEMORY_LIMIT:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            return _Source(memoryview(mm))
        buf = bytearray(size)
        got = fh.readinto(buf)
        if got != size or fh.read(1):
            raise StorageError("file changed while being sealed", rel)
        return _Source(buf)
    except OSError as exc:
        raise StorageError(f"cannot read: {exc.strerror}", rel) from exc


class _Copy:
    """The package's copy of a big original, made in the kernel
    (``copy_file_range``; plain reads and writes where it is not supported)
    by a thread of its own, :data:`FEED` bytes at a time, into a file of the
    final size that is mapped at once: hashing, compressing and encoding
    read the mapping, each waiting (:meth:`ready`) only for the bytes it
    needs, so they run while the copy is being made. Everything is computed
    from this copy, so the package's original is exactly the bytes hashed
    and coded, whatever happens to the source meanwhile. A source whose
    size changes while it is copied is refused.
    """

    def __init__(self, src: Path, dst: Path, rel: str, on_done: Callable[[Path], None]) -> None:
        self._rel = rel
        self._cond = threading.Condition()
        self._done = 0
        self._error: BaseException | None = None
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            self._fi = open(src, "rb")  # noqa: SIM115 - closed by the copy thread
            try:
                self._fo = open(dst, "x+b")  # noqa: SIM115 - closed by the copy thread
            except BaseException:
                self._fi.close()
                raise
            os.fchmod(self._fo.fileno(), 0o644)  # served as static files, whatever the umask
            self.size = os.fstat(self._fi.fileno()).st_size
            self._fo.truncate(self.size)
            self.data = memoryview(b"")
            if self.size:
                # writable only so that ISA-L can take its address without copying
                mm = mmap.mmap(
                    self._fo.fileno(),
                    0,
                    flags=mmap.MAP_SHARED,
                    prot=mmap.PROT_READ | mmap.PROT_WRITE,
                )
                self.data = memoryview(mm)
        except OSError as exc:
            self._close()
            raise StorageError(f"cannot copy: {exc.strerror}", rel) from exc
        self._on_done = on_done
        self._dst = dst
        self._thread = threading.Thread(target=self._run, name="seal-copy", daemon=True)
        self._thread.start()

    def _close(self) -> None:
        for fh in (getattr(self, "_fi", None), getattr(self, "_fo", None)):
            if fh is not None:
                with contextlib.suppress(OSError):
                    fh.close()

    def _advance(self, done: int) -> None:
        with self._cond:
            self._done = done
            self._cond.notify_all()

    def _run(self) -> None:
        fi, fo = self._fi.fileno(), self._fo.fileno()
        done = 0
        try:
            with contextlib.suppress(OSError):  # EXDEV, ENOSYS, EINVAL...: fall back
                while done < self.size:
                    n = os.copy_file_range(fi, fo, min(FEED, self.size - done))
                    if n <= 0:
                        break
                    done += n
                    self._advance(done)
            while done < self.size:
                chunk = os.pread(fi, min(FEED, self.size - done), done)
                if not chunk:
                    break
                os.pwrite(fo, chunk, done)
                done += len(chunk)
                self._advance(done)
            if done != self.size or os.pread(fi, 1, done):
                raise StorageError("file changed while being sealed", self._rel)
            self._on_done(self._dst)
        except OSError as exc:
            self._fail(StorageError(f"cannot copy: {exc.strerror}", self._rel))
        except BaseException as exc:  # handed to the threads waiting in ready()
            self._fail(exc)
        finally:
            self._close()

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            self._error = exc
            self._cond.notify_all()

    def ready(self, end: int) -> None:
        """Return once bytes ``[0, end)`` are copied; raise if the copy failed."""
        end = min(end, self.size)
        with self._cond:
            while self._done < end and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error

    def join(self) -> None:
        """Wait for the whole copy (raise if it failed)."""
        self.ready(self.size)
        self._thread.join()
        with self._cond:
            if self._error is not None:
                raise self._error


def _looks_incompressible_at(path: Path) -> bool:
    """:func:`looks_incompressible` over the samples of the file at ``path``
    (read with ``pread``; a file that cannot be read is not judged)."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            spans = sample_spans(size)
            return bool(spans) and not any(
                sample_compresses(os.pread(fh.fileno(), _SAMPLE, off)) for off in spans
            )
    except OSError:
        return False


def _hash_and_compress(
    data: memoryview,
    algorithm: str,
    pool: Executor,
    progress: Progress = None,
    ready: Ready = None,
) -> tuple[bytes | None, tuple[str, Buffer] | None]:
    """When the first 256 KiB of ``data`` compress: its digest (in a pool
    thread) and its zstd stream (made here meanwhile, fed in FEED slices
    exactly as :func:`compress` does); else ``(None, None)``. Both trail
    ``ready`` (the copy being made)."""
    if len(data) < _ZSTD_STREAM_MIN:
        return None, None
    if ready is not None:
        ready(_SAMPLE)
    if not sample_compresses(data[:_SAMPLE]):
        return None, None  # seal_file hashes it while it codes it
    hash_future = pool.submit(_copy_and_hash, data, None, algorithm, ready=ready)
    zs = ZstdStream(len(data))
    for off in range(0, len(data), FEED):
        if ready is not None:
            ready(off + FEED)
        zs.feed(data[off : off + FEED])
        if progress is not None:  # within the file: the bar moves per slice
            progress(len(data[off : off + FEED]))
    out = zs.finish()
    stream = ("zstd", out) if len(out) < len(data) else ("none", data)
    return hash_future.result(), stream


def seal_file(
    data: Buffer,
    rel: str,
    out_root: Path,
    opts: SealOptions,
    pool: Executor | None = None,
    *,
    copy_original: bool = True,
    tmpdir: Path | None = None,
    digest: bytes | None = None,
    writer: WriterFactory = atomic_writer,
    stream: tuple[str, Buffer] | None = None,
    progress: Progress = None,
    ready: Ready = None,
) -> FileEntry:
    """Seal one component's bytes: write the original (optional) and its parts.

    ``digest`` is the bytes' digest under ``opts.algorithm`` and ``stream``
    the (codec, compressed stream) if already known.
    ``writer`` creates each file (default: atomic, fsynced; ``seal_tree`` uses
    :func:`fresh_writer` inside its not-yet-visible temporary package).
    ``progress(nbytes)`` is called as a big component's bytes are hashed.
    ``ready`` (only with ``stream`` given and a ``pool``): ``data`` is still
    being copied; hashing and encoding trail the copy (see :data:`Ready`).
    """
    opts.check()
    with contextlib.ExitStack() as stack:
        big = len(data) >= BIG and pool is not None
        if ready is not None and (not big or stream is None):
            ready(len(data))  # the paths below read the bytes in any order
            ready = None
        dst = resolve_inside(out_root, rel) if copy_original else None
        if not big or pool is None:
            digest = _copy_and_hash(data, dst, opts.algorithm, writer)
            codec, body = stream or _choose_stream(opts.codec, data, tmpdir or out_root, stack)
            plan = plan_component(len(body), opts.part_size, opts.coherence, opts.engine)
            spec = _spec(rel, data, codec, digest, plan, opts)
            paths = _part_paths(out_root, spec)
            digests, _ = encode_parts(spec, body, paths, writer=writer)
            return _entry(spec, digests)
        # Big component: hash the original while compressing and encoding; then
        # write the parts (two threads) while the original's copy is written.
        # The copy is mostly disk time: start it first, alongside the hash.
        copy_future = pool.submit(_copy, data, dst, writer) if dst else None
        hash_future = (
            pool.submit(
                _copy_and_hash, data, None, opts.algorithm, progress=progress, ready=ready
            )
            if digest is None
            else None
        )
        if stream is None:
            stream = _choose_stream(opts.codec, data, tmpdir or out_root, stack)
        codec, body = stream
        plan = plan_component(len(body), opts.part_size, opts.coherence, opts.engine)
        engine = get_engine(plan.engine)
        view = memoryview(body).cast("B") if len(body) else memoryview(b"")
        spans = stripe_spans(plan.compressed_size, plan.stripe_size)

        def one(span: tuple[int, int]) -> list[Buffer]:
            if ready is not None and codec == "none":  # a compressed body is complete
                ready(span[0] + span[1])
            return engine.encode(plan.k, plan.m, view[span[0] : span[0] + span[1]])

        # Digest still being computed: encode the stripes meanwhile (in memory).
        early = hash_future is not None and len(body) <= MEMORY_LIMIT
        encoded = list(ordered_map(pool, one, spans)) if early else None
        if hash_future is not None:
            digest = hash_future.result()
        assert digest is not None
        spec = _spec(rel, data, codec, digest, plan, opts)
        paths = _part_paths(out_root, spec)
        if encoded is None:
            if ready is not None:
                ready(len(data))
            digests, _ = encode_parts(spec, body, paths, pool, writer=writer)
        else:
            with PartsWriter(spec, paths, 2, writer) as parts:
                for frags in encoded:
                    parts.add(frags)
                digests, _ = parts.finish()
        if copy_future is not None:
            copy_future.result()
        return _entry(spec, digests)


def _spec(  # noqa: PLR0917 - private helper
    rel: str, data: Buffer, codec: str, digest: bytes, plan: Plan, opts: SealOptions
) -> ComponentSpec:
    return ComponentSpec(
        path=rel,
        size=len(data),
        integrity=integrity_for(opts.algorithm, digest),
        codec=codec,
        digest_alg=opts.algorithm,
        digest=digest,
        plan=plan,
        parts=(),
    )


def _part_paths(root: Path, spec: ComponentSpec) -> dict[int, Path]:
    return {n: resolve_inside(root, spec.part_path(n)) for n in range(spec.total)}


def _entry(spec: ComponentSpec, digests: Mapping[int, bytes]) -> FileEntry:
    file_size = HEADER_SIZE + spec.plan.payload_size + FOOTER_SIZE
    parts = tuple(
        PartInfo(n, sri_token("sha256", digests[n]), file_size) for n in range(spec.total)
    )
    return replace(spec, parts=parts).entry()


def _check_names(files: list[str]) -> None:
    names = set(files)
    for f in files:
        if f == MANIFEST_NAME:
            raise UsageError(f"the source already has a {MANIFEST_NAME}", f)
        mt = _PART_RE.match(f)
        if mt and mt.group(1) in names:
            raise UsageError(f"name collides with a part of {mt.group(1)!r}", f)


def write_zip(root: Path, names: Sequence[str], zip_path: Path, *, kind: str = "write") -> None:
    """Write ``names`` under ``root`` as a ZIP_STORED archive, atomically
    (through a temp file of ``kind``, see :func:`~auraseal._fs.temp_name`)."""
    with (
        atomic_writer(zip_path, kind=kind) as fh,
        zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf,
    ):
        for name in sorted(names):
            src = resolve_inside(root, name)
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o100644 << 16
            with open(src, "rb") as s, zf.open(info, "w", force_zip64=True) as d:
                shutil.copyfileobj(s, d, 8 << 20)


def seal_tree(
    src: Path,
    out: Path,
    *,
    part_size: int = DEFAULT_PART_SIZE,
    coherence: float = DEFAULT_COHERENCE,
    codec: str = "zstd",
    keys: Sequence[Signer] = (),
    name: str | None = None,
    version: int = 1,
    expires: timedelta | None = DEFAULT_EXPIRES,
    zip_path: Path | None = None,
    engine: str | None = None,
    algorithm: str = "sha512",
    jobs: int | None = None,
    progress: Progress = None,
    events: EventSink | None = None,
) -> Manifest:
    """Seal every regular file below ``src`` into the package directory ``out``.

    The package is built in a temporary directory next to ``out`` (named by
    :func:`~auraseal._fs.temp_name`, kind ``seal``) and renamed into place at
    the end, so ``out`` never holds a half-written package. On start, the
    temporaries of killed seals (whose process is gone) next to ``out`` (and
    next to ``zip_path``) are removed.
    ``out`` must not exist or be an empty directory, and must not overlap ``src``.
    A ``package.seal`` event goes to ``events`` (if given) once the package is in place.
    """
    opts = SealOptions(part_size, coherence, codec, engine, algorithm)
    opts.check()
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise UsageError("source is not a directory", str(src))
    rs, ro = src.resolve(), out.resolve()
    if rs == ro or rs in ro.parents or ro in rs.parents:
        raise UsageError("output and source overlap", str(out))
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError("output exists and is not an empty directory", str(out))
    if version < 0:
        raise UsageError("version must be >= 0", "version")
    try:
        files = walk_files(src)
    except RuntimeError as exc:  # pathlib's "Symlink loop"
        raise UnsafePathError(f"symlink loop in the source: {exc}", str(src)) from exc
    _check_names(files)
    sizes = {f: (src / f).stat().st_size for f in files}
    order = sorted(files, key=lambda f: -sizes[f])
    n_jobs = max(1, jobs or os.cpu_count() or 1)
    clean_stale_temps(out.parent, {"seal"})
    if zip_path is not None:
        clean_stale_temps(Path(zip_path).parent, {"seal"})
    tmp = make_temp_dir(out.parent, out.name, "seal")
    ok = False
    writer = SyncingWriter()
    try:
        with (
            ThreadPoolExecutor(n_jobs, thread_name_prefix="seal") as comps,
            ThreadPoolExecutor(n_jobs, thread_name_prefix="stripe") as stripes,
        ):

            def one(rel: str) -> FileEntry:
                if sizes[rel] >= BIG and sizes[rel] <= MEMORY_LIMIT:
                    return one_big(rel)
                with contextlib.ExitStack() as stack:
                    source = _read_source(resolve_inside(src, rel), stack, rel)
                    entry = seal_file(
                        source.data, rel, tmp, opts, stripes, tmpdir=tmp, writer=writer
                    )
                if progress is not None:
                    progress(entry.size)
                return entry

            def one_big(rel: str) -> FileEntry:
                # The original is copied in the kernel by a thread of its own and
                # fsynced in the background once complete; everything else is
                # computed from that copy while it is being made (_Copy).
                copy = _Copy(
                    resolve_inside(src, rel), resolve_inside(tmp, rel), rel, writer.sync_soon
                )
                try:
                    entry = seal_copy(rel, copy)
                except BaseException:
                    with contextlib.suppress(BaseException):
                        copy.join()
                    raise
                copy.join()
                return entry

            def seal_copy(rel: str, copy: _Copy) -> FileEntry:
                data = copy.data
                digest: bytes | None = None
                stream: tuple[str, Buffer] | None = None
                meter = FileMeter(progress, {rel: sizes[rel]}) if progress is not None else None
                read = None if meter is None else functools.partial(meter.read, rel)
                if opts.codec == "zstd":
                    digest, stream = _hash_and_compress(
                        data, opts.algorithm, stripes, read, copy.ready
                    )
                if stream is None and (
                    opts.codec == "none" or _looks_incompressible_at(resolve_inside(src, rel))
                ):
                    # decided on the source's samples (as _choose_stream would on
                    # the copy's), so that hashing and encoding need not wait for
                    # the whole copy; the stream itself is the copy
                    stream = ("none", data)
                entry = seal_file(
                    data,
                    rel,
                    tmp,
                    opts,
                    stripes,
                    copy_original=False,
                    tmpdir=tmp,
                    digest=digest,
                    writer=writer,
                    stream=stream,
                    progress=read,
                    ready=copy.ready,
                )
                if meter is not None:
                    meter.done(rel)
                return entry

            entries = list(comps.map(one, order))
        created = utcnow()
        manifest = Manifest(
            name=name or src.resolve().name,
            version=version,
            created=created,
            expires=None if expires is None else created + expires,
            files=tuple(sorted(entries, key=lambda e: e.path)),
        )
        manifest = sign_http(manifest, keys)
        with fresh_writer(tmp / MANIFEST_NAME) as fh:
            fh.write(dump_signed(manifest, keys))
        # every file durable before the package becomes visible: big ones were
        # fsynced in the background as they were finished, the rest here
        sync_tree(tmp, skip=writer.wait())
        os.chmod(tmp, 0o755)  # noqa: S103 - a package is served as static files
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
        fsync_dir(out.parent)
        ok = True
    except OSError as exc:
        raise StorageError(f"cannot write package: {exc.strerror}", str(out)) from exc
    except StorageError as exc:
        # name the package's path, not the temporary directory's
        for prefix in (str(tmp.resolve()), str(tmp)):
            if exc.where.startswith(prefix):
                raise StorageError(exc.what, str(out) + exc.where[len(prefix) :]) from exc
        raise
    finally:
        writer.close()
        if not ok:
            shutil.rmtree(tmp, ignore_errors=True)
    if zip_path is not None:
        names = [MANIFEST_NAME]
        for e in manifest.files:
            names.append(e.path)
            names.extend(e.part_names())
        write_zip(out, names, Path(zip_path), kind="seal")
    emit(
        events,
        "package.seal",
        {
            "package": str(out),
            "name": manifest.name,
            "version": manifest.version,
            "files": len(manifest.files),
            "bytes": manifest.total_size,
            "manifest_sha256": manifest_digest(manifest),
        },
    )
    return manifest
