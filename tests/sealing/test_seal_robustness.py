"""Killed and failing seal / repair / unseal runs (issue 10).

Kills: a real ``auraseal`` subprocess is SIGKILLed at a deterministic point
(a small driver replaces one library function by ``os.kill(getpid(), SIGKILL)``
and then runs the CLI), leaving its temporaries behind; verification must
ignore them and the next run of the same command must remove them.

I/O failures (a directory in the way, a full disk on a small tmpfs, an
unreadable part) exit 5 naming the path; only too few intact parts is 4.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from auraseal._fs import is_temp_name
from auraseal.cli import main
from auraseal.errors import StorageError
from auraseal.sealing import open_package, seal_tree, unseal

from .fulldisk import fill, tmpfs
from .helpers import leftovers, write_tree

__all__ = ["tmpfs"]  # the fixture, shared with test_full_disk.py

TEXT = b"".join(b"line %d of a compressible file\n" % i for i in range(20_000))

# Runs the CLI with one library function replaced by a SIGKILL of this process.
_DRIVER = """
import importlib, os, signal, sys
target, argv = sys.argv[1], sys.argv[2:]
mod_name, _, attr = target.partition(":")
owner = importlib.import_module(mod_name)
*path, name = attr.split(".")
for p in path:
    owner = getattr(owner, p)
def _kill(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
setattr(owner, name, _kill)
from auraseal.cli import main
sys.exit(main(argv))
"""


def _killed_at(target: str, *argv: str) -> None:
    """Run ``auraseal ARGV`` in a subprocess that SIGKILLs itself at ``target``."""
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, target, *argv],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auraseal", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _temps(root: Path) -> list[str]:
    """AuraSeal temp entries (files or directories) anywhere below ``root``."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        out += [os.path.join(dirpath, n) for n in dirs + files if is_temp_name(n)]
    return out


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("robust") / "src"
    write_tree(
        src,
        {
            "blob.bin": os.urandom(600_000),
            "text.txt": TEXT,
            "sub/small.txt": b"small\n" * 100,
        },
    )
    return src


# --- killed runs --------------------------------------------------------------------


def test_killed_seal_leftovers_are_removed_by_the_next_seal(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "pkg"
    # killed after every file was written, before the package is renamed into place
    _killed_at("auraseal.sealing.seal:sync_tree", "seal", str(source), "-o", str(out))
    assert not out.exists()
    stale = [n for n in os.listdir(tmp_path) if n != "pkg"]
    assert len(stale) == 1 and is_temp_name(stale[0]), stale
    assert (tmp_path / stale[0] / "blob.bin.part.0").is_file()  # a real half-built package
    done = _cli("seal", str(source), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path)) == ["pkg"]  # the killed seal's temp dir is gone
    assert _cli("manifest", "verify", str(out)).returncode == 0
    assert _cli("scrub", str(out)).returncode == 0


def test_killed_repair_leftovers_are_ignored_by_verify_and_removed_by_the_next_repair(
    source: Path, tmp_path: Path
) -> None:
    pkg = tmp_path / "pkg"
    seal_tree(source, pkg)
    (pkg / "blob.bin").write_bytes(b"damaged")
    (pkg / "blob.bin.part.0").unlink()
    (pkg / "text.txt.part.1").write_bytes(b"")
    (pkg / "sub/small.txt.part.0").unlink()
    # killed at the first fsync: every rebuilt file is still a temp file
    _killed_at("os:fsync", "repair", str(pkg), "--jobs", "1")
    assert _temps(pkg)
    verify = _cli("manifest", "verify", str(pkg), "--json")
    assert verify.returncode == 1  # the package is still damaged ...
    report = json.loads(verify.stdout)
    assert report["unexpected"] == []  # ... but the leftovers are not "unexpected files"
    assert _cli("scrub", str(pkg)).returncode == 1  # recoverable, as before the repair
    done = _cli("repair", str(pkg))
    assert done.returncode == 0, done.stderr
    assert not _temps(pkg) and not leftovers(pkg)
    assert _cli("manifest", "verify", str(pkg)).returncode == 0
    assert _cli("scrub", str(pkg)).returncode == 0
    assert (pkg / "blob.bin").read_bytes() == (source / "blob.bin").read_bytes()


def test_killed_zip_repair_leftovers_are_removed_by_the_next_repair(
    source: Path, tmp_path: Path
) -> None:
    pkg, zpath = tmp_path / "pkg", tmp_path / "pkg.zip"
    seal_tree(source, pkg, zip_path=zpath)
    shutil.rmtree(pkg)
    with zipfile.ZipFile(zpath) as zf:
        kept = {n: zf.read(n) for n in zf.namelist() if n != "text.txt.part.0"}
    with zipfile.ZipFile(zpath, "w") as zf:
        for n, data in kept.items():
            zf.writestr(n, data)
    _killed_at("os:fsync", "repair", str(zpath))  # while the zip is extracted
    stale = [n for n in os.listdir(tmp_path) if n != "pkg.zip"]
    assert len(stale) == 1 and is_temp_name(stale[0]), stale
    done = _cli("repair", str(zpath))
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path)) == ["pkg.zip"]
    assert _cli("scrub", str(zpath)).returncode == 0


