"""A full disk in the middle of seal, unseal and repair (issue 13).

The OUTPUT of each command is a small tmpfs that runs out of space while the
command works on a 20 MiB file. Each run must exit 5 with one line
``auraseal: error: <path>: ... No space left ...`` (no traceback), leave no
temp files and no half-written final file, and leave the previous state
usable (freeing space and running the command again succeeds).
A directory in the way of a target is the same family: exit 5 naming it.
"""

from __future__ import annotations

import os
import random
import shutil
import zipfile
from pathlib import Path

import pytest

from auraseal.sealing import seal_tree

from .fulldisk import MiB, Mount, assert_enospc, cli, digests, fill, grow, temps, tmpfs
from .helpers import write_tree

__all__ = ["tmpfs"]

TEXT = b"".join(b"line %d of a compressible text file\n" % i for i in range(30_000))


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 MiB of random bytes (incompressible) plus a small text file."""
    root = tmp_path_factory.mktemp("fulldisk") / "src"
    write_tree(root, {"big.bin": random.randbytes(20 * MiB), "notes.txt": TEXT})
    return root


@pytest.fixture(scope="module")
def sealed(src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``src`` sealed once (copied by the tests that change it)."""
    pkg = tmp_path_factory.mktemp("fulldisk-pkg") / "pkg"
    seal_tree(src, pkg)
    return pkg


