"""Hostile zips and manifests are refused before anything is written."""

from __future__ import annotations

import io
import json
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from auraseal.errors import AuraSealError, InputError, UnsafePathError
from auraseal.manifest import MANIFEST_NAME
from auraseal.sealing import open_package, repair_path, scrub, seal_tree, unseal

from .helpers import write_tree


@pytest.fixture
def good_zip(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    write_tree(src, {"a.txt": b"hello" * 100, "b/c.txt": b"world"})
    seal_tree(src, tmp_path / "pkg", zip_path=tmp_path / "pkg.zip")
    return tmp_path / "pkg.zip"


def _rebuild(good: Path, target: Path, extra: list[tuple[zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(target, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
        for info, data in extra:
            zout.writestr(info, data)
    return target


def _symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


HOSTILE = {
    "dotdot": [(zipfile.ZipInfo("../evil.txt"), b"x")],
    "nested-dotdot": [(zipfile.ZipInfo("a/../../evil.txt"), b"x")],
    "absolute": [(zipfile.ZipInfo("/etc/evil"), b"x")],
    "backslash": [(zipfile.ZipInfo("..\\evil"), b"x")],
    "symlink": [(_symlink_info("link"), b"/etc/passwd")],
    "duplicate": [(zipfile.ZipInfo("a.txt"), b"other")],
}


def _assert_nothing_written(tmp_path: Path, out: Path) -> None:
    assert not out.exists()
    assert not (tmp_path.parent / "evil.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_zip_entries_are_refused_before_writing(
    kind: str, good_zip: Path, tmp_path: Path
) -> None:
    bad = _rebuild(good_zip, tmp_path / f"{kind}.zip", HOSTILE[kind])
    out = tmp_path / "out"
    with pytest.raises(InputError) as info, open_package(bad) as pkg:
        unseal(pkg, out)
    assert info.value.exit_code == 2
    with pytest.raises(InputError):
        repair_path(bad)
    _assert_nothing_written(tmp_path, out)


def _patch_central(data: bytes, size: int, csize: int | None = None) -> bytes:
    """Rewrite every central-directory entry's declared sizes."""
    buf = bytearray(data)
    pos = 0
    while (pos := buf.find(b"PK\x01\x02", pos)) >= 0:
        if csize is not None:
            struct.pack_into("<I", buf, pos + 20, csize)
        struct.pack_into("<I", buf, pos + 24, size)
        pos += 4
    return bytes(buf)


def test_zip_bomb_by_declared_ratio_is_refused(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST_NAME, b"{}")
        zf.writestr("bomb.bin", b"")
    bad = tmp_path / "bomb.zip"
    bad.write_bytes(_patch_central(raw.getvalue(), 0xFFFF0000))
    with pytest.raises(InputError, match="zip bomb"):
        open_package(bad)


def test_real_deflate_bomb_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bomb2.zip"
    with zipfile.ZipFile(bad, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST_NAME, b"{}")
        zf.writestr("zeros.bin", bytes(64 << 20))  # 64 MiB of zeros -> ~64 KiB
    with pytest.raises(InputError, match="ratio"):
        open_package(bad)


def test_zip_with_huge_total_declared_size_is_refused(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(MANIFEST_NAME, b"{}")
        for i in range(20):
            zf.writestr(f"f{i}", b"")
    bad = tmp_path / "huge.zip"
    bad.write_bytes(_patch_central(raw.getvalue(), 0xFFFFFFF0, 0xFFFFFFF0))
    with pytest.raises(InputError, match="zip bomb"):
        open_package(bad)


def _dir_pkg_with_manifest(tmp_path: Path, mutate) -> Path:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    write_tree(src, {"a.txt": b"hello", "b.txt": b"world"})
    seal_tree(src, tmp_path / "pkg")
    mpath = tmp_path / "pkg" / MANIFEST_NAME
    doc = json.loads(mpath.read_bytes())
    mutate(doc["signed"]["files"])
    mpath.write_text(json.dumps(doc))
    return tmp_path / "pkg"


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/evil", "a/../../evil", "x\\..\\y"])
def test_hostile_manifest_names_are_refused(tmp_path: Path, name: str) -> None:
    pkg = _dir_pkg_with_manifest(tmp_path, lambda f: f.update({name: f.pop("a.txt")}))
    with pytest.raises(UnsafePathError):
        open_package(pkg)
    with pytest.raises(UnsafePathError):
        repair_path(pkg)
    assert not (tmp_path / "evil.txt").exists()


def test_manifest_naming_a_file_like_a_part_is_refused(tmp_path: Path) -> None:
    pkg = _dir_pkg_with_manifest(tmp_path, lambda f: f.update({"a.txt.part.0": f["b.txt"]}))
    with pytest.raises(AuraSealError, match="both a file and a part"):
        open_package(pkg)


def test_manifest_with_inconsistent_recovery_is_refused(tmp_path: Path) -> None:
    def bump(files: dict) -> None:  # type: ignore[type-arg]
        files["a.txt"]["recovery"]["compressed_size"] = 10**9

    pkg = _dir_pkg_with_manifest(tmp_path, bump)
    with open_package(pkg) as p, pytest.raises(AuraSealError, match="inconsistent"):
        scrub(p)


def test_symlink_loop_in_the_source_is_a_typed_error(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a.txt": b"x"})
    (src / "loop").symlink_to(src / "loop")
    with pytest.raises(UnsafePathError):
        seal_tree(src, tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()
