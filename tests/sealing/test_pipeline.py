"""The one component pipeline (``auraseal.sealing.pipeline``) and its typed
outcomes: too few intact parts is the only "lost" (exit 4); the environment
failing is exit 5 naming the path; rebuilt bytes that do not match with
enough verified parts are an integrity failure (exit 1)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auraseal.cli import main
from auraseal.errors import IntegrityError, StorageError
from auraseal.manifest import part_name
from auraseal.sealing import component, open_package, scrub, seal_tree, unseal
from auraseal.sealing.component import ComponentSpec
from auraseal.sealing.erasure import ErasureEngine
from auraseal.sealing.pipeline import (
    PartFiles,
    check_parts,
    outcome_of,
    rebuild_original,
    rewrite_parts,
)
from auraseal.sealing.source import MemorySource
from auraseal.sealing.unseal import parts_from_copy

from .helpers import leftovers, seal_bytes, write_tree

DATA = os.urandom(300_000) + b"some text to compress " * 5000


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A package directory and the same package as a zip."""
    tmp = tmp_path_factory.mktemp("pipeline")
    write_tree(tmp / "src", {"c.bin": DATA, "t.txt": b"tiny\n"})
    seal_tree(tmp / "src", tmp / "pkg", zip_path=tmp / "pkg.zip", part_size=16384, coherence=0.75)
    yield tmp / "pkg", tmp / "pkg.zip"
    shutil.rmtree(tmp, ignore_errors=True)


