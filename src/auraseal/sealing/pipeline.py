"""The one component pipeline: parts -> check -> decode -> decompress -> verify -> write.

Every command that rebuilds a component goes through here: ``unseal`` (an
original from its parts), ``repair`` and server healing (originals and
missing parts, in place) and the client (an original from the parts in its
spool). It reads members through :class:`~auraseal.sealing.source.MemberSource`
(a package directory or zip, :class:`~auraseal.sealing.source.MemorySource`,
or :class:`PartFiles`: part files already on disk, such as the client's
spool) and has two entry points:

* :func:`rebuild_original`: decode ``k`` good parts stripe by stripe,
  decompress, hash and write to a temp file that is renamed over ``dest``
  only if the whole file matches the manifest's integrity; optionally
  re-encoding missing parts on the way (repair);
* :func:`rewrite_parts`: the same decode, re-encoding only the missing parts.

Memory is bounded by a window of stripes, never the whole file: without a
pool (or when a stripe is big) systematic codes decode only the missing data
rows a few columns at a time (:func:`~auraseal.sealing.component.iter_stream`);
with a pool, small stripes are decoded in parallel, a few in flight.

Failures are *typed*: the pipeline raises
:class:`~auraseal.errors.ComponentLostError` only when fewer than ``k``
intact parts exist, :class:`~auraseal.errors.StorageError` naming the path
for every environment failure (a full disk, EIO, a directory in the way; all
writes go through :func:`~auraseal._fs.atomic_writer`, the one place where
ENOSPC becomes an error) and :class:`~auraseal.errors.IntegrityError` when
the rebuilt bytes do not match with enough verified parts. :func:`outcome_of`
turns exactly those into an :class:`Outcome`; anything else is a bug and
propagates.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from auraseal._fs import atomic_writer, temp_name
from auraseal.errors import (
    AuraSealError,
    ComponentLostError,
    IntegrityError,
    IOFailure,
    StorageError,
    UnrecoverableError,
)
from auraseal.integrity import parse_integrity
from auraseal.manifest import FileEntry, part_name
from auraseal.sealing.codecs import compress_into, iter_decompress
from auraseal.sealing.component import (
    ComponentSpec,
    PartsWriter,
    WriterFactory,
    check_part_stream,
    iter_stream,
    iter_stripes,
    lost_error,
    ordered_map,
    start_writeback,
)
from auraseal.sealing.seal import encode_parts_from
from auraseal.sealing.source import Buffer, MemberSource, ReadRange

__all__ = [
    "BIG",
    "FileRange",
    "Outcome",
    "PartFiles",
    "PartSet",
    "check_parts",
    "decompress_kept",
    "encode_from_original",
    "member_where",
    "open_good",
    "outcome_of",
    "rebuild_original",
    "rewrite_parts",
    "write_verified",
]

#: Components at least this big hash and write in a second thread.
BIG = 4 << 20
#: Stripes at most this big are decoded in parallel (a few in flight); bigger
#: ones stream through the bounded-memory decoder.
POOL_STRIPE_MAX = 8 << 20
_KICK = 16 << 20
_CHUNK = 4 << 20

State = Literal["intact", "rebuilt", "parts_rewritten", "lost", "failed"]
Kind = Literal["", "io", "integrity"]


# --- outcomes -------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What happened to one component.

    ``intact`` / ``rebuilt`` / ``parts_rewritten``: success (exit 0);
    ``lost``: fewer than ``k`` intact parts (``good`` of them; exit 4 only);
    ``failed``: ``kind="io"`` (the environment failed at ``where``; exit 5)
    or ``kind="integrity"`` (rebuilt bytes do not match; exit 1).
    """

    path: str
    state: State
    good: int = 0
    k: int = 0
    where: str = ""
    reason: str = ""
    kind: Kind = ""
    rewritten: tuple[str, ...] = ()

    @classmethod
    def lost(cls, path: str, good: int, k: int, reason: str = "") -> Outcome:
        return cls(path, "lost", good=good, k=k, where=path, reason=reason)

    @classmethod
    def failed(cls, path: str, where: str, reason: str, kind: Kind) -> Outcome:
        return cls(path, "failed", where=where or path, reason=reason, kind=kind)

    @property
    def ok(self) -> bool:
        return self.state in ("intact", "rebuilt", "parts_rewritten")

    @property
    def exit_code(self) -> int:
        if self.ok:
            return 0
        if self.state == "lost":
            return UnrecoverableError.exit_code
        return IOFailure.exit_code if self.kind == "io" else IntegrityError.exit_code

    def error(self) -> AuraSealError | None:
        """The error this outcome stands for (None on success)."""
        if self.ok:
            return None
        if self.state == "lost":
            return ComponentLostError(self.reason or "lost", self.where, good=self.good, k=self.k)
        if self.kind == "io":
            return StorageError(self.reason, self.where)
        return IntegrityError(self.reason, self.where)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "state": self.state}
        if self.state == "lost":
            d.update(good=self.good, k=self.k, reason=self.reason)
        elif self.state == "failed":
            d.update(where=self.where, reason=self.reason, kind=self.kind)
        if self.rewritten:
            d["rewritten"] = list(self.rewritten)
        return d


