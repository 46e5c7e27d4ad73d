"""Unseal: rebuild every file of a package into a directory, trusting nothing;
and :func:`rebuild_component` for parts that arrived some other way (HTTP)."""

from __future__ import annotations

import base64
import contextlib
import functools
import hmac
import io
import os
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from auraseal._fs import temp_name
from auraseal.errors import (
    AuraSealError,
    ComponentLostError,
    InputError,
    IntegrityError,
    IOFailure,
    StorageError,
)
from auraseal.integrity import verify_bytes
from auraseal.manifest import FileEntry, part_name
from auraseal.sealing._progress import metered
from auraseal.sealing.codecs import compress, compress_into, iter_decompress
from auraseal.sealing.component import (
    ComponentSpec,
    ReadRange,
    check_part_bytes,
    fresh_writer,
    iter_stream,
    iter_stripes,
    lost_error,
)
from auraseal.sealing.package import Package, write_target
from auraseal.sealing.scrub import BIG, check_component, clean_package_temps, write_verified
from auraseal.sealing.seal import encode_parts, encode_parts_from

__all__ = [
    "UnsealReport",
    "parts_from_copy",
    "parts_from_original",
    "rebuild_component",
    "rebuild_file",
    "rebuild_from_readers",
    "unseal",
    "verify_part",
]

Progress = Callable[[int], None] | None
Buffer = bytes | bytearray | memoryview
#: Temp files of unseal are named with this kind (see :func:`~auraseal._fs.temp_name`).
UNSEAL_KIND = "unseal"


def verify_part(entry: FileEntry, number: int, data: Buffer) -> None:
    """Raise unless ``data`` is exactly part ``number`` of ``entry`` (manifest, header, footer)."""
    check_part_bytes(ComponentSpec.from_entry(entry), number, data)


def rebuild_component(entry: FileEntry, parts: Mapping[int, Buffer]) -> bytes:
    """Rebuild one file from candidate part bytes (e.g. fetched over HTTP).

    Each candidate is checked against the manifest entry and its own footer;
    corrupt, truncated and foreign parts are ignored. With at least ``k`` good
    parts the stream is decoded, decompressed and checked against the file's
    integrity; otherwise :class:`~auraseal.errors.ComponentLostError` (exit 4)
    names the coherence.
    """
    spec = ComponentSpec.from_entry(entry)
    good: dict[int, memoryview] = {}
    for n, data in parts.items():
        try:
            check_part_bytes(spec, n, data)
        except (IntegrityError, InputError):
            continue
        good[n] = memoryview(data)
    if len(good) < spec.k:
        raise lost_error(spec, len(good), entry.path)

    def reader(view: memoryview) -> ReadRange:
        return lambda off, length: view[off : off + length]

    sources = {n: reader(v) for n, v in good.items()}
    out = b"".join(iter_decompress(spec.codec, iter_stripes(spec, sources), spec.size, spec.path))
    verify_bytes(out, entry.integrity, entry.path)
    return out


def _pread(fd: int, off: int, length: int) -> bytes:
    return os.pread(fd, length, off)


def _write_rebuilt(
    spec: ComponentSpec,
    sources: Mapping[int, ReadRange],
    dest: Path,
    pool: Executor | None = None,
    *,
    threaded: bool = False,
    kind: str = "write",
) -> None:
    """Decode ``spec`` from ``k`` of ``sources`` stripe by stripe into ``dest``:
    atomically, and only if the whole file matches the manifest's integrity
    (otherwise nothing is left at ``dest``'s temp name, and ``dest`` is untouched)."""
    if len(sources) < spec.k:
        raise lost_error(spec, len(sources), spec.path)
    stream = iter_stripes(spec, sources, pool) if pool is not None else iter_stream(spec, sources)
    chunks = iter_decompress(spec.codec, stream, spec.size, spec.path)
    write_verified(dest, chunks, spec.integrity, spec.path, threaded=threaded, kind=kind)


def rebuild_file(entry: FileEntry, parts: Mapping[int, Path], dest: Path) -> None:
    """Rebuild one file into ``dest`` from part files already checked against
    the manifest (their whole-file SHA-256; e.g. verified while downloading).

    Streams: one stripe in memory at a time (no pool: a stripe of a big
    component is up to ``k * 256 KiB``), decoded, decompressed and hashed
    on the way to a temp file next to ``dest`` that is renamed over ``dest``
    only if the whole file matches the manifest's integrity
    (:class:`~auraseal.errors.DigestMismatchError` otherwise, nothing kept).
    Fewer than ``k`` parts: :class:`~auraseal.errors.ComponentLostError`.
    """
    with contextlib.ExitStack() as stack:
        sources: dict[int, ReadRange] = {}
        for n, path in parts.items():
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            stack.callback(os.close, fd)
            sources[n] = functools.partial(_pread, fd)
        rebuild_from_readers(entry, sources, dest)