def _drop(spec: ComponentSpec) -> set[int]:
    """Two data parts and one parity part: decoding has to use parity."""
    return {0, spec.k // 2, spec.k}


def test_pipeline_rebuilds_and_rewrites_parts_from_a_memory_source(tmp_path: Path) -> None:
    entry, parts = seal_bytes(DATA, tmp_path / "s", part_size=16384, coherence=0.75)
    spec = ComponentSpec.from_entry(entry)
    lose = _drop(spec)
    members = {part_name("c.bin", n): b for n, b in parts.items() if n not in lose}
    members[part_name("c.bin", 1)] = b"\0" + parts[1][1:]  # corrupt: refused by the check
    got = check_parts(spec, MemorySource(members))
    assert set(got.bad) == lose | {1} and not got.unreadable
    assert len(got.ok) == spec.total - len(lose) - 1 and len(got.good) == spec.k
    rebuild_original(spec, got.good, tmp_path / "out" / "c.bin")
    assert (tmp_path / "out" / "c.bin").read_bytes() == DATA
    paths = {n: tmp_path / "parts" / f"p.{n}" for n in sorted(lose | {1})}
    done, failed = rewrite_parts(spec, got.good, paths)
    assert sorted(done) == sorted(paths) and not failed
    for n, p in paths.items():
        assert p.read_bytes() == parts[n]
    assert not leftovers(tmp_path)


def test_dir_zip_and_memory_sources_rebuild_identical_bytes(
    sealed: tuple[Path, Path], tmp_path: Path
) -> None:
    pkg_dir, pkg_zip = sealed
    outs = []
    for i, where in enumerate((pkg_dir, pkg_zip)):
        with open_package(where) as pkg:
            spec = ComponentSpec.from_entry(pkg.manifest.entry("c.bin"))
            got = check_parts(spec, pkg)
            assert got.ok == list(range(spec.total))
            good = {n: got.good[n] if n in got.good else pkg.reader(part_name("c.bin", n))
                    for n in range(spec.total) if n not in _drop(spec)}
            rebuild_original(spec, good, tmp_path / str(i))
            outs.append((tmp_path / str(i)).read_bytes())
            if i == 0:
                mem = MemorySource({
                    part_name("c.bin", n): (pkg_dir / part_name("c.bin", n)).read_bytes()
                    for n in range(spec.total) if n not in _drop(spec)
                })
                files = PartFiles.spool(
                    pkg.manifest.entry("c.bin"),
                    {n: pkg_dir / part_name("c.bin", n) for n in range(spec.total)
                     if n not in _drop(spec)},
                )
    for i, src in enumerate((mem, files), 2):
        got = check_parts(spec, src)
        assert set(got.bad) == _drop(spec)
        rebuild_original(spec, got.good, tmp_path / str(i))
        outs.append((tmp_path / str(i)).read_bytes())
    assert outs == [DATA] * 4


class _WrongDecoder:
    """An erasure engine that decodes one byte wrong (a broken or
    incompatible engine library); encoding is untouched."""

    def __init__(self, inner: ErasureEngine) -> None:
        self._inner = inner

    def decode(self, *args: Any) -> Any:
        out = bytearray(self._inner.decode(*args))
        out[0] ^= 1
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture
def wrong_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    real = component.get_engine
    monkeypatch.setattr(component, "get_engine", lambda name: _WrongDecoder(real(name)))


def _copy(sealed: tuple[Path, Path], tmp_path: Path) -> Path:
    pkg = tmp_path / "pkg"
    shutil.copytree(sealed[0], pkg)
    (pkg / "c.bin").unlink()
    for n in (0, 1):  # decoding has to use parity
        (pkg / part_name("c.bin", n)).unlink()
    return pkg


def test_unseal_rebuilt_bytes_not_matching_with_enough_parts_exit_1_not_lost(
    sealed: tuple[Path, Path], tmp_path: Path, wrong_decoder: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pkg, out = _copy(sealed, tmp_path), tmp_path / "out"
    with open_package(pkg) as p:
        report = unseal(p, out, strict=False)
        assert report.exit_code == 1 and not report.lost
        got = report.outcomes["c.bin"]
        assert (got.state, got.kind, got.where, got.exit_code) == (
            "failed", "integrity", "c.bin", 1
        )
        with pytest.raises(IntegrityError):
            unseal(p, tmp_path / "out2")
    assert main(["unseal", str(pkg), "-o", str(tmp_path / "out3")]) == 1
    assert "integrity failure: c.bin" in capsys.readouterr().out
    assert not (out / "c.bin").exists() and (out / "t.txt").read_bytes() == b"tiny\n"
    assert not leftovers(tmp_path)


def test_repair_rebuilt_bytes_not_matching_with_enough_parts_exit_1_not_lost(
    sealed: tuple[Path, Path], tmp_path: Path, wrong_decoder: None
) -> None:
    pkg = _copy(sealed, tmp_path)
    assert main(["repair", str(pkg)]) == 1
    assert not (pkg / "c.bin").exists() and not (pkg / part_name("c.bin", 0)).exists()
    assert not leftovers(pkg)


def test_repair_part_replaced_by_a_directory_after_the_check_exits_5_naming_it(
    sealed: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Exactly k good parts; one becomes a directory between the check and
    the decode: an I/O failure naming it, not "lost" (exit 4)."""
    pkg = tmp_path / "pkg"
    shutil.copytree(sealed[0], pkg)
    with open_package(pkg) as p:
        spec = ComponentSpec.from_entry(p.manifest.entry("c.bin"))
    (pkg / "c.bin").unlink()
    for n in range(spec.k, spec.total):
        (pkg / part_name("c.bin", n)).unlink()
    victim = pkg / part_name("c.bin", 3)
    scrub_mod = sys.modules["auraseal.sealing.scrub"]

    real = scrub_mod.check_component

    def check_then_block(*args: Any, **kw: Any) -> Any:
        rep = real(*args, **kw)
        if rep.path == "c.bin":
            victim.unlink()
            victim.mkdir()
        return rep

    monkeypatch.setattr(scrub_mod, "check_component", check_then_block)
    capsys.readouterr()
    assert main(["repair", str(pkg)]) == 5
    err = capsys.readouterr().err
    assert err.startswith("auraseal: error: ") and str(victim) in err
    assert not leftovers(pkg)


def test_outcome_of_maps_each_failure_family() -> None:
    from auraseal.errors import ComponentLostError, UsageError  # noqa: PLC0415

    assert outcome_of("a", StorageError("cannot write: No space left", "/x/a")).exit_code == 5
    assert outcome_of("a", OSError(5, "Input/output error", "/x/a")).where == "/x/a"
    lost = outcome_of("a", ComponentLostError("too few", "a", good=3, k=5))
    assert (lost.state, lost.good, lost.k, lost.exit_code) == ("lost", 3, 5, 4)
    assert outcome_of("a", IntegrityError("mismatch", "a")).exit_code == 1
    with pytest.raises(UsageError):  # anything else is a bug: never "lost"
        outcome_of("a", UsageError("bad", "a"))
    assert scrub  # the module under test is importable alongside


class _EIOAfterCheck:
    """A source whose part ``bad`` reads fine once (the check) and then fails
    with EIO (a disk going bad during the decode)."""

    def __init__(self, inner: MemorySource, bad: str) -> None:
        self.inner = inner
        self.bad = bad

    @property
    def where(self) -> str:
        return self.inner.where

    def size(self, name: str) -> int | None:
        return self.inner.size(name)

    def reader(self, name: str) -> Any:
        read = self.inner.reader(name)
        if name != self.bad or read is None:
            return read
        checked = False

        def flaky(off: int, length: int) -> Any:
            nonlocal checked
            if checked and off < (self.inner.size(name) or 0) - 64:
                raise StorageError("cannot read: Input/output error", f"disk: {name}")
            data = read(off, length)
            if off + len(data) >= (self.inner.size(name) or 0):
                checked = True  # the check read it to the end
            return data

        return flaky


def test_pipeline_read_error_during_decode_is_io_naming_the_part_nothing_written(
    tmp_path: Path,
) -> None:
    entry, parts = seal_bytes(DATA, tmp_path / "s", part_size=16384, coherence=0.75)
    spec = ComponentSpec.from_entry(entry)
    members = {part_name("c.bin", n): b for n, b in parts.items() if n != 0}
    src = _EIOAfterCheck(MemorySource(members), part_name("c.bin", 1))
    got = check_parts(spec, src)
    assert 1 in got.good and not got.unreadable
    dest = tmp_path / "out" / "c.bin"
    with pytest.raises(StorageError) as info:
        rebuild_original(spec, got.good, dest)
    outcome = outcome_of("c.bin", info.value)
    assert (outcome.state, outcome.kind, outcome.exit_code) == ("failed", "io", 5)
    assert outcome.where == "disk: c.bin.part.1"
    assert not dest.exists() and not leftovers(tmp_path / "out")


def test_salvage_of_a_damaged_copy_keeps_matching_parts_in_memory_no_files(
    tmp_path: Path,
) -> None:
    """The client's salvage (``parts_from_copy(keep=...)``): the data parts a
    copy with one damaged region still re-creates come back as bytes equal to
    the sealed parts; the damaged ones are refused; no file is written (one
    file per matching part was most of a client rebuild's cost)."""
    entry, parts = seal_bytes(DATA, tmp_path / "s", part_size=16384, coherence=0.75)
    spec = ComponentSpec.from_entry(entry)
    copy = bytearray(DATA)
    copy[100:4196] = os.urandom(4096)  # inside data part 0 only
    (tmp_path / "copy").write_bytes(bytes(copy))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    held: dict[int, bytes] = {}
    files = parts_from_copy(entry, tmp_path / "copy", scratch, keep=held)
    assert files == {} and list(scratch.iterdir()) == []
    assert 0 not in held and set(held) == set(range(1, spec.k))
    assert all(held[n] == parts[n] for n in held)
