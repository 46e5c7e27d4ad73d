"""Seal, scrub, repair and unseal whole packages (directories and zips), via
the library and the CLI, with real files and injected damage."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from auraseal.cli import main
from auraseal.errors import ComponentLostError, StorageError, UsageError
from auraseal.events import ListSink
from auraseal.integrity import parse_integrity
from auraseal.manifest import MANIFEST_NAME
from auraseal.sealing import open_package, repair, repair_path, scrub, seal_tree, unseal
from auraseal.sealing import seal as seal_mod

from .helpers import leftovers, write_tree

FILES = {
    "index.html": b"<!doctype html><title>x</title>" * 200,
    "js/app.js": b"console.log('auraseal');\n" * 3000,
    "bin/blob.dat": os.urandom(300_000),
    "empty": b"",
    "one": b"1",
}


@pytest.fixture
def sealed(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    write_tree(src, FILES)
    seal_tree(src, tmp_path / "pkg", name="t", zip_path=tmp_path / "pkg.zip")
    return tmp_path / "pkg"


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_package_layout_is_originals_parts_and_manifest(sealed: Path) -> None:
    names = set(_tree(sealed))
    assert MANIFEST_NAME in names
    for rel, data in FILES.items():
        assert (sealed / rel).read_bytes() == data  # servable as-is
        assert f"{rel}.part.0" in names and f"{rel}.part.1" in names
    assert not leftovers(sealed)
    assert oct((sealed).stat().st_mode & 0o777) == "0o755"


def test_seal_refuses_overlap_nonempty_output_and_part_name_collisions(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a": b"1", "a.part.0": b"2"})
    with pytest.raises(UsageError, match="collides"):
        seal_tree(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (src / "a.part.0").unlink()
    with pytest.raises(UsageError, match="overlap"):
        seal_tree(src, src / "pkg")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_bytes(b"")
    with pytest.raises(UsageError, match="not an empty"):
        seal_tree(src, tmp_path / "full")
    with pytest.raises(UsageError, match="coherence"):
        seal_tree(src, tmp_path / "o2", coherence=1.5)


@pytest.mark.parametrize("where", ["pkg", "pkg.zip"])
def test_intact_package_scrubs_clean_and_unseals(sealed: Path, where: str) -> None:
    with open_package(sealed.parent / where) as pkg:
        assert scrub(pkg).exit_code == 0
        rep = unseal(pkg, sealed.parent / "out")
    assert _tree(sealed.parent / "out") == FILES
    assert sorted(rep.copied) == sorted(FILES)


def test_damage_scrub_repair_scrub(sealed: Path) -> None:
    (sealed / "bin/blob.dat").write_bytes(b"evil")  # original replaced
    (sealed / "bin/blob.dat.part.0").unlink()  # a data part missing
    blob = bytearray((sealed / "bin/blob.dat.part.5").read_bytes())
    blob[-3] ^= 0x40  # footer bit flip
    (sealed / "bin/blob.dat.part.5").write_bytes(bytes(blob))
    (sealed / "js/app.js.part.1").write_bytes(b"")  # truncated
    with open_package(sealed) as pkg:
        before = scrub(pkg)
    assert before.exit_code == 1
    blob_rep = next(c for c in before.components if c.path == "bin/blob.dat")
    assert blob_rep.state == "recoverable" and blob_rep.original == "corrupt"
    assert sorted(blob_rep.bad_parts) == [0, 5]
    with open_package(sealed) as pkg:
        rep = repair(pkg)
    assert rep.exit_code == 0
    assert sorted(rep.rewritten) == [
        "bin/blob.dat",
        "bin/blob.dat.part.0",
        "bin/blob.dat.part.5",
        "js/app.js.part.1",
    ]
    with open_package(sealed) as pkg:
        assert scrub(pkg).exit_code == 0
    assert (sealed / "bin/blob.dat").read_bytes() == FILES["bin/blob.dat"]
    assert not leftovers(sealed)


def test_lost_component_unseal_exit_4_nothing_half_written(sealed: Path) -> None:
    with open_package(sealed) as pkg:
        rec = pkg.manifest.entry("bin/blob.dat").recovery
    assert rec is not None
    (sealed / "bin/blob.dat").unlink()
    for n in range(rec.m + 1):
        (sealed / f"bin/blob.dat.part.{n}").unlink()
    out = sealed.parent / "out"
    with open_package(sealed) as pkg:
        assert scrub(pkg).exit_code == 4
        with pytest.raises(ComponentLostError) as info:
            unseal(pkg, out)
    assert info.value.exit_code == 4
    assert f"{rec.k - 1}/{rec.k + rec.m}" in str(info.value)
    got = _tree(out)
    assert "bin/blob.dat" not in got and not leftovers(out)
    assert {k: v for k, v in FILES.items() if k != "bin/blob.dat"} == got
    # repair still fixes what it can, reports the rest, exit 4
    (sealed / "one.part.1").unlink()
    with open_package(sealed) as pkg:
        rep = repair(pkg)
    assert rep.exit_code == 4
    assert "one.part.1" in rep.rewritten and "bin/blob.dat" in rep.failed
    assert (sealed / "one.part.1").exists()


def test_original_intact_but_too_few_parts_is_resealed(sealed: Path) -> None:
    with open_package(sealed) as pkg:
        rec = pkg.manifest.entry("bin/blob.dat").recovery
    assert rec is not None
    want = {n: (sealed / f"bin/blob.dat.part.{n}").read_bytes() for n in range(rec.k + rec.m)}
    for n in range(rec.m + 2):
        (sealed / f"bin/blob.dat.part.{n}").unlink()
    with open_package(sealed) as pkg:
        assert scrub(pkg).by_state("recoverable")[0].path == "bin/blob.dat"
        assert repair(pkg).exit_code == 0
    for n, data in want.items():
        assert (sealed / f"bin/blob.dat.part.{n}").read_bytes() == data


def test_repair_zip_rewrites_it_atomically(sealed: Path) -> None:
    zpath = sealed.parent / "pkg.zip"
    damaged = sealed.parent / "damaged.zip"
    with zipfile.ZipFile(zpath) as zin, zipfile.ZipFile(damaged, "w") as zout:
        for info in zin.infolist():
            if info.filename == "js/app.js.part.0":
                continue
            data = zin.read(info)
            if info.filename == "index.html":
                data = b"X" + data[1:]
            zout.writestr(info, data)
    with open_package(damaged) as pkg:
        assert scrub(pkg).exit_code == 1
    rep = repair_path(damaged)
    assert sorted(rep.rewritten) == ["index.html", "js/app.js.part.0"]
    with open_package(damaged) as pkg:
        assert scrub(pkg).exit_code == 0
    assert [p.name for p in sealed.parent.iterdir() if p.name.startswith(".")] == []


def test_symlinked_part_pointing_outside_counts_as_missing(sealed: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    shutil.copy(sealed / "one.part.0", outside)
    (sealed / "one.part.0").unlink()
    (sealed / "one.part.0").symlink_to(outside)
    with open_package(sealed) as pkg:
        rep = scrub(pkg)
    one = next(c for c in rep.components if c.path == "one")
    assert one.bad_parts == {0: "missing"}


# --- CLI ---------------------------------------------------------------------------


def test_cli_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    write_tree(src, FILES)
    assert main(["keygen", str(tmp_path / "k.pem")]) == 0
    capsys.readouterr()
    pkg = tmp_path / "pkg"
    rc = main(
        [
            "seal",
            str(src),
            "-o",
            str(pkg),
            "--zip",
            "--key",
            str(tmp_path / "k.pem"),
            "--name",
            "demo",
            "--version",
            "7",
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["name"] == "demo" and out["version"] == 7 and Path(out["zip"]).is_file()
    trust = ["--trusted-key", str(tmp_path / "k.pem.pub")]
    assert main(["scrub", str(pkg), *trust]) == 0
    assert main(["scrub", str(tmp_path / "pkg.zip"), *trust]) == 0
    (pkg / "one.part.0").unlink()
    capsys.readouterr()
    assert main(["scrub", str(pkg), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["recoverable"] == 1 and report["exit_code"] == 1
    assert main(["repair", str(pkg), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rewritten"] == ["one.part.0"]
    assert main(["scrub", str(pkg)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(pkg / "one.part.1"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["header"]["part_number"] == 1 and info["footer_ok"] is True
    assert main(["inspect", str(pkg)]) == 0
    assert "package 'demo' version 7" in capsys.readouterr().out
    # lost: exit 4 from scrub, unseal and repair
    for name in ("one", "one.part.0", "one.part.1"):
        (pkg / name).unlink()
    assert main(["scrub", str(pkg)]) == 4
    capsys.readouterr()
    assert main(["unseal", str(pkg), "-o", str(tmp_path / "out")]) == 4
    assert "coherence 0/2" in capsys.readouterr().out
    assert main(["repair", str(pkg)]) == 4
    # a corrupt part file given to inspect: typed error, no traceback
    bad = tmp_path / "bad.part"
    bad.write_bytes((pkg / "empty.part.0").read_bytes()[:-1] + b"\0")
    assert main(["inspect", str(bad)]) in (1, 2)
    assert "Traceback" not in capsys.readouterr().err
    # usage errors
    assert main(["seal", str(src), "-o", str(tmp_path / "o"), "--coherence", "0"]) == 2
    assert main(["unseal", str(tmp_path / "nope"), "-o", str(tmp_path / "o3")]) == 2


def test_seal_and_repair_report_to_the_event_sink(tmp_path: Path) -> None:
    sink = ListSink()
    src = tmp_path / "src"
    write_tree(src, {"a.txt": b"hello"})
    seal_tree(src, tmp_path / "pkg", events=sink)
    (tmp_path / "pkg" / "a.txt.part.1").unlink()
    with open_package(tmp_path / "pkg") as pkg:
        repair(pkg, events=sink)
    assert [t for t, _ in sink.events] == ["package.seal", "package.repair"]
    assert sink.events[0][1]["name"] == "src"


@pytest.mark.parametrize("kind", ["text", "random"])
def test_files_above_the_memory_limit_stream_through_mmap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setattr(seal_mod, "MEMORY_LIMIT", 1 << 20)
    monkeypatch.setattr(seal_mod, "BIG", 1 << 20)
    if kind == "text":
        data = b"".join(b"stream me %d\n" % i for i in range(400_000))
    else:
        data = os.urandom(5 << 20)
    src = tmp_path / "src"
    write_tree(src, {"big.bin": data})
    manifest = seal_tree(src, tmp_path / "pkg")
    rec = manifest.entry("big.bin").recovery
    assert rec is not None
    assert rec.codec == ("zstd" if kind == "text" else "none")
    assert not [p for p in (tmp_path / "pkg").iterdir() if p.name.startswith(".")]
    for n in range(rec.m):
        (tmp_path / "pkg" / f"big.bin.part.{n}").unlink()
    (tmp_path / "pkg" / "big.bin").unlink()
    with open_package(tmp_path / "pkg") as pkg:
        assert repair(pkg).exit_code == 0
    assert (tmp_path / "pkg" / "big.bin").read_bytes() == data


def test_symlink_loop_in_place_of_a_part_counts_as_missing(sealed: Path) -> None:
    (sealed / "one.part.0").unlink()
    (sealed / "one.part.0").symlink_to(sealed / "one.part.0")
    with open_package(sealed) as pkg:
        rep = scrub(pkg)
        assert next(c for c in rep.components if c.path == "one").bad_parts == {0: "missing"}
    with open_package(sealed) as pkg:
        assert repair(pkg).rewritten == ["one.part.0"]
    assert not (sealed / "one.part.0").is_symlink()
    with open_package(sealed) as pkg:
        assert scrub(pkg).exit_code == 0


def test_repair_replaces_a_symlink_pointing_outside_never_writes_through_it(
    sealed: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"do not touch")
    (sealed / "one").unlink()
    (sealed / "one").symlink_to(victim)
    with open_package(sealed) as pkg:
        assert repair(pkg).rewritten == ["one"]
    assert victim.read_bytes() == b"do not touch"
    assert not (sealed / "one").is_symlink() and (sealed / "one").read_bytes() == b"1"


def test_big_text_compressed_while_read_is_resealed_byte_identical(tmp_path: Path) -> None:
    """The zstd stream made while reading equals compress(): repair can re-seal it."""
    data = b"".join(b"%d the quick brown fox %d\n" % (i, i * 7 % 1000) for i in range(700_000))
    assert len(data) > 16 << 20
    src = tmp_path / "src"
    write_tree(src, {"big.txt": data})
    manifest = seal_tree(src, tmp_path / "pkg")
    rec = manifest.entry("big.txt").recovery
    assert rec is not None and rec.codec == "zstd"
    pkg_dir = tmp_path / "pkg"
    want = {n: (pkg_dir / f"big.txt.part.{n}").read_bytes() for n in range(rec.k + rec.m)}
    for n in range(rec.m + 1):
        (pkg_dir / f"big.txt.part.{n}").unlink()
    with open_package(pkg_dir) as pkg:
        assert repair(pkg).exit_code == 0
    for n, blob in want.items():
        assert (pkg_dir / f"big.txt.part.{n}").read_bytes() == blob


def _text(n: int) -> bytes:
    return b"".join(b"line %d of a compressible file\n" % i for i in range(n))


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_big_file_copied_in_kernel_then_hashed_and_compressed_from_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel_copy: bool
) -> None:
    if not kernel_copy:  # file systems without copy_file_range: plain copy

        def refuse(*_a: object, **_k: object) -> int:
            raise OSError(18, "Invalid cross-device link")

        monkeypatch.setattr(os, "copy_file_range", refuse)
    data = _text(400_000)  # ~13 MiB: the copy + mmap + zstd-while-hashing path
    assert len(data) >= 8 << 20
    src = tmp_path / "src"
    write_tree(src, {"big.txt": data, "small.txt": b"x" * 1000})
    manifest = seal_tree(src, tmp_path / "pkg")
    entry = manifest.entry("big.txt")
    rec = entry.recovery
    assert rec is not None and rec.codec == "zstd"
    assert parse_integrity(entry.integrity).digests[0] == hashlib.sha512(data).digest()
    assert rec.compressed_size == len(seal_mod.compress("zstd", data))
    assert (tmp_path / "pkg" / "big.txt").read_bytes() == data
    assert oct((tmp_path / "pkg" / "big.txt").stat().st_mode & 0o777) == "0o644"
    # repair re-creates the same stream from the original: drop every parity part
    for n in range(rec.k, rec.k + rec.m):
        (tmp_path / "pkg" / f"big.txt.part.{n}").unlink()
    with open_package(tmp_path / "pkg") as pkg:
        assert repair(pkg).exit_code == 0
        assert scrub(pkg).exit_code == 0


def test_every_file_and_directory_is_fsynced_before_the_package_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: set[str] = set()
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced.add(os.readlink(f"/proc/self/fd/{fd}"))

    seen: list[str] = []

    def replace(a: str | Path, b: str | Path) -> None:
        if Path(a).name.startswith(".pkg.auraseal-tmp-seal-"):
            for dirpath, _dirs, files in os.walk(a):
                assert dirpath in synced, dirpath
                for f in files:
                    assert os.path.join(dirpath, f) in synced, f
                    seen.append(f)
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    src = tmp_path / "src"
    write_tree(src, {"big.txt": _text(400_000), "rand.bin": os.urandom(5 << 20), "d/s.txt": b"s"})
    seal_tree(src, tmp_path / "pkg")
    assert "big.txt" in seen and "rand.bin" in seen and "s.txt" in seen
    assert MANIFEST_NAME in seen and len(seen) > 256


@pytest.mark.parametrize("kind", ["text", "random"])
@pytest.mark.parametrize("original", ["good", "corrupt", "last_byte", "longer", "missing"])
def test_repair_of_a_big_component_rebuilds_parts_while_the_original_is_checked(
    tmp_path: Path, kind: str, original: str
) -> None:
    data = _text(300_000) if kind == "text" else os.urandom(6 << 20)
    src = tmp_path / "src"
    write_tree(src, {"big.bin": data})
    manifest = seal_tree(src, tmp_path / "pkg")
    rec = manifest.entry("big.bin").recovery
    assert rec is not None
    pkg_dir = tmp_path / "pkg"
    assert rec.m >= 2
    lost = [1]  # a data part lost, a parity part corrupt: m >= 2 bad parts
    for n in lost:
        (pkg_dir / f"big.bin.part.{n}").unlink()
    (pkg_dir / f"big.bin.part.{rec.k}").write_bytes(b"garbage")
    before = (pkg_dir / "big.bin").stat().st_ino
    if original == "corrupt":
        with open(pkg_dir / "big.bin", "r+b") as fh:
            fh.seek(len(data) // 2)
            fh.write(b"\0" * 1000)
    elif original == "last_byte":
        with open(pkg_dir / "big.bin", "r+b") as fh:
            fh.seek(len(data) - 1)
            fh.write(bytes([data[-1] ^ 1]))
    elif original == "longer":
        with open(pkg_dir / "big.bin", "ab") as fh:
            fh.write(b"x")
    elif original == "missing":
        (pkg_dir / "big.bin").unlink()
    with open_package(pkg_dir) as pkg:
        report = repair(pkg)
    assert report.exit_code == 0
    parts = sorted(f"big.bin.part.{n}" for n in [*lost, rec.k])
    if original == "good":
        assert sorted(report.rewritten) == parts
        assert (pkg_dir / "big.bin").stat().st_ino == before  # not rewritten
    else:
        assert report.rewritten[0] == "big.bin"
        assert sorted(report.rewritten[1:]) == parts
    (comp,) = report.components
    assert comp.state_before == "recoverable"
    assert comp.coherence_before == f"{rec.k + rec.m - 2}/{rec.k + rec.m}"
    assert (pkg_dir / "big.bin").read_bytes() == data
    with open_package(pkg_dir) as pkg:
        assert scrub(pkg).exit_code == 0


@pytest.mark.parametrize("kind", ["text", "random"])
def test_big_file_hashed_and_encoded_while_it_is_being_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Hashing, compressing and encoding trail the kernel copy (_Copy.ready):
    they start before the copy is complete, read only copied bytes, and give
    the same package as sealing from a finished copy."""
    real_cfr = os.copy_file_range

    def slow_copy(fi: int, fo: int, count: int, *a: int) -> int:
        return real_cfr(fi, fo, min(count, 1 << 20), *a)  # 1 MiB steps

    monkeypatch.setattr(os, "copy_file_range", slow_copy)
    early: list[int] = []
    real_ready = seal_mod._Copy.ready

    def ready(self: seal_mod._Copy, end: int) -> None:
        if self._done < self.size:
            early.append(end)
        real_ready(self, end)

    monkeypatch.setattr(seal_mod._Copy, "ready", ready)
    data = _text(400_000) if kind == "text" else os.urandom(12 << 20)
    src = tmp_path / "src"
    write_tree(src, {"big.bin": data})
    manifest = seal_tree(src, tmp_path / "pkg")
    assert early, "nothing waited for the copy: the overlap is gone"
    entry = manifest.entry("big.bin")
    assert parse_integrity(entry.integrity).digests[0] == hashlib.sha512(data).digest()
    assert entry.recovery is not None
    assert entry.recovery.codec == ("zstd" if kind == "text" else "none")
    assert (tmp_path / "pkg" / "big.bin").read_bytes() == data
    for n in range(entry.recovery.m):  # m data parts and the original gone: decode
        (tmp_path / "pkg" / f"big.bin.part.{n}").unlink()
    (tmp_path / "pkg" / "big.bin").unlink()
    with open_package(tmp_path / "pkg") as pkg:
        assert repair(pkg).exit_code == 0
    assert (tmp_path / "pkg" / "big.bin").read_bytes() == data


def test_seal_refuses_a_big_file_that_grows_while_it_is_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    write_tree(src, {"big.bin": os.urandom(12 << 20)})
    real_cfr = os.copy_file_range

    def copy_then_grow(fi: int, fo: int, count: int, *a: int) -> int:
        n = real_cfr(fi, fo, min(count, 1 << 20), *a)
        with open(src / "big.bin", "ab") as fh:
            fh.write(b"more")
        return n

    monkeypatch.setattr(os, "copy_file_range", copy_then_grow)
    with pytest.raises(StorageError, match="file changed while being sealed"):
        seal_tree(src, tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()
    assert not leftovers(tmp_path)