def rebuild_from_readers(
    entry: FileEntry, parts: Mapping[int, ReadRange], dest: Path
) -> None:
    """:func:`rebuild_file` from ``read(offset, length)`` callables, one per
    verified part (e.g. slots of the client's spool file)."""
    _write_rebuilt(ComponentSpec.from_entry(entry), parts, dest)


def parts_from_copy(
    entry: FileEntry, copy: Path, scratch: Path, skip: Collection[int] = ()
) -> dict[int, Path]:
    """:func:`parts_from_original` for a copy on disk, in bounded memory.

    The copy is read in slices (zero-padded to the manifest's size if
    shorter), compressed as sealing does into a scratch file in ``scratch``
    (codecs other than ``none``), and encoded stripe by stripe; each data
    part not in ``skip`` is written to ``scratch`` and kept only if its
    whole-file SHA-256 equals the manifest's. Returns those part files by
    number. The caller owns ``scratch`` (and removes it).
    """
    spec = ComponentSpec.from_entry(entry)
    nums = [n for n in range(min(spec.k, spec.total)) if n not in skip]
    if not nums:
        return {}
    stem = Path(spec.path).name
    with contextlib.ExitStack() as stack:
        fd = os.open(copy, os.O_RDONLY | os.O_CLOEXEC)
        stack.callback(os.close, fd)
        have = os.fstat(fd).st_size
        if have > spec.size:
            return {}

        def padded(off: int, length: int) -> bytes:
            got = os.pread(fd, max(0, min(length, have - off)), off) if off < have else b""
            return got + bytes(length - len(got)) if len(got) < length else got

        read: ReadRange = padded
        if spec.codec != "none":
            zpath = scratch / temp_name(stem, "salvage")
            zfh = stack.enter_context(open(zpath, "w+b"))
            stack.callback(zpath.unlink, missing_ok=True)
            compress_into(spec.codec, padded, spec.size, zfh)
            zfh.flush()
            if zfh.tell() != spec.plan.compressed_size:
                return {}
            read = functools.partial(_pread, zfh.fileno())
        elif spec.plan.compressed_size != spec.size:
            return {}
        paths = {n: scratch / f"{stem}.salvaged.{n}" for n in nums}
        expected = {n: spec.part_digest(n) for n in nums}
        # small components: candidates in memory, a file only for a match
        # (creating a file per candidate was most of a client rebuild's cost)
        small = spec.plan.compressed_size <= SALVAGE_IN_MEMORY
        done, _failed = encode_parts_from(
            spec, read, paths, expected=expected,
            writer=_kept_if_committed if small else fresh_writer, writeback=False,
        )
        return {n: paths[n] for n in done}


#: components up to this (compressed) size are salvaged in memory
SALVAGE_IN_MEMORY = 16 << 20


@contextlib.contextmanager
def _kept_if_committed(path: Path) -> Iterator[BinaryIO]:
    """A salvage candidate held in memory and written to ``path`` only when
    committed (it matched the manifest); a refused one leaves no file."""
    buf = io.BytesIO()
    yield buf
    with fresh_writer(path) as fh:
        fh.write(buf.getbuffer())


class _MemWriter:
    """A ``WriterFactory`` result that keeps a part's bytes in memory."""

    def __init__(self, out: dict[str, bytes], key: str) -> None:
        self._out = out
        self._key = key
        self._buf = io.BytesIO()

    def __enter__(self) -> io.BytesIO:
        return self._buf

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: object) -> None:
        if t is None:
            self._out[self._key] = self._buf.getvalue()


def parts_from_original(entry: FileEntry, data: Buffer) -> dict[int, bytes]:
    """The data parts (numbers below ``k``) that a possibly damaged copy of
    the original re-creates byte for byte, keyed by number.

    ``data`` is compressed and encoded exactly as sealing does (the same path
    as repair's re-seal, :func:`~auraseal.sealing.seal.encode_parts`); a part
    is returned only if its whole-file SHA-256 equals the manifest's, so a
    damaged region costs just the parts it falls in. A copy of another length
    (padded with zeros if shorter), or one whose re-compression differs in
    length from the sealed stream, gives nothing.
    """
    spec = ComponentSpec.from_entry(entry)
    if len(data) > spec.size:
        return {}
    if len(data) < spec.size:
        data = bytes(data) + bytes(spec.size - len(data))
    stream = compress(spec.codec, data)
    if len(stream) != spec.plan.compressed_size:
        return {}
    nums = range(min(spec.k, spec.total))
    got: dict[str, bytes] = {}

    def writer(path: Path) -> _MemWriter:
        return _MemWriter(got, path.name)

    paths = {n: Path(str(n)) for n in nums}
    done, _failed = encode_parts(spec, stream, paths, None, writer=writer, writeback=False)
    out: dict[int, bytes] = {}
    for n, digest in done.items():
        # the manifest's part integrity is one sha256 token: compare its text
        # first (no parsing); anything else is compared digest to digest
        want = spec.parts[n].integrity
        if want == "sha256-" + base64.b64encode(digest).decode() or hmac.compare_digest(
            digest, spec.part_digest(n)
        ):
            out[n] = got[str(n)]
    return out


