"""Unseal: rebuild every file of a package into a directory, trusting nothing;
and :func:`rebuild_component` for parts that arrived some other way (HTTP)."""

from __future__ import annotations

import base64
import contextlib
import hmac
import io
import os
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from auraseal.errors import (
    AuraSealError,
    ComponentLostError,
    IntegrityError,
    IOFailure,
    StorageError,
)
from auraseal.events import EventSink, emit
from auraseal.integrity import verify_bytes
from auraseal.manifest import FileEntry, part_name
from auraseal.sealing._progress import metered
from auraseal.sealing.codecs import compress, iter_decompress
from auraseal.sealing.component import (
    ComponentSpec,
    WriterFactory,
    check_part_bytes,
    fresh_writer,
    iter_stream,
    lost_error,
)
from auraseal.sealing.package import Package, write_target
from auraseal.sealing.pipeline import (
    FileRange,
    Outcome,
    PartFiles,
    check_parts,
    encode_from_original,
    member_where,
    open_good,
    outcome_of,
    rebuild_original,
    write_verified,
)
from auraseal.sealing.scrub import clean_package_temps
from auraseal.sealing.seal import encode_parts
from auraseal.sealing.source import Buffer, MemorySource, ReadRange

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
#: Temp files of unseal are named with this kind (see :func:`~auraseal._fs.temp_name`).
UNSEAL_KIND = "unseal"


def verify_part(entry: FileEntry, number: int, data: Buffer) -> None:
    """Raise unless ``data`` is exactly part ``number`` of ``entry`` (manifest, header, footer)."""
    check_part_bytes(ComponentSpec.from_entry(entry), number, data)


def rebuild_component(entry: FileEntry, parts: Mapping[int, Buffer]) -> bytes:
    """Rebuild one small file in memory from candidate part bytes.

    Each candidate is checked against the manifest entry and its own footer
    (:func:`~auraseal.sealing.pipeline.check_parts`); corrupt, truncated and
    foreign parts are ignored. With at least ``k`` good parts the stream is
    decoded, decompressed and checked against the file's integrity
    (:class:`~auraseal.errors.IntegrityError` otherwise); with fewer,
    :class:`~auraseal.errors.ComponentLostError` (exit 4) names the coherence.
    Files on disk go through :func:`rebuild_file` (bounded memory).
    """
    spec = ComponentSpec.from_entry(entry)
    names = {part_name(entry.path, n): data for n, data in parts.items() if 0 <= n < spec.total}
    good = check_parts(spec, MemorySource(names, entry.path), [
        n for n in parts if 0 <= n < spec.total
    ]).good
    if len(good) < spec.k:
        raise lost_error(spec, len(good), entry.path)
    out = b"".join(iter_decompress(spec.codec, iter_stream(spec, good), spec.size, spec.path))
    verify_bytes(out, entry.integrity, entry.path)
    return out


def rebuild_file(entry: FileEntry, parts: Mapping[int, Path], dest: Path) -> None:
    """Rebuild one file into ``dest`` from part files already checked against
    the manifest (their whole-file SHA-256; e.g. verified while downloading
    into the client's spool), through the one pipeline
    (:func:`~auraseal.sealing.pipeline.rebuild_original`): bounded memory, a
    temp file next to ``dest`` renamed over it only if the whole file matches
    the manifest (:class:`~auraseal.errors.IntegrityError` otherwise, nothing
    kept). Fewer than ``k`` parts: :class:`~auraseal.errors.ComponentLostError`;
    a read or write failure: :class:`~auraseal.errors.StorageError` naming
    the path.
    """
    spec = ComponentSpec.from_entry(entry)
    source = PartFiles.spool(entry, parts)
    rebuild_original(spec, open_good(spec, source, list(parts)), dest)