@pytest.fixture(scope="module")
def small_sealed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 MiB of random bytes sealed (244 parts of ~13 KiB), for the cases
    whose bug does not depend on the size."""
    root = tmp_path_factory.mktemp("fulldisk-small")
    write_tree(root / "src", {"r.bin": random.randbytes(3 * MiB)})
    seal_tree(root / "src", root / "pkg")
    return root / "pkg"


# --- seal ----------------------------------------------------------------------------


def test_seal_20mib_onto_a_full_tmpfs_exits_5_and_leaves_nothing(
    src: Path, tmpfs: Mount
) -> None:
    mnt = tmpfs("24m")  # the original alone fits; its parts do not
    out = mnt / "pkg"
    proc = cli("seal", str(src), "-o", str(out))
    assert_enospc(proc, out)
    assert os.listdir(mnt) == []  # no package, no temp directory
    shutil.rmtree(mnt / "pkg", ignore_errors=True)


def test_seal_zip_onto_a_full_tmpfs_exits_5_package_complete_no_zip(
    tmp_path: Path, tmpfs: Mount
) -> None:
    small = tmp_path / "small"
    write_tree(small, {"a.bin": random.randbytes(3 * MiB), "notes.txt": TEXT})
    mnt = tmpfs("11m")  # the package fits (~8 MiB), its zip copy does not
    out = mnt / "pkg"
    proc = cli("seal", str(small), "-o", str(out), "--zip")
    assert_enospc(proc, mnt / "pkg.zip")
    assert sorted(os.listdir(mnt)) == ["pkg"] and not temps(mnt)
    assert cli("scrub", str(out)).returncode == 0  # the package itself is whole


def test_seal_into_a_directory_in_the_way_of_the_zip_exits_5(
    src: Path, tmp_path: Path
) -> None:
    small = tmp_path / "small"
    write_tree(small, {"a.txt": TEXT})
    (tmp_path / "pkg.zip" / "x").mkdir(parents=True)
    proc = cli("seal", str(small), "-o", str(tmp_path / "pkg"), "--zip")
    assert proc.returncode == 5, proc.stderr
    assert proc.stderr.startswith(f"auraseal: error: {tmp_path / 'pkg.zip'}")
    assert len(proc.stderr.splitlines()) == 1 and not temps(tmp_path)


# --- unseal --------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["copied", "rebuilt"])
def test_unseal_20mib_onto_a_full_tmpfs_exits_5_nothing_half_written(
    sealed: Path, src: Path, tmp_path: Path, tmpfs: Mount, how: str
) -> None:
    pkg = sealed
    if how == "rebuilt":  # the original is gone: rebuilt from its parts
        pkg = tmp_path / "pkg"
        shutil.copytree(sealed, pkg)
        (pkg / "big.bin").unlink()
    out = tmpfs("12m")
    proc = cli("unseal", str(pkg), "-o", str(out), "--jobs", "1")
    assert_enospc(proc, out / "big.bin")
    assert not (out / "big.bin").exists() and not temps(out)
    assert (out / "notes.txt").read_bytes() == TEXT  # what fits is complete
    if how == "rebuilt":  # room again: the same command completes
        grow(out, "32m")
        done = cli("unseal", str(pkg), "-o", str(out))
        assert done.returncode == 0, done.stderr
        assert digests(out) == digests(src) and not temps(out)


def test_unseal_over_a_previous_version_on_a_full_tmpfs_keeps_it(
    sealed: Path, tmpfs: Mount
) -> None:
    out = tmpfs("24m")
    (out / "big.bin").write_bytes(b"previous complete version\n" * 1000)
    before = digests(out)
    fill(out, 4 * MiB)
    proc = cli("unseal", str(sealed), "-o", str(out), "--jobs", "1")
    assert_enospc(proc, out / "big.bin")
    assert digests(out)["big.bin"] == before["big.bin"]  # the previous version, whole
    assert not temps(out)


# --- repair --------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["original", "parts"])
def test_repair_on_a_full_tmpfs_exits_5_then_succeeds_with_room(
    sealed: Path, small_sealed: Path, tmpfs: Mount, damage: str
) -> None:
    mnt = tmpfs("64m")
    pkg = mnt / "pkg"
    if damage == "original":  # 20 MiB rebuilt from its parts
        shutil.copytree(sealed, pkg)
        (pkg / "big.bin").unlink()
        where = pkg / "big.bin"
    else:  # too few parts left: encoded again from the original (PartsWriter)
        sealed = small_sealed
        shutil.copytree(sealed, pkg)
        for n in range(0, 200, 2):  # 100 parts of ~13 KiB: more than the 1 MiB left
            (pkg / f"r.bin.part.{n}").unlink()
        where = pkg / "r.bin.part."  # whichever part no longer fits
    whole = digests(sealed)
    filler = fill(mnt, 1 * MiB)
    proc = cli("repair", str(pkg), "--jobs", "1")
    assert_enospc(proc, where)
    assert not temps(mnt)
    after = digests(pkg)
    assert after == {k: whole[k] for k in after}  # every file there is whole
    filler.unlink()
    done = cli("repair", str(pkg))
    assert done.returncode == 0, done.stderr
    assert not temps(mnt)
    assert digests(pkg) == digests(sealed)


@pytest.mark.parametrize(("step", "leave"), [("extract", 1 * MiB), ("rebuild", 6 * MiB)])
def test_zip_repair_on_a_full_tmpfs_names_the_zip_not_its_temp_dir(
    small_sealed: Path, tmpfs: Mount, step: str, leave: int
) -> None:
    mnt = tmpfs("24m")
    zpath = mnt / "p.zip"
    names = [n for n in os.listdir(small_sealed) if n not in ("r.bin", "r.bin.part.3")]
    with zipfile.ZipFile(zpath, "w") as zf:  # damaged: the original and a part missing
        for n in names:
            zf.write(small_sealed / n, n)
    before = digests(mnt)
    filler = fill(mnt, leave)  # no room to extract (4 MiB) / to rebuild r.bin (3 MiB)
    proc = cli("repair", str(zpath), "--jobs", "1")
    assert_enospc(proc, Path(f"{zpath}: "))
    assert digests(mnt) == {**before, "filler": digests(mnt)["filler"]} and not temps(mnt)
    filler.unlink()
    done = cli("repair", str(zpath))
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(mnt)) == ["p.zip"]
    assert cli("scrub", str(zpath)).returncode == 0