def outcome_of(path: str, exc: BaseException) -> Outcome:
    """The outcome a pipeline failure stands for; re-raises anything else
    (a bug must not be reported as lost or damaged data)."""
    if isinstance(exc, IOFailure):
        return Outcome.failed(path, exc.where, exc.what, "io")
    if isinstance(exc, OSError):
        where = str(exc.filename) if exc.filename else path
        return Outcome.failed(path, where, f"I/O error: {exc.strerror or exc}", "io")
    if isinstance(exc, ComponentLostError):
        return Outcome.lost(path, exc.good, exc.k, exc.what)
    if isinstance(exc, IntegrityError):
        return Outcome.failed(path, exc.where, exc.what, "integrity")
    raise exc


# --- sources --------------------------------------------------------------------


class FileRange:
    """``read(offset, length)`` over one open file (closed when dropped)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise StorageError(f"cannot open: {exc.strerror}", self.path) from exc

    def __call__(self, off: int, length: int) -> bytes:
        try:
            return os.pread(self.fd, length, off)
        except OSError as exc:
            raise StorageError(f"cannot read: {exc.strerror}", self.path) from exc

    def __del__(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            os.close(self.fd)


class PartFiles:
    """A :class:`~auraseal.sealing.source.MemberSource` over member files on
    disk, by member name (the client's spool of downloaded parts)."""

    def __init__(self, files: Mapping[str, Path], where: str = "<files>") -> None:
        self.files = {k: Path(v) for k, v in files.items()}
        self._where = where

    @classmethod
    def spool(cls, entry: FileEntry, parts: Mapping[int, Path]) -> PartFiles:
        """Part files of ``entry`` by number (e.g. ``spool/part.3``)."""
        return cls({part_name(entry.path, n): p for n, p in parts.items()}, entry.path)

    @property
    def where(self) -> str:
        return self._where

    def size(self, name: str) -> int | None:
        p = self.files.get(name)
        try:
            return None if p is None else p.stat().st_size
        except OSError:
            return None

    def reader(self, name: str) -> ReadRange | None:
        p = self.files.get(name)
        return None if p is None else FileRange(p)


def member_where(source: MemberSource, name: str) -> str:
    """Where member ``name`` of ``source`` is, for an error message."""
    if isinstance(source, PartFiles) and name in source.files:
        return str(source.files[name])
    root = getattr(source, "root", None)
    if isinstance(root, Path):
        return str(root / name)
    return f"{source.where}: {name}"


@dataclass
class PartSet:
    """A component's parts as checked: readers of the good ones (each bound
    to what was checked: an open file, not a name), why the others are bad,
    and the members that could not be read at all (an I/O failure)."""

    #: every part that checked good, by number
    ok: list[int] = field(default_factory=list)
    #: readers of the first ``k`` good parts (what a decode uses; the others
    #: are not kept open)
    good: dict[int, ReadRange] = field(default_factory=dict)
    bad: dict[int, str] = field(default_factory=dict)
    #: where -> what: present members that could not be read (exit 5, not lost)
    unreadable: dict[str, str] = field(default_factory=dict)


def _chunks(read: ReadRange, size: int) -> Iterator[Buffer]:
    off = 0
    while off < size:
        data = read(off, min(_CHUNK, size - off))
        if not data:
            return
        yield data
        off += len(data)


def check_parts(
    spec: ComponentSpec, source: MemberSource, numbers: Collection[int] | None = None
) -> PartSet:
    """Check parts of ``spec`` (header, footer, manifest digest) in one
    streaming pass each, keeping the first ``k`` good parts' readers for the
    decode (bound to what was checked: a part swapped afterwards is not read)."""
    out = PartSet()
    why_not = getattr(source, "unreadable", None)
    for n in sorted(range(spec.total) if numbers is None else numbers):
        name = part_name(spec.path, n)
        size = source.size(name)
        read = None if size is None else source.reader(name)
        if read is None or size is None:
            why = why_not(name) if callable(why_not) else None
            out.bad[n] = "missing" if why is None else why
            if why is not None:
                out.unreadable[member_where(source, name)] = why
            continue
        if size != spec.parts[n].size:
            out.bad[n] = f"{size} bytes, manifest says {spec.parts[n].size}"
            continue
        try:
            check_part_stream(spec, n, _chunks(read, size), name)
        except IOFailure as exc:
            out.bad[n] = exc.what
            out.unreadable[exc.where or member_where(source, name)] = exc.what
            continue
        except AuraSealError as exc:
            out.bad[n] = exc.what
            continue
        out.ok.append(n)
        if len(out.good) < spec.k:
            out.good[n] = read
    return out


def open_good(
    spec: ComponentSpec, source: MemberSource, numbers: Collection[int]
) -> dict[int, ReadRange]:
    """Readers of parts already checked good. A part that cannot be opened any
    more (deleted, a directory put in its place) is an I/O failure naming it
    (:class:`~auraseal.errors.StorageError`), never a reason to call the
    component lost."""
    out: dict[int, ReadRange] = {}
    why_not = getattr(source, "unreadable", None)
    for n in sorted(numbers):
        name = part_name(spec.path, n)
        read = source.reader(name)
        if read is None:
            why = why_not(name) if callable(why_not) else None
            raise StorageError(why or "vanished after it was checked", member_where(source, name))
        out[n] = read
    return out


# --- writing --------------------------------------------------------------------


def write_verified(  # noqa: PLR0917 - kept positional for callers
    dest: Path,
    chunks: Iterator[Buffer],
    integrity: str,
    where: str,
    threaded: bool = False,
    kind: str = "write",
) -> None:
    """Stream ``chunks`` to ``dest`` atomically; rename only if they match ``integrity``.

    With ``threaded``, hashing and writing run in a second thread while the
    caller's thread produces the chunks (decoding, decompressing). ``kind``
    names the temp file's owner (:func:`~auraseal._fs.temp_name`).
    """
    integ = parse_integrity(integrity, where)
    h = hashlib.new(integ.algorithm)
    with atomic_writer(dest, kind=kind) as fh:
        pending = 0

        def write(chunk: Buffer) -> None:
            nonlocal pending
            fh.write(chunk)
            pending += len(chunk)
            if pending >= _KICK:  # let the disk work while we decode the rest
                fh.flush()
                start_writeback(fh.fileno())
                pending = 0

        if not threaded:
            for chunk in chunks:
                h.update(chunk)
                write(chunk)
        else:
            _pipe(chunks, [h.update, write])
        if not integ.matches(h.digest()):
            raise IntegrityError("rebuilt bytes do not match the manifest", where)


#: how :func:`_pipe` slices the chunks it hands to its threads
_PIPE_SLICE = 4 << 20


def _pipe(chunks: Iterator[Buffer], sinks: list[Callable[[Buffer], object]]) -> None:
    """Feed every chunk to each sink, one thread per sink (bounded queues), so
    hashing and writing run on different cores while this thread produces the
    chunks; re-raise the first sink error."""
    queues: list[queue.Queue[Buffer | None]] = [queue.Queue(maxsize=8) for _ in sinks]
    errors: list[BaseException] = []

    def consume(q: queue.Queue[Buffer | None], sink: Callable[[Buffer], object]) -> None:
        while (item := q.get()) is not None:
            if errors:
                continue
            try:
                sink(item)
            except BaseException as exc:  # handed to the producer below
                errors.append(exc)

    workers = [
        threading.Thread(target=consume, args=(q, sink), name="write-verified")
        for q, sink in zip(queues, sinks, strict=True)
    ]
    for w in workers:
        w.start()
    try:
        for chunk in chunks:
            # queued in slices (views, no copy): a queue holds at most 8 slices,
            # so at most ~2 stripes stay alive behind the producer whatever
            # the stripe size (whole 54 MiB stripes made 8 x 54 MiB)
            view = memoryview(chunk)
            for off in range(0, len(view), _PIPE_SLICE):
                if errors:
                    break
                piece = view[off : off + _PIPE_SLICE]
                for q in queues:
                    q.put(piece)
            if errors:
                break
    finally:
        for q in queues:
            q.put(None)
        for w in workers:
            w.join()
    if errors:
        raise errors[0]


# --- decoding -------------------------------------------------------------------


def _stripes(
    spec: ComponentSpec,
    parts: Mapping[int, ReadRange],
    pool: Executor | None,
    rewrite: PartsWriter | None,
) -> Iterator[Buffer]:
    """The compressed stream from ``k`` of ``parts``, feeding ``rewrite`` the
    re-encoded fragments of each stripe when given."""
    if len(parts) < spec.k:
        raise lost_error(spec, len(parts), spec.path)
    if rewrite is None:
        if pool is None or spec.plan.stripe_size > POOL_STRIPE_MAX:
            yield from iter_stream(spec, parts)  # only missing rows decoded, bounded window
        else:
            yield from iter_stripes(spec, parts, pool)  # small stripes, a few in flight
        return
    chosen = sorted(parts)[: spec.k]
    engine = spec.engine()
    hdr = spec.header(0)
    spans = spec.spans()
    k, m = spec.plan.k, spec.plan.m

    def one(i: int) -> tuple[Buffer, list[Buffer] | None]:
        off, length = hdr.fragment_span(i)
        stripe = engine.decode(k, m, {n: parts[n](off, length) for n in chosen}, spans[i][1])
        return stripe, (engine.encode(k, m, stripe) if rewrite is not None else None)

    # big stripes one at a time: a stripe and its re-encoded fragments are
    # ~2x the stripe size, and three in flight made a 256 MiB repair peak at
    # 300+ MiB
    if spec.plan.stripe_size > POOL_STRIPE_MAX:
        pool = None
    for stripe, frags in ordered_map(pool, one, range(len(spans))):
        if rewrite is not None and frags is not None:
            rewrite.add(frags)
        yield stripe


def _parts_writer(
    spec: ComponentSpec, paths: Mapping[int, Path], pool: Executor | None, kind: str
) -> PartsWriter:
    threads = 2 if pool is not None and spec.size >= BIG else 1

    def writer(path: Path) -> contextlib.AbstractContextManager[Any]:
        return atomic_writer(path, kind=kind)

    return PartsWriter(spec, paths, threads, writer)


def _expected(spec: ComponentSpec, paths: Mapping[int, Path]) -> dict[int, bytes]:
    return {n: spec.part_digest(n) for n in paths}


def rebuild_original(
    spec: ComponentSpec,
    parts: Mapping[int, ReadRange],
    dest: Path,
    *,
    pool: Executor | None = None,
    kind: str = "write",
    rewrite: Mapping[int, Path] | None = None,
) -> tuple[dict[int, bytes], dict[int, str]]:
    """Rebuild ``spec``'s original into ``dest`` from ``k`` of ``parts``
    (readers of checked parts), atomically and only if the whole file
    matches the manifest's integrity; nothing half-written is left.

    With ``rewrite`` (part number -> path), those parts are re-encoded from
    the decoded stripes on the way and committed (each only if it matches the
    manifest); returns (committed parts' SHA-256, refused parts). Raises
    :class:`~auraseal.errors.ComponentLostError` (fewer than ``k`` parts),
    :class:`~auraseal.errors.StorageError` (naming the path) or
    :class:`~auraseal.errors.IntegrityError`.
    """
    if len(parts) < spec.k:
        raise lost_error(spec, len(parts), spec.path)
    threaded = spec.size >= BIG
    if not rewrite:
        stream = _stripes(spec, parts, pool, None)
        chunks = iter_decompress(spec.codec, stream, spec.size, spec.path)
        write_verified(dest, chunks, spec.integrity, spec.path, threaded=threaded, kind=kind)
        return {}, {}
    with _parts_writer(spec, rewrite, pool, kind) as writer:
        stream = _stripes(spec, parts, pool, writer)
        chunks = iter_decompress(spec.codec, stream, spec.size, spec.path)
        write_verified(dest, chunks, spec.integrity, spec.path, threaded=threaded, kind=kind)
        return writer.finish(_expected(spec, rewrite))


def rewrite_parts(
    spec: ComponentSpec,
    parts: Mapping[int, ReadRange],
    paths: Mapping[int, Path],
    *,
    pool: Executor | None = None,
    kind: str = "write",
    keep: list[Buffer] | None = None,
) -> tuple[dict[int, bytes], dict[int, str]]:
    """Re-encode the parts ``paths`` (number -> path) of ``spec`` from ``k`` of
    ``parts``, each committed atomically only if it matches the manifest;
    returns (committed parts' SHA-256, refused parts).

    With ``keep``, the decoded (compressed) stripes are appended to it, for a
    caller that may need the original too once a concurrent check finishes
    (repair of a mid-sized component; the caller bounds its size).
    """
    if len(parts) < spec.k:
        raise lost_error(spec, len(parts), spec.path)
    with _parts_writer(spec, paths, pool, kind) as writer:
        for stripe in _stripes(spec, parts, pool, writer):
            if keep is not None:
                keep.append(stripe)
        return writer.finish(_expected(spec, paths))


def encode_from_original(  # noqa: PLR0917 - one call per use
    spec: ComponentSpec,
    read: ReadRange,
    have: int,
    paths: Mapping[int, Path],
    scratch: Path,
    kind: str,
    writer: WriterFactory,
    *,
    writeback: bool = True,
) -> tuple[dict[int, bytes], dict[int, str]] | None:
    """Re-encode the parts ``paths`` from a copy of the original (``have``
    bytes read with ``read``; zero-padded to the manifest's size if shorter),
    in bounded memory: the copy is compressed as sealing does into a scratch
    file in ``scratch`` (temp name of ``kind``; codecs other than ``none``),
    then encoded stripe by stripe, each part committed through ``writer``
    only if it matches the manifest. Returns (committed parts' SHA-256,
    refused parts), or ``None`` when the copy cannot re-create the sealed
    stream (longer than the original, or re-compressed to another length).
    Used by repair (original intact, too few parts) and the client's salvage.
    """
    if have > spec.size:
        return None

    def padded(off: int, length: int) -> Buffer:
        got = read(off, max(0, min(length, have - off))) if off < have else b""
        return bytes(got) + bytes(length - len(got)) if len(got) < length else got

    expected = _expected(spec, paths)
    if spec.codec == "none":
        if spec.plan.compressed_size != spec.size:
            return None
        return encode_parts_from(
            spec, padded, paths, expected=expected, writer=writer, writeback=writeback
        )
    zpath = scratch / temp_name(Path(spec.path).name, kind)
    try:
        zfh = open(zpath, "w+b")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise StorageError(f"cannot create scratch file: {exc.strerror}", str(zpath)) from exc
    try:
        with zfh:
            try:
                compress_into(spec.codec, padded, spec.size, zfh)
                zfh.flush()
            except OSError as exc:
                raise StorageError(f"cannot write: {exc.strerror}", str(zpath)) from exc
            if zfh.tell() != spec.plan.compressed_size:
                return None
            compressed = FileRange(zpath)
            return encode_parts_from(
                spec, compressed, paths, expected=expected, writer=writer, writeback=writeback
            )
    finally:
        with contextlib.suppress(OSError):
            zpath.unlink()


def decompress_kept(spec: ComponentSpec, kept: list[Buffer]) -> Iterator[Buffer]:
    """The original from stripes kept by :func:`rewrite_parts`."""
    return iter_decompress(spec.codec, iter(kept), spec.size, spec.path)
