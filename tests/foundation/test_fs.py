"""Safe names and atomic writes, with storage faults injected."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auraseal._fs import atomic_write_bytes, atomic_writer, resolve_inside, safe_relpath
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
