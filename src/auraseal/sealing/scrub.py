"""Scrub (check everything, change nothing) and repair (rebuild in place)."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auraseal._fs import atomic_writer, clean_stale_temps, make_temp_dir, walk_files
from auraseal.errors import (
    AuraSealError,
    IOFailure,
    StorageError,
    UsageError,
)
from auraseal.events import EventSink, emit
from auraseal.integrity import parse_integrity
from auraseal.manifest import FileEntry, part_name
from auraseal.sealing._progress import metered
from auraseal.sealing.component import ComponentSpec, lost_error
from auraseal.sealing.package import Package, extract_zip, open_package, write_target
from auraseal.sealing.pipeline import (
    BIG,
    Outcome,
    check_parts,
    decompress_kept,
    encode_from_original,
    member_where,
    open_good,
    outcome_of,
    rebuild_original,
    rewrite_parts,
    write_verified,
)
from auraseal.sealing.seal import write_zip
from auraseal.sealing.source import Buffer

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
#: Largest component whose decoded stream repair keeps in memory (overlapped
#: repair: parts rebuilt while the original is hashed). Bigger ones check the
#: original first, then decode in a bounded window (memory over speed).
_KEEP_LIMIT = 64 << 20
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


def _io_problem(pkg: Package, name: str, exc: BaseException) -> IOProblem:
    """(where, what) if ``exc`` is a read failure (I/O, exit 5), else None."""
    if isinstance(exc, IOFailure):
        return exc.where or member_where(pkg, name), exc.what
    if isinstance(exc, OSError):
        return exc.filename or member_where(pkg, name), f"cannot read: {exc.strerror or exc}"
    return None


def _check_original(pkg: Package, entry: FileEntry) -> tuple[str, str, IOProblem]:
    size = pkg.size(entry.path)
    if size is None:
        why = pkg.unreadable(entry.path)
        if why is None:
            return "missing", "missing", None
        return "corrupt", why, (member_where(pkg, entry.path), why)
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


def _check_parts(pkg: Package, spec: ComponentSpec, rep: ComponentReport) -> None:
    parts = check_parts(spec, pkg)
    rep.good_parts = parts.ok
    rep.bad_parts = parts.bad
    rep.unreadable.update(parts.unreadable)


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
    #: what could not be rebuilt (member -> why): too few intact parts (exit 4)
    failed: dict[str, str] = field(default_factory=dict)
    #: I/O failures (where -> what): a read or write of local storage failed
    errors: dict[str, str] = field(default_factory=dict)
    #: integrity failures (member -> what): rebuilt from enough verified parts,
    #: the bytes still do not match the manifest (exit 1)
    damaged: dict[str, str] = field(default_factory=dict)
    good: int = 0
    k: int = 0

    def note(self, exc: BaseException) -> None:
        """Record a pipeline failure by its type (see
        :func:`~auraseal.sealing.pipeline.outcome_of`; anything else propagates)."""
        got = outcome_of(self.path, exc)
        if got.state == "lost":
            self.failed[self.path] = got.reason
        elif got.kind == "io":
            self.errors[got.where] = got.reason
        else:
            self.damaged[got.where] = got.reason

    @property
    def outcome(self) -> Outcome:
        """This component's typed outcome."""
        if self.errors:
            where, what = sorted(self.errors.items())[0]
            return Outcome.failed(self.path, where, what, "io")
        if self.damaged:
            where, what = sorted(self.damaged.items())[0]
            return Outcome.failed(self.path, where, what, "integrity")
        if self.failed:
            return Outcome.lost(self.path, self.good, self.k, next(iter(self.failed.values())))
        if self.path in self.rewritten:
            return Outcome(self.path, "rebuilt", rewritten=tuple(self.rewritten))
        if self.rewritten:
            return Outcome(self.path, "parts_rewritten", rewritten=tuple(self.rewritten))
        return Outcome(self.path, "intact")

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "state_before": self.state_before,
            "coherence_before": self.coherence_before,
            "rewritten": self.rewritten,
            "failed": self.failed,
            "errors": self.errors,
            "damaged": self.damaged,
            "outcome": self.outcome.to_dict(),
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
    def damaged(self) -> dict[str, str]:
        """Integrity failures (member -> what); see :attr:`exit_code`."""
        return {w: e for c in self.components for w, e in c.damaged.items()}

    @property
    def outcomes(self) -> list[Outcome]:
        return [c.outcome for c in self.components]

    @property
    def exit_code(self) -> int:
        """5 if reading or writing local storage failed, else 1 if rebuilt
        bytes did not match the manifest, else 4 if something could not be
        rebuilt (too few intact parts), else 0."""
        if self.errors:
            return 5
        if self.damaged:
            return 1
        return 4 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "rewritten": self.rewritten,
            "failed": self.failed,
            "errors": self.errors,
            "damaged": self.damaged,
            "exit_code": self.exit_code,
            "components": [c.to_dict() for c in self.components if c.state_before != "intact"],
        }

    def summary(self) -> str:
        lines = [f"rewrote {n}" for n in self.rewritten]
        lines += [f"could not rebuild {n}: {r}" for n, r in self.failed.items()]
        lines += [f"integrity failure: {w}: {e}" for w, e in self.damaged.items()]
        lines += [f"I/O error: {w}: {e}" for w, e in self.errors.items()]
        lines.append(
            f"{len(self.rewritten)} files rewritten, {len(self.failed)} not rebuildable"
            + (f", {len(self.damaged)} integrity failures" if self.damaged else "")
            + (f", {len(self.errors)} I/O errors" if self.errors else "")
        )
        return "\n".join(lines)


