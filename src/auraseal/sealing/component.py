"""One component: planning k/m/stripes, part headers, checking parts, and
the stripe pipelines shared by seal, unseal, scrub and repair."""

from __future__ import annotations

import contextlib
import ctypes
import hmac
import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from auraseal._fs import atomic_writer
from auraseal.errors import (
    ChecksumError,
    ComponentLostError,
    DigestMismatchError,
    IntegrityError,
    ManifestFormatError,
    PartFormatError,
    StorageError,
    UsageError,
)
from auraseal.integrity import auraseal_string, parse_integrity, sri_token
from auraseal.manifest import FileEntry, PartInfo, RecoveryInfo, part_name
from auraseal.sealing.codecs import CODEC_NAMES
from auraseal.sealing.erasure import ENGINE_NAMES, ErasureEngine, choose_engine, get_engine
from auraseal.sealing.format import (
    DIGEST_ALGS,
    FOOTER_SIZE,
    HEADER_SIZE,
    MAX_PARTS,
    PartFooter,
    PartHasher,
    PartHeader,
    stripe_spans,
)
from auraseal.sealing.source import Buffer, ReadRange

__all__ = [
    "DEFAULT_COHERENCE",
    "DEFAULT_PART_SIZE",
    "MAX_FRAGMENT_WIDTH",
    "SYSTEMATIC",
    "ComponentSpec",
    "DataFragments",
    "PartsWriter",
    "Plan",
    "ReadRange",
    "SyncingWriter",
    "WriterFactory",
    "check_part_bytes",
    "coherence_parity",
    "fresh_writer",
    "integrity_for",
    "iter_stream",
    "ordered_map",
    "plan_component",
    "start_writeback",
    "sync_tree",
]

DEFAULT_PART_SIZE = 5120
DEFAULT_COHERENCE = 0.954
#: Widest fragment of one stripe: bounds memory to k * 256 KiB per stripe.
MAX_FRAGMENT_WIDTH = 256 << 10
#: Fragments at least this big are pushed towards the disk as soon as written.
_KICK = 64 << 10

T = TypeVar("T")
R = TypeVar("R")


def _check_coherence(coherence: float) -> None:
    if not (isinstance(coherence, float | int) and 1 / 256 <= coherence <= 1):
        raise UsageError(f"coherence must be in [1/256, 1], got {coherence!r}", "coherence")


def coherence_parity(k: int, coherence: float) -> int:
    """Smallest ``m >= 1`` with ``k / (k + m) <= coherence``."""
    _check_coherence(coherence)
    # k / (k + m) <= c  <=>  m >= k (1 - c) / c ; guard float noise.
    m = max(1, math.ceil(k * (1 - coherence) / coherence - 1e-9))
    while k / (k + m) > coherence:
        m += 1
    while m > 1 and k / (k + m - 1) <= coherence:
        m -= 1
    return m


def _max_k(coherence: float) -> int:
    k = MAX_PARTS - 1
    while k > 1 and k + coherence_parity(k, coherence) > MAX_PARTS:
        k -= 1
    return k


@dataclass(frozen=True)
class Plan:
    """How a compressed stream of ``compressed_size`` bytes is cut and coded."""

    k: int
    m: int
    engine: str
    compressed_size: int
    stripe_size: int
    fragment_size: int
    payload_size: int

    @property
    def total(self) -> int:
        return self.k + self.m


