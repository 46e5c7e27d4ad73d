"""Scrub (check everything, change nothing) and repair (rebuild in place)."""

from __future__ import annotations

import functools
import hashlib
import os
import queue
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auraseal._fs import atomic_writer, clean_stale_temps, make_temp_dir, walk_files
from auraseal.errors import (
    AuraSealError,
    IntegrityError,
    IOFailure,
    StorageError,
    UsageError,
)
from auraseal.events import EventSink, emit
from auraseal.integrity import parse_integrity
from auraseal.manifest import FileEntry, part_name
from auraseal.sealing._progress import metered
from auraseal.sealing.codecs import compress, iter_decompress
from auraseal.sealing.component import (
    ComponentSpec,
    PartsWriter,
    ReadRange,
    check_part_stream,
    lost_error,
    ordered_map,
    start_writeback,
)
from auraseal.sealing.package import Package, extract_zip, open_package, write_target
from auraseal.sealing.seal import encode_parts, write_zip

__all__ = [
    "REPAIR_KIND",
    "ComponentReport",
    "RepairReport",
    "ScrubReport",
    "check_component",
    "clean_package_temps",
    "repair",
    "repair_path",
    "scrub",
]

Progress = Callable[[int], None] | None
Buffer = bytes | bytearray | memoryview
BIG = 4 << 20
_KICK = 16 << 20
#: Largest component whose decoded stream repair keeps in memory (overlapped repair).
_KEEP_LIMIT = 512 << 20
#: Temp files of repair are named with this kind (see :func:`~auraseal._fs.temp_name`).
REPAIR_KIND = "repair"
_repair_writer = functools.partial(atomic_writer, kind=REPAIR_KIND)


@dataclass
class ComponentReport:
    """What scrub found for one file of the package."""

    path: str
    size: int
    original: str  # "good" | "missing" | "corrupt"
    original_reason: str = ""
    k: int = 0
    total: int = 0
    good_parts: list[int] = field(default_factory=list)
    bad_parts: dict[int, str] = field(default_factory=dict)
    #: members that are there but could not be read (where -> what): an I/O
    #: failure, not damaged data
    unreadable: dict[str, str] = field(default_factory=dict)

    @property
    def sealed(self) -> bool:
        return self.total > 0

    @property
    def good(self) -> int:
        return len(self.good_parts)

    @property
    def coherence(self) -> str:
        return f"{self.good}/{self.total}"

    @property
    def state(self) -> str:
        """``intact``, ``recoverable`` or ``lost``."""
        if self.original == "good" and not self.bad_parts:
            return "intact"
        if self.sealed and self.good >= self.k:
            return "recoverable"
        if self.original == "good":
            return "recoverable"
        return "lost"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "state": self.state,
            "original": self.original,
            "original_reason": self.original_reason,
            "k": self.k,
            "total_parts": self.total,
            "good_parts": self.good,
            "coherence": self.coherence,
            "bad_parts": {str(n): r for n, r in sorted(self.bad_parts.items())},
            "unreadable": dict(sorted(self.unreadable.items())),
        }


@dataclass
class ScrubReport:
    package: str
    components: list[ComponentReport]

    def by_state(self, state: str) -> list[ComponentReport]:
        return [c for c in self.components if c.state == state]

    @property
    def exit_code(self) -> int:
        """4 if a file has too few intact parts, 5 if too few could be *read*
        (an unreadable member: I/O, not lost data), 1 if damaged but
        recoverable, else 0."""
        lost = self.by_state("lost")
        if lost:
            return 5 if any(c.unreadable for c in lost) else 4
        if self.by_state("recoverable"):
            return 1
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "intact": len(self.by_state("intact")),
            "recoverable": len(self.by_state("recoverable")),
            "lost": len(self.by_state("lost")),
            "exit_code": self.exit_code,
            "components": [c.to_dict() for c in self.components],
        }

    def summary(self) -> str:
        lines = []
        for c in self.components:
            if c.state == "intact":
                continue
            what = []
            if c.original != "good":
                what.append(f"file {c.original}")
            if c.bad_parts:
                what.append(f"{len(c.bad_parts)} bad parts")
            lines.append(
                f"{c.state:11} {c.path}: {', '.join(what)}; coherence {c.coherence} (needs {c.k})"
            )
        d = self.to_dict()
        lines.append(
            f"{len(self.components)} files: {d['intact']} intact, {d['recoverable']} "
            f"recoverable, {d['lost']} lost"
        )
        return "\n".join(lines)