def rebuild_from_readers(
    entry: FileEntry, parts: Mapping[int, ReadRange], dest: Path
) -> None:
    """:func:`rebuild_file` from ``read(offset, length)`` callables, one per
    part already verified against the manifest (e.g. slots of the client's
    spool file), through the same pipeline."""
    rebuild_original(ComponentSpec.from_entry(entry), parts, dest)


def parts_from_copy(
    entry: FileEntry,
    copy: Path,
    scratch: Path,
    skip: Collection[int] = (),
    *,
    keep: dict[int, bytes] | None = None,
) -> dict[int, Path]:
    """:func:`parts_from_original` for a copy on disk, in bounded memory.

    The copy is read in slices (zero-padded to the manifest's size if
    shorter), compressed as sealing does into a scratch file in ``scratch``
    (codecs other than ``none``), and encoded stripe by stripe; each data
    part not in ``skip`` is written to ``scratch`` and kept only if its
    whole-file SHA-256 equals the manifest's. Returns those part files by
    number. The caller owns ``scratch`` (and removes it).

    With ``keep``, the matching parts of a small component (compressed up to
    :data:`SALVAGE_IN_MEMORY`) are put there as bytes instead of files (the
    client's own salvage: thousands of small files cost more than the rest).
    """
    spec = ComponentSpec.from_entry(entry)
    nums = [n for n in range(min(spec.k, spec.total)) if n not in skip]
    if not nums:
        return {}
    stem = Path(spec.path).name
    read = FileRange(copy)
    paths = {n: scratch / f"{stem}.salvaged.{n}" for n in nums}
    # small components: candidates in memory, a file only for a match
    # (creating a file per candidate was most of a client rebuild's cost)
    small = spec.plan.compressed_size <= SALVAGE_IN_MEMORY
    writer: WriterFactory = fresh_writer
    if small:
        writer = _kept_if_committed if keep is None else _held_in(keep, paths)
    got = encode_from_original(
        spec, read, os.fstat(read.fd).st_size, paths, scratch, "salvage", writer,
        writeback=False,
    )
    if got is None:
        return {}
    return {n: paths[n] for n in got[0] if keep is None or n not in keep}


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


def _held_in(keep: dict[int, bytes], paths: Mapping[int, Path]) -> WriterFactory:
    """A writer that puts a committed (matching) candidate into ``keep`` by its
    part number; a refused one leaves nothing."""
    number = {p: n for n, p in paths.items()}

    @contextlib.contextmanager
    def writer(path: Path) -> Iterator[BinaryIO]:
        buf = io.BytesIO()
        yield buf
        keep[number[path]] = buf.getvalue()

    return writer


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
    #: integrity failures (path -> what): rebuilt from enough verified parts,
    #: yet the bytes do not match the manifest
    damaged: dict[str, str] = field(default_factory=dict)
    #: every component's typed outcome, by path
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        self.outcomes[outcome.path] = outcome
        if outcome.state == "intact":
            self.copied.append(outcome.path)
        elif outcome.ok:
            self.rebuilt.append(outcome.path)
        elif outcome.state == "lost":
            self.lost[outcome.path] = outcome.reason
        elif outcome.kind == "io":
            self.errors[outcome.where] = outcome.reason
        else:
            self.damaged[outcome.path] = outcome.reason

    @property
    def exit_code(self) -> int:
        """5 if reading or writing local storage failed, else 1 if a rebuilt
        file did not match the manifest, else 4 if a file had too few intact
        parts, else 0."""
        if self.errors:
            return 5
        if self.damaged:
            return 1
        return 4 if self.lost else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "out": self.out,
            "copied": self.copied,
            "rebuilt": self.rebuilt,
            "lost": self.lost,
            "errors": self.errors,
            "damaged": self.damaged,
            "exit_code": self.exit_code,
        }


def _unseal_one(pkg: Package, entry: FileEntry, out: Path, pool: Executor) -> Outcome:
    try:
        return _unseal_component(pkg, entry, out, pool)
    except (AuraSealError, OSError) as exc:
        return outcome_of(entry.path, exc)