def plan_component(
    compressed_size: int,
    part_size: int = DEFAULT_PART_SIZE,
    coherence: float = DEFAULT_COHERENCE,
    engine: str | None = None,
) -> Plan:
    """``docs/FORMAT.md`` §5: choose k, m, stripe and fragment sizes."""
    if part_size < 1:
        raise UsageError("part size must be >= 1 byte", "part_size")
    _check_coherence(coherence)
    k = max(1, -(-compressed_size // part_size))
    m = coherence_parity(k, coherence)
    if k + m > MAX_PARTS:
        k = _max_k(coherence)
        m = coherence_parity(k, coherence)
    per_part = max(1, -(-compressed_size // k))
    pieces = -(-per_part // MAX_FRAGMENT_WIDTH)
    width = -(-per_part // pieces)
    name = choose_engine(width, engine)
    if compressed_size == 0:
        name = "zfec"  # ISA-L cannot code an empty stripe
    if name == "isa_l" and width > 64:
        # rows not a multiple of 64 bytes apart keep ISA-L fast (erasure._stride)
        width += (40 - width % 64) % 64
    stripe_size = k * width
    eng = get_engine(name)
    spans = stripe_spans(compressed_size, stripe_size)
    fragment_size = eng.fragment_size(k, m, stripe_size)
    last = eng.fragment_size(k, m, spans[-1][1]) if spans[-1][1] else 1
    payload = (len(spans) - 1) * fragment_size + last
    return Plan(k, m, name, compressed_size, stripe_size, fragment_size, payload)


def integrity_for(algorithm: str, digest: bytes) -> str:
    """The manifest's integrity string for a file digest (as ``build_manifest`` writes it)."""
    if algorithm == "sha256":
        return sri_token(algorithm, digest)
    return auraseal_string(digest, algorithm=algorithm)


@dataclass(frozen=True)
class ComponentSpec:
    """Everything needed to check and decode one component, from its manifest entry."""

    path: str
    size: int
    integrity: str
    codec: str
    digest_alg: str
    digest: bytes
    plan: Plan
    parts: tuple[PartInfo, ...]

    @property
    def k(self) -> int:
        return self.plan.k

    @property
    def total(self) -> int:
        return self.plan.total

    def header(self, number: int) -> PartHeader:
        return PartHeader(
            part_number=number,
            total_parts=self.plan.total,
            k=self.plan.k,
            codec=self.codec,
            engine=self.plan.engine,
            digest_alg=self.digest_alg,
            component_size=self.size,
            compressed_size=self.plan.compressed_size,
            stripe_size=self.plan.stripe_size,
            fragment_size=self.plan.fragment_size,
            payload_size=self.plan.payload_size,
            component_digest=self.digest,
        )

    def part_path(self, number: int) -> str:
        return part_name(self.path, number)

    def engine(self) -> ErasureEngine:
        return get_engine(self.plan.engine)

    def spans(self) -> list[tuple[int, int]]:
        return stripe_spans(self.plan.compressed_size, self.plan.stripe_size)

    def recovery(self) -> RecoveryInfo:
        return RecoveryInfo(
            codec=self.codec,
            k=self.plan.k,
            m=self.plan.m,
            block_size=self.plan.payload_size,
            compressed_size=self.plan.compressed_size,
            parts=self.parts,
            engine=self.plan.engine,
            stripe_size=self.plan.stripe_size,
            fragment_size=self.plan.fragment_size,
        )

    def entry(self) -> FileEntry:
        return FileEntry(self.path, self.size, self.integrity, self.recovery())

    @classmethod
    def from_entry(cls, entry: FileEntry, where: str = "") -> ComponentSpec:
        where = where or entry.path
        rec = entry.recovery
        if rec is None:
            raise ManifestFormatError("file has no recovery parts (not sealed)", where)
        integ = parse_integrity(entry.integrity, where)
        alg = integ.algorithm
        if alg not in DIGEST_ALGS:
            raise ManifestFormatError(f"unsupported digest algorithm {alg}", where)
        if rec.codec not in CODEC_NAMES:
            raise ManifestFormatError(f"unknown codec {rec.codec!r}", where)
        if rec.engine not in ENGINE_NAMES:
            raise ManifestFormatError(f"unknown engine {rec.engine!r}", where)
        plan = Plan(
            k=rec.k,
            m=rec.m,
            engine=rec.engine,
            compressed_size=rec.compressed_size,
            stripe_size=rec.stripe_size or rec.k * rec.block_size,
            fragment_size=rec.fragment_size or rec.block_size,
            payload_size=rec.block_size,
        )
        spec = cls(
            entry.path,
            entry.size,
            entry.integrity,
            rec.codec,
            alg,
            integ.digests[0],
            plan,
            rec.parts,
        )
        try:
            spec.header(0).check(where)
        except PartFormatError as exc:
            raise ManifestFormatError(f"inconsistent recovery: {exc.what}", where) from exc
        for p in rec.parts:
            if p.size != spec.header(0).file_size:
                raise ManifestFormatError(f"part {p.number} size disagrees with recovery", where)
            pi = parse_integrity(p.integrity, where)
            if pi.algorithm != "sha256":
                raise ManifestFormatError("part integrity must be sha256", where)
        return spec

    def part_digest(self, number: int) -> bytes:
        return parse_integrity(self.parts[number].integrity).digests[0]


def _same_header(spec: ComponentSpec, number: int, got: PartHeader, where: str) -> None:
    want = spec.header(number)
    if got != want:
        if got.component_digest != want.component_digest:
            raise IntegrityError("part of another component or package", where)
        if got.part_number != number:
            raise IntegrityError(f"part says it is number {got.part_number}", where)
        raise IntegrityError("part header disagrees with the manifest", where)


def check_part_bytes(spec: ComponentSpec, number: int, data: Buffer, where: str = "") -> None:
    """Raise unless ``data`` is exactly part ``number`` of ``spec`` (manifest,
    header, footer): :func:`check_part_stream` over one chunk."""
    where = where or spec.part_path(number)
    if not 0 <= number < spec.total:
        raise IntegrityError(f"no part number {number} in this component", where)
    check_part_stream(spec, number, [data], where)


def check_part_stream(
    spec: ComponentSpec, number: int, chunks: Iterable[Buffer], where: str = ""
) -> None:
    """Like :func:`check_part_bytes` over a stream, in one pass and bounded memory."""
    where = where or spec.part_path(number)
    if not 0 <= number < spec.total:
        raise IntegrityError(f"no part number {number} in this component", where)
    size = spec.parts[number].size
    want = spec.header(number)
    hasher = PartHasher()
    head = bytearray()
    tail = bytearray()
    seen = 0
    body_len = size - FOOTER_SIZE
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        if seen + len(view) > size:
            raise IntegrityError("part is longer than the manifest says", where)
        if len(head) < HEADER_SIZE:
            head += view[: HEADER_SIZE - len(head)]
            if len(head) == HEADER_SIZE:
                _same_header(spec, number, PartHeader.unpack(bytes(head), where), where)
        body_part = view[: max(0, body_len - seen)]
        hasher.update(body_part)
        tail += view[len(body_part) :]
        seen += len(view)
    if seen != size:
        raise IntegrityError(f"part is {seen} bytes, manifest says {size}", where)
    if bytes(head) != want.pack():
        raise IntegrityError("part header disagrees with the manifest", where)
    footer = PartFooter.unpack(bytes(tail), where)
    if hasher.footer() != footer:
        raise ChecksumError("part footer SHA-256/CRC-32 do not match", where)
    if not hmac.compare_digest(hasher.file_digest(bytes(tail)), spec.part_digest(number)):
        raise DigestMismatchError("part does not match the manifest's integrity", where)


def ordered_map(
    pool: Executor | None, fn: Callable[[T], R], items: Iterable[T], ahead: int = 3
) -> Iterator[R]:
    """``map`` in order with at most ``ahead`` tasks in flight (``pool=None``: inline)."""
    if pool is None:
        for it in items:
            yield fn(it)
        return
    queue: deque[Future[R]] = deque()
    try:
        for it in items:
            queue.append(pool.submit(fn, it))
            if len(queue) >= ahead:
                yield queue.popleft().result()
        while queue:
            yield queue.popleft().result()
    finally:
        for f in queue:
            f.cancel()


def iter_stripes(
    spec: ComponentSpec,
    sources: Mapping[int, ReadRange],
    pool: Executor | None = None,
    where: str = "",
) -> Iterator[Buffer]:
    """The compressed stream, stripe by stripe, decoded from ``k`` good parts."""
    where = where or spec.path
    good = sorted(sources)
    if len(good) < spec.k:
        raise lost_error(spec, len(good), where)
    chosen = good[: spec.k]
    engine = spec.engine()
    hdr = spec.header(0)
    spans = spec.spans()
    k, m = spec.plan.k, spec.plan.m

    def one(i: int) -> Buffer:
        off, length = hdr.fragment_span(i)
        frags = {n: sources[n](off, length) for n in chosen}
        return engine.decode(k, m, frags, spans[i][1])

    yield from ordered_map(pool, one, range(len(spans)))


#: Engines whose data fragment ``i`` of a stripe of ``L`` bytes is the stripe's
#: bytes ``[i * w, (i + 1) * w)`` with ``w = ceil(L / k)``, zero-padded.
SYSTEMATIC = frozenset({"isa_l", "zfec"})


class DataFragments(Sequence[bytes]):
    """The ``k`` data fragments of one stripe of a systematic engine, each
    read from the stream only when asked for (one in memory at a time)."""

    def __init__(self, spec: ComponentSpec, read: ReadRange, off: int, length: int) -> None:
        self._read = read
        self._off = off
        self._len = length
        self._k = spec.k
        self._w = spec.engine().fragment_size(spec.plan.k, spec.plan.m, length)

    def __len__(self) -> int:
        return self._k

    def __getitem__(self, i: int) -> bytes:  # type: ignore[override]
        if not 0 <= i < self._k:
            raise IndexError(i)
        start = i * self._w
        n = max(0, min(self._w, self._len - start))
        got = bytes(self._read(self._off + start, n)) if n else b""
        return got + bytes(self._w - len(got)) if len(got) < self._w else got


#: Bytes of fragments read at a time when :func:`iter_stream` has to decode.
_DECODE_WINDOW = 4 << 20
def iter_stream(spec: ComponentSpec, sources: Mapping[int, ReadRange]) -> Iterator[Buffer]:
    """The compressed stream from ``k`` good parts, in bounded memory.

    Systematic codes (:data:`SYSTEMATIC`): the stream is the data fragments
    one after another, so each present data part's fragment is read straight
    from it; only the missing data rows of a stripe are decoded, a few
    columns at a time (Reed-Solomon works byte column by byte column: ``k``
    rows of ``c`` columns decode like a stripe of ``k * c`` bytes). Memory:
    the missing rows of one stripe plus a 4 MiB window, never a whole stripe.
    Other engines: stripe by stripe (:func:`iter_stripes` without a pool).
    """
    where = spec.path
    k, m = spec.plan.k, spec.plan.m
    good = sorted(sources)
    if len(good) < k:
        raise lost_error(spec, len(good), where)
    if spec.plan.engine not in SYSTEMATIC:
        yield from iter_stripes(spec, sources)
        return
    hdr = spec.header(0)
    engine = spec.engine()
    chosen = good[:k]
    missing = [r for r in range(k) if r not in sources]
    step = max(64, _DECODE_WINDOW // k)
    for i, (_off, length) in enumerate(spec.spans()):
        foff, flen = hdr.fragment_span(i)
        w = engine.fragment_size(k, m, length)
        if flen != w:
            raise IntegrityError(f"fragment {i} is {flen} bytes, not {w}", where)
        rows = {r: bytearray(w) for r in missing}
        for a in range(0, w if missing else 0, step):
            c = min(step, w - a)
            frags = {n: sources[n](foff + a, c) for n in chosen}
            cols = memoryview(engine.decode(k, m, frags, k * c))
            for r in missing:
                rows[r][a : a + c] = cols[r * c : (r + 1) * c]
        for r in range(k):
            take = max(0, min(w, length - r * w))
            if take:
                yield sources[r](foff, take) if r in sources else bytes(rows[r][:take])


def lost_error(spec: ComponentSpec, good: int, where: str) -> ComponentLostError:
    return ComponentLostError(
        f"unrecoverable: coherence {good}/{spec.total} parts good, {spec.k} needed "
        f"(threshold {spec.k / spec.total:.3f})",
        where,
        good=good,
        total=spec.total,
        k=spec.k,
    )


WriterFactory = Callable[[Path], contextlib.AbstractContextManager[BinaryIO]]


@contextlib.contextmanager
def fresh_writer(path: Path) -> Iterator[BinaryIO]:
    """Create a new file inside a tree that nobody sees yet (a package being built).

    No per-file fsync: the whole tree is synced once (:func:`sync_tree`)
    before it is renamed into place, which is what makes it appear
    atomically. On an exception the file is removed.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "xb")  # noqa: SIM115 - closed below
        os.fchmod(fh.fileno(), 0o644)  # served as static files, whatever the umask
    except OSError as exc:
        raise StorageError(f"cannot create: {exc.strerror}", str(path)) from exc
    ok = False
    try:
        with fh:
            yield fh
        ok = True
    except OSError as exc:
        raise StorageError(f"cannot write: {exc.strerror}", str(path)) from exc
    finally:
        if not ok:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _load_sync_file_range() -> Callable[[int, int, int], None] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int

    def start(fd: int, offset: int, length: int) -> None:
        fn(fd, offset, length, 2)  # SYNC_FILE_RANGE_WRITE: start writeback, don't wait

    return start


_SYNC_FILE_RANGE = _load_sync_file_range()


def start_writeback(fd: int, offset: int = 0, length: int = 0) -> None:
    """Ask the kernel to start writing ``length`` bytes at ``offset`` of ``fd``
    to disk now, without waiting (Linux ``sync_file_range``; a no-op
    elsewhere). Not a durability point: the final fsync still is; it only
    lets the disk work while we compute, so that fsync has less left to do."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(root: Path, threads: int = 16, skip: frozenset[str] = frozenset()) -> None:
    """fsync every file and directory below ``root`` (many at once, so the
    file system batches them), before the tree is renamed into place.

    Files named in ``skip`` (as ``str`` paths) were already fsynced after
    their last write (:class:`SyncingWriter`) and are not synced again.
    """
    files: list[str] = []
    dirs: list[str] = []
    for dirpath, _dirnames, filenames in os.walk(root):
        dirs.append(dirpath)
        files += [p for f in filenames if (p := os.path.join(dirpath, f)) not in skip]
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="fsync") as pool:
            list(pool.map(_fsync_path, files))
            list(pool.map(_fsync_path, dirs))
    except OSError as exc:
        raise StorageError(f"cannot flush to disk: {exc.strerror}", str(root)) from exc


class SyncingWriter:
    """A :func:`fresh_writer` that fsyncs big files in the background as soon
    as they are closed, so the disk writes overlap the hashing and coding of
    the rest of the package instead of all waiting for :func:`sync_tree`.

    :meth:`wait` returns the files synced this way (each after its last
    write); the caller still syncs every other file and every directory
    before the tree becomes visible, so the durability guarantee is the same.
    """

    def __init__(self, threads: int = 4, min_size: int = 1 << 20) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="fsync-early")
        self._min = min_size
        self._lock = threading.Lock()
        self._futures: list[tuple[str, Future[None]]] = []

    def sync_soon(self, path: Path) -> None:
        """fsync ``path`` in the background (it must not be written again)."""
        fut = self._pool.submit(_fsync_path, str(path))
        with self._lock:
            self._futures.append((str(path), fut))

    @contextlib.contextmanager
    def _open(self, path: Path) -> Iterator[BinaryIO]:
        with fresh_writer(path) as fh:
            yield fh
            big = fh.tell() >= self._min
        if big:
            self.sync_soon(path)

    def __call__(self, path: Path) -> contextlib.AbstractContextManager[BinaryIO]:
        return self._open(path)

    def wait(self) -> frozenset[str]:
        """Wait for every background fsync; the paths synced (raises StorageError)."""
        with self._lock:
            futures = list(self._futures)
        done: set[str] = set()
        for path, fut in futures:
            try:
                fut.result()
            except OSError as exc:
                raise StorageError(f"cannot flush to disk: {exc.strerror}", path) from exc
            done.add(path)
        return frozenset(done)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _fileno(fh: BinaryIO) -> int | None:
    """``fh``'s descriptor, or None for an in-memory buffer (no ``fileno``)."""
    try:
        return fh.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return None


class PartsWriter:
    """Part files of one component written stripe by stripe, each atomically.

    ``add(fragments)`` appends one stripe's fragments; ``finish(expected)``
    writes the footers and renames each part into place — only if its
    whole-file SHA-256 equals ``expected[n]`` when that is given. On an
    exception inside the ``with`` block every temp file is removed. With
    ``threads > 1`` the parts are hashed, written and fsynced by that many
    threads (hashlib, zlib and file I/O release the GIL).

    With ``writeback`` (the default) big fragments are pushed towards the
    disk as soon as written (:func:`start_writeback`), for files that have a
    descriptor; scratch files that are read back and deleted soon (the
    client's salvage) pass ``writeback=False``.
    """

    def __init__(
        self,
        spec: ComponentSpec,
        paths: Mapping[int, Path],
        threads: int = 1,
        writer: WriterFactory = atomic_writer,
        *,
        writeback: bool = True,
    ) -> None:
        self.spec = spec
        self._paths = dict(paths)
        self._ctx: dict[int, contextlib.AbstractContextManager[BinaryIO]] = {}
        self._fh: dict[int, BinaryIO] = {}
        #: descriptor to start writeback on, per part (None: not a real file)
        self._fd: dict[int, int | None] = {}
        self._hash: dict[int, PartHasher] = {}
        nums = sorted(paths)
        self._threads = max(1, min(threads, len(nums)))
        self._groups = [nums[i :: self._threads] for i in range(self._threads)]
        self._pool = ThreadPoolExecutor(self._threads) if self._threads > 1 else None
        try:
            for n in nums:
                ctx = writer(paths[n])
                self._fh[n] = ctx.__enter__()
                self._ctx[n] = ctx
                self._fd[n] = _fileno(self._fh[n]) if writeback else None
                head = spec.header(n).pack()
                self._hash[n] = PartHasher()
                self._hash[n].update(head)
                self._write(n, head)
        except BaseException:
            self.abort()
            raise

    def _write(self, n: int, data: Buffer, kick: bool = False) -> None:
        """Append ``data`` to part ``n``; a failed write (ENOSPC, EIO) is a
        :class:`~auraseal.errors.StorageError` naming the part's path."""
        fh = self._fh[n]
        try:
            fh.write(data)
            fd = self._fd[n]
            if kick and fd is not None:
                fh.flush()
                start_writeback(fd)
        except OSError as exc:
            raise StorageError(f"cannot write: {exc.strerror}", str(self._paths[n])) from exc

    def _each(self, fn: Callable[[int], None]) -> None:
        if self._pool is None:
            for n in list(self._fh):
                fn(n)
            return

        def group(nums: list[int]) -> None:
            for n in nums:
                fn(n)

        for f in [self._pool.submit(group, g) for g in self._groups]:
            f.result()

    def add(self, fragments: Sequence[Buffer]) -> None:
        def one(n: int) -> None:
            frag = fragments[n]
            self._hash[n].update(frag)
            self._write(n, frag, kick=len(frag) >= _KICK)

        self._each(one)

    def _close(self, n: int, ok: bool) -> None:
        ctx = self._ctx.pop(n)
        self._fh.pop(n)
        if ok:
            ctx.__exit__(None, None, None)
        else:
            exc = IntegrityError("aborted")
            ctx.__exit__(IntegrityError, exc, None)

    def abort(self) -> None:
        for n in list(self._ctx):
            with contextlib.suppress(Exception):
                self._close(n, False)
        if self._pool is not None:
            self._pool.shutdown()

    def finish(
        self, expected: Mapping[int, bytes] | None = None
    ) -> tuple[dict[int, bytes], dict[int, str]]:
        """Commit parts; returns (whole-file SHA-256 of committed parts, failures)."""
        done: dict[int, bytes] = {}
        failed: dict[int, str] = {}
        commit: list[tuple[int, bytes, bytes]] = []
        # refused parts first, here: hashing the footer is cheap, and a
        # salvage whose candidates all fail must not pay for a thread pool
        for n in sorted(self._ctx):
            footer = self._hash[n].footer().pack()
            digest = self._hash[n].file_digest(footer)
            if expected is not None and not hmac.compare_digest(digest, expected[n]):
                self._close(n, False)
                failed[n] = "rebuilt part does not match the manifest"
            else:
                commit.append((n, footer, digest))

        def one(item: tuple[int, bytes, bytes]) -> None:
            n, footer, digest = item
            self._write(n, footer)
            self._close(n, True)
            done[n] = digest

        durable = any(self._fd.get(n) is not None for n, _, _ in commit)
        if len(commit) > 1 and durable:
            # committing is mostly waiting (atomic_writer: fsync, rename, fsync
            # of the directory): many at once, so the file system batches them
            with ThreadPoolExecutor(min(16, len(commit)), thread_name_prefix="commit") as ex:
                list(ex.map(one, commit))
        else:
            for item in commit:
                one(item)
        if self._pool is not None:
            self._pool.shutdown()
        return dict(sorted(done.items())), dict(sorted(failed.items()))

    def __enter__(self) -> PartsWriter:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: object) -> None:
        if t is not None:
            self.abort()