#: An I/O failure met while checking a member: (where, what), or None.
IOProblem = tuple[str, str] | None


def _member_where(pkg: Package, name: str) -> str:
    return str(pkg.root / name) if pkg.root is not None else f"{pkg.where}: {name}"


def _io_problem(pkg: Package, name: str, exc: BaseException) -> IOProblem:
    """(where, what) if ``exc`` is a read failure (I/O, exit 5), else None."""
    if isinstance(exc, IOFailure):
        return exc.where or _member_where(pkg, name), exc.what
    if isinstance(exc, OSError):
        return exc.filename or _member_where(pkg, name), f"cannot read: {exc.strerror or exc}"
    return None


def _check_original(pkg: Package, entry: FileEntry) -> tuple[str, str, IOProblem]:
    size = pkg.size(entry.path)
    if size is None:
        why = pkg.unreadable(entry.path)
        if why is None:
            return "missing", "missing", None
        return "corrupt", why, (_member_where(pkg, entry.path), why)
    if size != entry.size:
        return "corrupt", f"{size} bytes, manifest says {entry.size}", None
    integ = parse_integrity(entry.integrity, entry.path)
    h = hashlib.new(integ.algorithm)
    try:
        for chunk in pkg.iter_chunks(entry.path):
            h.update(chunk)
    except (AuraSealError, OSError) as exc:
        return "corrupt", f"unreadable: {exc}", _io_problem(pkg, entry.path, exc)
    if not integ.matches(h.digest()):
        return "corrupt", "digest mismatch", None
    return "good", "", None


def _check_part(pkg: Package, spec: ComponentSpec, n: int) -> tuple[str, IOProblem]:
    name = part_name(spec.path, n)
    size = pkg.size(name)
    if size is None:
        why = pkg.unreadable(name)
        return ("missing", None) if why is None else (why, (_member_where(pkg, name), why))
    if size != spec.parts[n].size:
        return f"{size} bytes, manifest says {spec.parts[n].size}", None
    try:
        check_part_stream(spec, n, pkg.iter_chunks(name), name)
    except (AuraSealError, OSError) as exc:
        return getattr(exc, "what", str(exc)), _io_problem(pkg, name, exc)
    return "", None


def _check_parts(pkg: Package, spec: ComponentSpec, rep: ComponentReport) -> None:
    for n in range(spec.total):
        reason, problem = _check_part(pkg, spec, n)
        if reason:
            rep.bad_parts[n] = reason
        else:
            rep.good_parts.append(n)
        if problem is not None:
            rep.unreadable[problem[0]] = problem[1]


def _set_original(rep: ComponentReport, result: tuple[str, str, IOProblem]) -> None:
    rep.original, rep.original_reason, problem = result
    if problem is not None:
        rep.unreadable[problem[0]] = problem[1]


def check_component(
    pkg: Package, entry: FileEntry, pool: Executor | None = None
) -> ComponentReport:
    """Check a file and all of its parts (reads everything, changes nothing)."""
    big = pool is not None and entry.size >= BIG
    fut = pool.submit(_check_original, pkg, entry) if big and pool is not None else None
    rep = ComponentReport(entry.path, entry.size, "good")
    if entry.recovery is not None:
        spec = ComponentSpec.from_entry(entry)
        rep.k, rep.total = spec.k, spec.total
        _check_parts(pkg, spec, rep)
    _set_original(rep, fut.result() if fut else _check_original(pkg, entry))
    return rep


def _run(pkg: Package, fn: Callable[[FileEntry, Executor], Any], jobs: int | None) -> list[Any]:
    n = max(1, jobs or os.cpu_count() or 1)
    entries = sorted(pkg.manifest.files, key=lambda e: -e.size)
    with (
        ThreadPoolExecutor(n, thread_name_prefix="scrub") as comps,
        ThreadPoolExecutor(n, thread_name_prefix="stripe") as stripes,
    ):
        out = list(comps.map(lambda e: fn(e, stripes), entries))
    return sorted(out, key=lambda r: str(r.path))