def _unseal_component(pkg: Package, entry: FileEntry, out: Path, pool: Executor) -> Outcome:
    """Copy or rebuild one file; every failure is a typed outcome."""
    dest = write_target(out, entry.path)
    io_error: Outcome | None = None
    if pkg.size(entry.path) == entry.size:
        try:
            write_verified(
                dest, pkg.iter_chunks(entry.path), entry.integrity, entry.path, kind=UNSEAL_KIND
            )
            return Outcome(entry.path, "intact")
        except IntegrityError:
            pass  # fall back to the parts
        except (IOFailure, OSError) as exc:
            io_error = outcome_of(entry.path, exc)  # a write failure recurs with the parts
    else:
        why = pkg.unreadable(entry.path)
        if why is not None:
            io_error = Outcome.failed(entry.path, member_where(pkg, entry.path), why, "io")
    if entry.recovery is None:
        return io_error or Outcome.lost(entry.path, 0, 1, "damaged and not sealed (no parts)")
    spec = ComponentSpec.from_entry(entry)
    parts = check_parts(spec, pkg)
    if len(parts.ok) < spec.k:
        if io_error is not None:
            return io_error
        if parts.unreadable:  # too few parts could be *read*: I/O, not lost data
            where, what = sorted(parts.unreadable.items())[0]
            return Outcome.failed(entry.path, where, what, "io")
        return outcome_of(entry.path, lost_error(spec, len(parts.ok), entry.path))
    rebuild_original(spec, parts.good, dest, pool=pool, kind=UNSEAL_KIND)
    return Outcome(entry.path, "rebuilt")


def unseal(
    pkg: Package,
    out: Path,
    *,
    jobs: int | None = None,
    progress: Progress = None,
    strict: bool = True,
    events: EventSink | None = None,
) -> UnsealReport:
    """Write every file of ``pkg`` into ``out`` (each atomically, each verified).

    A file whose original is intact is copied; otherwise it is rebuilt from
    its good parts. Files that cannot be rebuilt are left out of ``out``; with
    ``strict`` (the default) a :class:`~auraseal.errors.ComponentLostError`
    naming them and their coherence is raised after all others are written.
    A failure to read the package or to write ``out`` (a directory in the
    way, a full disk) goes to ``report.errors`` (exit 5); with ``strict`` a
    :class:`~auraseal.errors.StorageError` naming the first path is raised.
    A file rebuilt from enough verified parts that still does not match the
    manifest goes to ``report.damaged`` (exit 1, never "lost"). Every
    component's typed outcome is in ``report.outcomes``.
    Each file is written through a temp file (kind ``unseal``); those of
    killed unseals are removed from ``out`` first. A ``package.unseal`` event
    goes to ``events`` (if given).
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

        def one(entry: FileEntry) -> Outcome:
            got = _unseal_one(pkg, entry, out, stripes)
            done(entry.path)
            return got

        for outcome in comps.map(one, entries):
            report.add(outcome)
    report.copied.sort()
    report.rebuilt.sort()
    emit(events, "package.unseal", {
        "package": report.package, "output": str(out), "copied": len(report.copied),
        "rebuilt": report.rebuilt, "lost": sorted(report.lost), "errors": len(report.errors),
    })
    if strict and report.errors:
        first = sorted(report.errors)[0]
        more = f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
        raise StorageError(f"{report.errors[first]}{more}", first)
    if strict and report.damaged:
        first = sorted(report.damaged)[0]
        more = f" (and {len(report.damaged) - 1} more)" if len(report.damaged) > 1 else ""
        raise IntegrityError(f"{report.damaged[first]}{more}", first)
    if strict and report.lost:
        first = sorted(report.lost)[0]
        more = f" (and {len(report.lost) - 1} more)" if len(report.lost) > 1 else ""
        raise ComponentLostError(f"{report.lost[first]}{more}", first)
    return report