@dataclass
class UnsealReport:
    package: str
    out: str
    copied: list[str] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)
    lost: dict[str, str] = field(default_factory=dict)
    #: I/O failures (where -> what): reading the package or writing ``out`` failed
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """5 if reading or writing local storage failed, else 4 if a file
        had too few intact parts, else 0."""
        if self.errors:
            return 5
        return 4 if self.lost else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "out": self.out,
            "copied": self.copied,
            "rebuilt": self.rebuilt,
            "lost": self.lost,
            "errors": self.errors,
            "exit_code": self.exit_code,
        }


def _unseal_one(
    pkg: Package, entry: FileEntry, out: Path, pool: Executor, report: UnsealReport
) -> None:
    try:
        _unseal_component(pkg, entry, out, pool, report)
    except IOFailure as exc:
        report.errors[exc.where or entry.path] = exc.what
    except OSError as exc:
        report.errors[str(exc.filename or entry.path)] = str(exc.strerror or exc)


def _unseal_component(
    pkg: Package, entry: FileEntry, out: Path, pool: Executor, report: UnsealReport
) -> None:
    """Copy or rebuild one file; I/O failures are raised (exit 5), lost data
    goes to ``report.lost`` (exit 4)."""
    dest = write_target(out, entry.path)
    io_error: IOFailure | OSError | None = None
    if pkg.size(entry.path) == entry.size:
        try:
            write_verified(
                dest, pkg.iter_chunks(entry.path), entry.integrity, entry.path, kind=UNSEAL_KIND
            )
            report.copied.append(entry.path)
            return
        except IntegrityError:
            pass  # fall back to the parts
        except (IOFailure, OSError) as exc:
            io_error = exc  # fall back to the parts (a write failure recurs there)
    else:
        why = pkg.unreadable(entry.path)
        if why is not None:
            io_error = StorageError(why, str(pkg.root / entry.path) if pkg.root else entry.path)
    if entry.recovery is None:
        if io_error is not None:
            raise io_error
        report.lost[entry.path] = "damaged and not sealed (no parts)"
        return
    rep = check_component(pkg, entry, pool)
    spec = ComponentSpec.from_entry(entry)
    sources: dict[int, ReadRange] = {}
    for n in rep.good_parts:
        r = pkg.reader(part_name(entry.path, n))
        if r is not None:
            sources[n] = r
    if len(sources) < spec.k:
        if io_error is not None:
            raise io_error
        if rep.unreadable:  # too few parts could be *read*: I/O, not lost data
            where, what = sorted(rep.unreadable.items())[0]
            raise StorageError(what, where)
        report.lost[entry.path] = lost_error(spec, len(sources), entry.path).what
        return
    try:
        _write_rebuilt(spec, sources, dest, pool, threaded=entry.size >= BIG, kind=UNSEAL_KIND)
    except IOFailure:
        raise
    except AuraSealError as exc:
        report.lost[entry.path] = exc.what
        return
    report.rebuilt.append(entry.path)


def unseal(
    pkg: Package,
    out: Path,
    *,
    jobs: int | None = None,
    progress: Progress = None,
    strict: bool = True,
) -> UnsealReport:
    """Write every file of ``pkg`` into ``out`` (each atomically, each verified).

    A file whose original is intact is copied; otherwise it is rebuilt from
    its good parts. Files that cannot be rebuilt are left out of ``out``; with
    ``strict`` (the default) a :class:`~auraseal.errors.ComponentLostError`
    naming them and their coherence is raised after all others are written.
    A failure to read the package or to write ``out`` (a directory in the
    way, a full disk) goes to ``report.errors`` (exit 5); with ``strict`` a
    :class:`~auraseal.errors.StorageError` naming the first path is raised.
    Each file is written through a temp file (kind ``unseal``); those of
    killed unseals are removed from ``out`` first.
    """
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create output: {exc.strerror}", str(out)) from exc
    clean_package_temps(out, pkg.manifest.paths(), UNSEAL_KIND)
    report = UnsealReport(pkg.where, str(out))
    n = max(1, jobs or os.cpu_count() or 1)
    entries = sorted(pkg.manifest.files, key=lambda e: -e.size)
    with (
        metered(pkg, progress) as done,
        ThreadPoolExecutor(n, thread_name_prefix="unseal") as comps,
        ThreadPoolExecutor(n, thread_name_prefix="stripe") as stripes,
    ):

        def one(entry: FileEntry) -> None:
            _unseal_one(pkg, entry, out, stripes, report)
            done(entry.path)

        list(comps.map(one, entries))
    report.copied.sort()
    report.rebuilt.sort()
    if strict and report.errors:
        first = sorted(report.errors)[0]
        more = f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
        raise StorageError(f"{report.errors[first]}{more}", first)
    if strict and report.lost:
        first = sorted(report.lost)[0]
        more = f" (and {len(report.lost) - 1} more)" if len(report.lost) > 1 else ""
        raise ComponentLostError(f"{report.lost[first]}{more}", first)
    return report