def scrub(pkg: Package, *, jobs: int | None = None, progress: Progress = None) -> ScrubReport:
    """Check every file and part of ``pkg``; report intact / recoverable / lost."""

    with metered(pkg, progress) as done:

        def one(entry: FileEntry, pool: Executor) -> ComponentReport:
            rep = check_component(pkg, entry, pool)
            done(entry.path)
            return rep

        return ScrubReport(pkg.where, _run(pkg, one, jobs))


# --- repair -----------------------------------------------------------------------


@dataclass
class ComponentRepair:
    path: str
    state_before: str
    coherence_before: str
    rewritten: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    #: I/O failures (where -> what): a read or write of local storage failed
    errors: dict[str, str] = field(default_factory=dict)

    def note(self, exc: BaseException) -> None:
        """Record a failure: I/O ones in ``errors``, the rest in ``failed``."""
        if isinstance(exc, IOFailure):
            self.errors[exc.where or self.path] = exc.what
        elif isinstance(exc, OSError):
            self.errors[str(exc.filename or self.path)] = str(exc.strerror or exc)
        else:
            self.failed[self.path] = getattr(exc, "what", str(exc))

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "state_before": self.state_before,
            "coherence_before": self.coherence_before,
            "rewritten": self.rewritten,
            "failed": self.failed,
            "errors": self.errors,
        }


@dataclass
class RepairReport:
    package: str
    components: list[ComponentRepair]

    @property
    def rewritten(self) -> list[str]:
        return [n for c in self.components for n in c.rewritten]

    @property
    def failed(self) -> dict[str, str]:
        return {n: r for c in self.components for n, r in c.failed.items()}

    @property
    def errors(self) -> dict[str, str]:
        """I/O failures (where -> what); see :attr:`exit_code`."""
        return {w: e for c in self.components for w, e in c.errors.items()}

    @property
    def exit_code(self) -> int:
        """5 if reading or writing local storage failed, else 4 if something
        could not be rebuilt (too few intact parts), else 0."""
        if self.errors:
            return 5
        return 4 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "rewritten": self.rewritten,
            "failed": self.failed,
            "errors": self.errors,
            "exit_code": self.exit_code,
            "components": [c.to_dict() for c in self.components if c.state_before != "intact"],
        }

    def summary(self) -> str:
        lines = [f"rewrote {n}" for n in self.rewritten]
        lines += [f"could not rebuild {n}: {r}" for n, r in self.failed.items()]
        lines += [f"I/O error: {w}: {e}" for w, e in self.errors.items()]
        lines.append(
            f"{len(self.rewritten)} files rewritten, {len(self.failed)} not rebuildable"
            + (f", {len(self.errors)} I/O errors" if self.errors else "")
        )
        return "\n".join(lines)


def _sources(pkg: Package, spec: ComponentSpec, good: list[int]) -> dict[int, ReadRange]:
    out: dict[int, ReadRange] = {}
    for n in good:
        r = pkg.reader(part_name(spec.path, n))
        if r is not None:
            out[n] = r
    return out


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
            if errors:
                break
            for q in queues:
                q.put(chunk)
    finally:
        for q in queues:
            q.put(None)
        for w in workers:
            w.join()
    if errors:
        raise errors[0]


def _decode_and_rebuild(  # noqa: PLR0917 - private
    pkg: Package,
    spec: ComponentSpec,
    rep: ComponentReport,
    pool: Executor | None,
    out: ComponentRepair,
    keep: list[Buffer] | None = None,
) -> None:
    """Rebuild the bad parts (and the original if bad) from ``k`` good parts.

    With ``keep``, the original is not touched: the decoded stripes are
    appended to ``keep`` instead (see :func:`_repair_overlapped`).
    """
    assert pkg.root is not None
    sources = _sources(pkg, spec, rep.good_parts)
    if len(sources) < spec.k:
        raise lost_error(spec, len(sources), spec.path)
    chosen = sorted(sources)[: spec.k]
    engine = spec.engine()
    hdr = spec.header(0)
    spans = spec.spans()
    k, m = spec.plan.k, spec.plan.m
    missing = sorted(rep.bad_parts)

    def one(i: int) -> tuple[Buffer, list[Buffer] | None]:
        off, length = hdr.fragment_span(i)
        stripe = engine.decode(k, m, {n: sources[n](off, length) for n in chosen}, spans[i][1])
        return stripe, (engine.encode(k, m, stripe) if missing else None)

    paths = {n: write_target(pkg.root, part_name(spec.path, n)) for n in missing}
    expected = {n: spec.part_digest(n) for n in missing}
    threads = 2 if pool is not None and spec.size >= BIG else 1
    with PartsWriter(spec, paths, threads, _repair_writer) as writer:

        def stripes() -> Iterator[Buffer]:
            for stripe, frags in ordered_map(pool, one, range(len(spans))):
                if frags is not None:
                    writer.add(frags)
                yield stripe

        if keep is not None:
            keep.extend(stripes())
        elif rep.original != "good":
            data = iter_decompress(spec.codec, stripes(), spec.size, spec.path)
            write_verified(
                write_target(pkg.root, spec.path),
                data,
                spec.integrity,
                spec.path,
                threaded=spec.size >= BIG,
                kind=REPAIR_KIND,
            )
            out.rewritten.append(spec.path)
        else:
            for _ in stripes():
                pass
        done, failed = writer.finish(expected)
    out.rewritten += [part_name(spec.path, n) for n in sorted(done)]
    out.failed.update({part_name(spec.path, n): r for n, r in failed.items()})