def test_killed_unseal_leftovers_are_removed_by_the_next_unseal(
    source: Path, tmp_path: Path
) -> None:
    pkg, out = tmp_path / "pkg", tmp_path / "out"
    seal_tree(source, pkg)
    (pkg / "text.txt").unlink()  # rebuilt from parts
    _killed_at("os:fsync", "unseal", str(pkg), "-o", str(out), "--jobs", "1")
    assert _temps(out)
    done = _cli("unseal", str(pkg), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert not _temps(out)
    got = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert got == {"blob.bin", "text.txt", "sub/small.txt"}
    assert (out / "text.txt").read_bytes() == TEXT


# --- I/O failures: exit 5 -----------------------------------------------------------


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(list(argv))
    return rc, capsys.readouterr().err


def _parts(pkg: Path, rel: str) -> tuple[int, int]:
    with open_package(pkg) as p:
        rec = p.manifest.entry(rel).recovery
    assert rec is not None
    return rec.k, rec.m


def test_unseal_rebuild_into_a_directory_in_the_way_exits_5(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pkg, out = tmp_path / "pkg", tmp_path / "out"
    seal_tree(source, pkg)
    (pkg / "blob.bin").unlink()  # rebuilt from its parts ...
    (out / "blob.bin" / "x").mkdir(parents=True)  # ... onto a directory
    rc, err = _run(capsys, "unseal", str(pkg), "-o", str(out))
    assert rc == 5
    assert err.startswith("auraseal: error: ") and str(out / "blob.bin") in err
    assert (out / "text.txt").read_bytes() == TEXT  # the others are written
    assert not _temps(out)
    with open_package(pkg) as p, pytest.raises(StorageError) as info:
        unseal(p, out)  # the library, strict: the same failure as a typed error
    assert info.value.exit_code == 5 and info.value.where == str(out / "blob.bin")


@pytest.mark.parametrize("where", ["part", "original"])
def test_repair_onto_a_directory_in_the_way_exits_5(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    pkg = tmp_path / "pkg"
    seal_tree(source, pkg)
    name = "blob.bin.part.0" if where == "part" else "blob.bin"
    (pkg / name).unlink()
    (pkg / name / "x").mkdir(parents=True)
    rc, err = _run(capsys, "repair", str(pkg))
    assert rc == 5
    assert err.startswith("auraseal: error: ") and str(pkg / name) in err
    assert not _temps(pkg)


def test_repair_errors_are_in_the_json_report(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pkg = tmp_path / "pkg"
    seal_tree(source, pkg)
    (pkg / "blob.bin.part.0").unlink()
    (pkg / "blob.bin.part.0").mkdir()
    capsys.readouterr()
    assert main(["repair", str(pkg), "--json"]) == 5
    report = json.loads(capsys.readouterr().out)
    assert report["exit_code"] == 5 and report["failed"] == {}
    assert list(report["errors"]) == [str(pkg / "blob.bin.part.0")]


@pytest.mark.parametrize("blocker", ["fifo", "directory", "missing"])
def test_unseal_and_repair_with_an_unreadable_part_exit_5_too_few_parts_4(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], blocker: str
) -> None:
    pkg = tmp_path / "pkg"
    seal_tree(source, pkg)
    _k, m = _parts(pkg, "blob.bin")
    (pkg / "blob.bin").unlink()
    for n in range(m + 1):  # k - 1 intact parts left: too few without part 0
        (pkg / f"blob.bin.part.{n}").unlink()
    part = pkg / "blob.bin.part.0"
    if blocker == "fifo":
        os.mkfifo(part)
    elif blocker == "directory":
        part.mkdir()
    code = 4 if blocker == "missing" else 5
    rc, _ = _run(capsys, "scrub", str(pkg))
    assert rc == code
    rc, err = _run(capsys, "unseal", str(pkg), "-o", str(tmp_path / "out"))
    assert rc == code, err
    assert (str(part) in err) == (code == 5)
    assert not (tmp_path / "out" / "blob.bin").exists() and not _temps(tmp_path / "out")
    rc, err = _run(capsys, "repair", str(pkg))
    assert rc == code, err
    assert (str(part) in err) == (code == 5)
    assert not _temps(pkg) and not (pkg / "blob.bin").exists()


def test_unseal_into_a_full_disk_exits_5_nothing_half_written(
    tmp_path: Path, tmpfs: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src, pkg = tmp_path / "src", tmp_path / "pkg"
    write_tree(src, {"a.bin": os.urandom(1_500_000), "b.bin": os.urandom(1_200_000)})
    seal_tree(src, pkg)
    (pkg / "b.bin").unlink()  # rebuilt from parts, after a.bin filled the disk
    out = tmpfs("2m")
    rc, err = _run(capsys, "unseal", str(pkg), "-o", str(out), "--jobs", "1")
    assert rc == 5, err
    assert str(out / "b.bin") in err and "No space left" in err
    assert not (out / "b.bin").exists() and not _temps(out)
    assert (out / "a.bin").read_bytes() == (src / "a.bin").read_bytes()


def test_repair_on_a_full_disk_exits_5_then_succeeds_once_there_is_room(
    tmp_path: Path, tmpfs: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a.bin": os.urandom(1_500_000)})
    mnt = tmpfs("4m")
    pkg = mnt / "pkg"
    seal_tree(src, pkg)
    (pkg / "a.bin").unlink()
    fill(mnt, 200_000)
    rc, err = _run(capsys, "repair", str(pkg))
    assert rc == 5, err
    assert str(pkg / "a.bin") in err and "No space left" in err
    assert not (pkg / "a.bin").exists() and not _temps(mnt)
    (mnt / "filler").unlink()
    rc, err = _run(capsys, "repair", str(pkg))
    assert rc == 0, err
    assert (pkg / "a.bin").read_bytes() == (src / "a.bin").read_bytes()


def test_seal_into_a_full_disk_exits_5_and_leaves_nothing(
    tmp_path: Path, tmpfs: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a.bin": os.urandom(1_500_000), "b.txt": TEXT})
    mnt = tmpfs("2m")
    rc, err = _run(capsys, "seal", str(src), "-o", str(mnt / "pkg"))
    assert rc == 5, err
    assert "No space left" in err and str(mnt / "pkg") in err
    assert "auraseal-tmp" not in err  # names the package, not its temp dir
    assert os.listdir(mnt) == []
