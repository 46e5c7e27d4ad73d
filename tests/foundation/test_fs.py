"""Safe names and atomic writes, with storage faults injected."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auraseal._fs import (
    atomic_write_bytes,
    atomic_writer,
    clean_stale_temps,
    is_temp_name,
    make_temp_dir,
    resolve_inside,
    safe_relpath,
    temp_name,
)
from auraseal.errors import StorageError, UnsafePathError


def test_atomic_write_replaces_whole(tmp_path: Path) -> None:
    p = tmp_path / "d" / "f"
    atomic_write_bytes(p, b"one")
    atomic_write_bytes(p, b"two", mode=0o600)
    assert p.read_bytes() == b"two"
    assert oct(p.stat().st_mode & 0o777) == "0o600"
    assert os.listdir(p.parent) == ["f"]


def test_exception_mid_write_leaves_original(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"original")

    class Boom(Exception):
        pass

    with pytest.raises(Boom), atomic_writer(p) as fh:
        fh.write(b"half")
        raise Boom
    assert p.read_bytes() == b"original"
    assert os.listdir(tmp_path) == ["f"]


def test_fsync_failure_is_storage_error_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"original")

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StorageError, match="No space left"):
        atomic_write_bytes(p, b"new")
    monkeypatch.undo()
    assert p.read_bytes() == b"original"
    assert os.listdir(tmp_path) == ["f"]


def test_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="cannot create temp file"):
        atomic_write_bytes(blocker / "child", b"x")


def test_resolve_inside_refuses_symlink_escape(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "out").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError, match="outside the tree"):
        resolve_inside(root, "out/secret")
    assert resolve_inside(root, "a/b") == root.resolve() / "a" / "b"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_safe_relpath_accepts_only_clean_relative_names(name: str) -> None:
    try:
        out = safe_relpath(name)
    except UnsafePathError as exc:
        assert "\n" not in str(exc)
        return
    segs = out.split("/")
    assert out == name and not out.startswith("/")
    assert all(s not in ("", ".", "..") for s in segs)
    assert "\\" not in out and "\x00" not in out


def test_temp_names_are_recognised_and_owned(tmp_path: Path) -> None:
    n = temp_name("app.js", "seal")
    assert n.startswith(".app.js.auraseal-tmp-seal-") and is_temp_name(n)
    assert is_temp_name(f"sub/dir/{n}")
    plain_names = (".app.js.tmp", ".x.auraseal-tmp-Seal-1-ab", "a.auraseal-tmp-x-1-ab")
    for plain in ("app.js", ".app.js", *plain_names):
        assert not is_temp_name(plain), plain
    d = make_temp_dir(tmp_path, "pkg", "repair")
    assert d.is_dir() and is_temp_name(d.name)
    with pytest.raises(ValueError):
        temp_name("x", "bad-kind")


def test_clean_stale_temps_removes_only_dead_owners_of_its_kind(tmp_path: Path) -> None:
    # a pid that surely existed and is now gone: a child we waited for
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead = int(child.stdout)
    mine = temp_name("f", "seal")
    (tmp_path / mine).mkdir()
    stale_dir = tmp_path / f".pkg.auraseal-tmp-seal-{dead}-abc123"
    stale_dir.mkdir()
    (stale_dir / "part").write_bytes(b"x")
    stale_file = tmp_path / f".f.auraseal-tmp-write-{dead}-abc123"
    stale_file.write_bytes(b"x")
    other_kind = tmp_path / f".f.auraseal-tmp-fetch-{dead}-abc123"
    other_kind.mkdir()
    user = tmp_path / ".f.tmp"
    user.write_bytes(b"user file")
    removed = clean_stale_temps(tmp_path, {"seal", "write"})
    assert removed == sorted([stale_dir.name, stale_file.name])
    assert (tmp_path / mine).is_dir() and other_kind.is_dir() and user.read_bytes() == b"user file"
    assert not stale_dir.exists() and not stale_file.exists()


def test_atomic_writer_leaves_no_temp_on_failure(tmp_path: Path) -> None:
    p = tmp_path / "f"
    with pytest.raises(RuntimeError), atomic_writer(p) as fh:
        fh.write(b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