def _reseal_parts(
    pkg: Package, spec: ComponentSpec, rep: ComponentReport, out: ComponentRepair
) -> None:
    """Fewer than k good parts but the original is intact: encode it again."""
    assert pkg.root is not None
    data = pkg.read_bytes(spec.path)
    if data is None:
        raise StorageError("original vanished during repair", spec.path)
    stream: Buffer = compress(spec.codec, data)
    if len(stream) != spec.plan.compressed_size:
        for n in sorted(rep.bad_parts):
            out.failed[part_name(spec.path, n)] = "re-compression differs from the sealed stream"
        return
    paths = {n: write_target(pkg.root, part_name(spec.path, n)) for n in rep.bad_parts}
    expected = {n: spec.part_digest(n) for n in rep.bad_parts}
    done, failed = encode_parts(spec, stream, paths, None, expected=expected, writer=_repair_writer)
    out.rewritten += [part_name(spec.path, n) for n in sorted(done)]
    out.failed.update({part_name(spec.path, n): r for n, r in failed.items()})


def _repair_overlapped(pkg: Package, entry: FileEntry, pool: Executor) -> ComponentRepair | None:
    """Repair of a big component whose parts need rebuilding: the bad parts are
    decoded and rewritten while the original is still being hashed (the two
    run on both cores), keeping the decoded stream in memory; the original is
    then rewritten from it only if its check failed. ``None`` when this does
    not apply (no bad part, or fewer than ``k`` good ones)."""
    assert pkg.root is not None
    fut = pool.submit(_check_original, pkg, entry)
    spec = ComponentSpec.from_entry(entry)
    rep = ComponentReport(entry.path, entry.size, "good", k=spec.k, total=spec.total)
    _check_parts(pkg, spec, rep)
    if not rep.bad_parts or rep.good < spec.k:
        fut.result()
        return None
    out = ComponentRepair(entry.path, "recoverable", rep.coherence)
    kept: list[Buffer] = []
    try:
        _decode_and_rebuild(pkg, spec, rep, pool, out, keep=kept)
        _set_original(rep, fut.result())
        if rep.original != "good":
            data = iter_decompress(spec.codec, iter(kept), spec.size, spec.path)
            write_verified(
                write_target(pkg.root, spec.path),
                data,
                spec.integrity,
                spec.path,
                threaded=True,
                kind=REPAIR_KIND,
            )
            out.rewritten.insert(0, spec.path)
    except (AuraSealError, OSError) as exc:
        out.note(exc)
    finally:
        fut.cancel()  # only matters after an error: the hash is not waited for
    return out