def _rebuild_in_place(  # noqa: PLR0917 - private
    pkg: Package,
    spec: ComponentSpec,
    rep: ComponentReport,
    pool: Executor | None,
    out: ComponentRepair,
    keep: list[Buffer] | None = None,
) -> None:
    """Rebuild the bad parts (and the original if bad) from ``k`` good parts,
    through the one pipeline. With ``keep``, the original is not touched: the
    decoded stripes are appended to ``keep`` instead (see
    :func:`_repair_overlapped`). A good part that cannot be opened any more
    is an I/O failure naming it, not lost data."""
    assert pkg.root is not None
    if rep.good < spec.k:
        raise lost_error(spec, rep.good, spec.path)
    parts = open_good(spec, pkg, rep.good_parts[: spec.k])
    paths = {n: write_target(pkg.root, part_name(spec.path, n)) for n in sorted(rep.bad_parts)}
    if keep is None and rep.original != "good":
        dest = write_target(pkg.root, spec.path)
        done, failed = rebuild_original(
            spec, parts, dest, pool=pool, kind=REPAIR_KIND, rewrite=paths
        )
        out.rewritten.append(spec.path)
    else:
        done, failed = rewrite_parts(spec, parts, paths, pool=pool, kind=REPAIR_KIND, keep=keep)
    out.rewritten += [part_name(spec.path, n) for n in sorted(done)]
    # a part re-encoded from k verified parts that does not match: integrity
    out.damaged.update({part_name(spec.path, n): r for n, r in failed.items()})


def _reseal_parts(
    pkg: Package, spec: ComponentSpec, rep: ComponentReport, out: ComponentRepair
) -> None:
    """Fewer than k good parts but the original is intact: encode it again."""
    assert pkg.root is not None
    read, have = pkg.reader(spec.path), pkg.size(spec.path)
    if read is None or have is None:
        raise StorageError("original vanished during repair", member_where(pkg, spec.path))
    paths = {n: write_target(pkg.root, part_name(spec.path, n)) for n in sorted(rep.bad_parts)}
    got = encode_from_original(
        spec, read, have, paths, write_target(pkg.root, spec.path).parent, REPAIR_KIND,
        _repair_writer,
    )
    if got is None:
        for n in paths:
            out.failed[part_name(spec.path, n)] = "re-compression differs from the sealed stream"
        return
    done, failed = got
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
    out = ComponentRepair(entry.path, "recoverable", rep.coherence, good=rep.good, k=spec.k)
    kept: list[Buffer] = []
    try:
        _rebuild_in_place(pkg, spec, rep, pool, out, keep=kept)
        _set_original(rep, fut.result())
        if rep.original != "good":
            data = decompress_kept(spec, kept)
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
    out = ComponentRepair(entry.path, rep.state, rep.coherence, good=rep.good, k=rep.k)
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
            _rebuild_in_place(pkg, spec, rep, pool, out)
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