def repair_component(
    pkg: Package, entry: FileEntry, pool: Executor | None = None
) -> ComponentRepair:
    """Rebuild whatever of one file and its parts is missing or corrupt, in place."""
    overlap = pool is not None and entry.recovery is not None and pkg.root is not None
    if overlap and pool is not None and BIG <= entry.size <= _KEEP_LIMIT:
        done = _repair_overlapped(pkg, entry, pool)
        if done is not None:
            return done
    rep = check_component(pkg, entry, pool)
    out = ComponentRepair(entry.path, rep.state, rep.coherence)
    if rep.state == "intact":
        return out
    if rep.state == "lost":
        if rep.unreadable:
            # too few parts could be *read*: an I/O failure, not lost data
            out.errors.update(rep.unreadable)
            return out
        why = f"lost: coherence {rep.coherence}, {rep.k} needed" if rep.sealed else "lost"
        out.failed[entry.path] = why
        for n in rep.bad_parts:
            out.failed[part_name(entry.path, n)] = why
        return out
    spec = ComponentSpec.from_entry(entry)
    try:
        if rep.good >= spec.k:
            _decode_and_rebuild(pkg, spec, rep, pool, out)
        else:
            _reseal_parts(pkg, spec, rep, out)
    except (AuraSealError, OSError) as exc:
        out.note(exc)
    return out


def _member_dirs(root: Path, names: Iterable[str]) -> set[Path]:
    dirs = set()
    for name in names:
        try:
            dirs.add(write_target(root, name).parent)
        except (AuraSealError, OSError):
            continue
    return dirs


def clean_package_temps(root: Path, names: Iterable[str], kind: str) -> list[str]:
    """Remove the stale temp files of ``kind`` (left by killed runs, see
    :func:`~auraseal._fs.clean_stale_temps`) from every directory of ``root``
    that holds one of ``names``; returns what was removed (relative names)."""
    removed = []
    real = root.resolve()
    for d in sorted(_member_dirs(root, names)):
        for name in clean_stale_temps(d, {kind}):
            removed.append((d / name).relative_to(real).as_posix())
    return removed


def repair(
    pkg: Package, *, jobs: int | None = None, progress: Progress = None,
    events: EventSink | None = None,
) -> RepairReport:
    """Repair a package directory in place (see :func:`repair_path` for zips).

    The temp files of killed repairs are removed first. Each file is rebuilt
    through a temp file (kind ``repair``) renamed into place only when it
    matches the manifest. A read or write failure of local storage is
    reported in ``errors`` (exit 5), never as lost data (exit 4). A
    ``package.repair`` event goes to ``events`` (if given).
    """
    if pkg.root is None:
        raise UsageError(
            "repair works on a package directory (use repair_path for a zip)", pkg.where
        )
    clean_package_temps(pkg.root, pkg.manifest.paths(), REPAIR_KIND)

    with metered(pkg, progress) as done:

        def one(entry: FileEntry, pool: Executor) -> ComponentRepair:
            r = repair_component(pkg, entry, pool)
            done(entry.path)
            return r

        report = RepairReport(pkg.where, _run(pkg, one, jobs))
    _record(events, report)
    return report


def repair_path(
    path: Path, *, jobs: int | None = None, progress: Progress = None,
    events: EventSink | None = None, **open_kw: Any
) -> RepairReport:
    """Repair a package directory, or a zip (rewritten atomically next to itself)."""
    path = Path(path)
    with open_package(path, **open_kw) as pkg:
        if not pkg.is_zip:
            return repair(pkg, jobs=jobs, progress=progress, events=events)
        clean_stale_temps(path.parent, {REPAIR_KIND})
        tmp = make_temp_dir(path.parent, path.name, REPAIR_KIND)
        try:
            try:
                extract_zip(pkg, tmp)
            except StorageError as exc:  # e.g. no room to extract: name the zip's member
                raise StorageError(exc.what, _zip_where(exc.where, tmp, path)) from exc
            with open_package(tmp, **open_kw) as inner:
                report = repair(inner, jobs=jobs, progress=progress)
            report.package = str(path)
            for c in report.components:
                c.errors = {_zip_where(w, tmp, path): e for w, e in c.errors.items()}
            if report.rewritten:
                write_zip(tmp, walk_files(tmp), path, kind=REPAIR_KIND)
            _record(events, report)
            return report
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _zip_where(where: str, tmp: Path, zip_path: Path) -> str:
    """``<zip>: <member>`` for a path inside the zip's temp extraction ``tmp``."""
    for prefix in (str(tmp.resolve()), str(tmp)):
        if where.startswith(prefix + os.sep):
            return f"{zip_path}: {where[len(prefix) + 1 :]}"
    return where


def _record(events: EventSink | None, report: RepairReport) -> None:
    emit(
        events,
        "package.repair",
        {"package": report.package, "rewritten": report.rewritten, "failed": sorted(report.failed)},
    )
