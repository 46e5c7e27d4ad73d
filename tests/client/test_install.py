"""Atomic install and rollback, with and without renameat2(RENAME_EXCHANGE)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from auraseal.client import install
from auraseal.client.install import Installed, Staging, prev_dir, read_record, rollback, swap_in
from auraseal.errors import NotFoundError, UnsafePathError

from .helpers import snapshot


def _stage(dest: Path, files: dict[str, bytes]) -> Staging:
    st = Staging(dest)
    for rel, data in files.items():
        st.file(rel).write_bytes(data)
    return st


def _inst(v: int) -> Installed:
    return Installed("pkg", v, f"{v:064x}", "http://127.0.0.1/", "2026-11-22T03:00:00Z")


@pytest.mark.parametrize("native", [True, False])
def test_swap_keeps_previous_and_rollback_swaps_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    if not native:
        # the three-rename path
        monkeypatch.setattr(install, "rename_exchange", lambda a, b: errno.ENOSYS)
    dest = tmp_path / "app"
    swap_in(_stage(dest, {"a": b"1", "d/b": b"1"}), _inst(1))
    assert snapshot(dest) == {"a": b"1", "d/b": b"1"}
    rec = swap_in(_stage(dest, {"a": b"2"}), _inst(2))
    assert rec.previous is not None and rec.previous.version == 1
    assert snapshot(dest) == {"a": b"2"}
    assert snapshot(prev_dir(dest)) == {"a": b"1", "d/b": b"1"}
    assert [p.name for p in tmp_path.iterdir() if "stage" in p.name or "swap" in p.name] == []
    back = rollback(dest)
    assert back.current is not None and back.current.version == 1
    assert snapshot(dest) == {"a": b"1", "d/b": b"1"}
    again = read_record(dest)
    assert again is not None and again.previous is not None and again.previous.version == 2
    rollback(dest)
    assert snapshot(dest) == {"a": b"2"}


def test_rollback_without_previous_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "app"
    with pytest.raises(NotFoundError):
        rollback(dest)
    swap_in(_stage(dest, {"a": b"1"}), _inst(1))
    with pytest.raises(NotFoundError) as info:
        rollback(dest)
    assert info.value.exit_code == 2
    assert snapshot(dest) == {"a": b"1"}


def test_staging_refuses_names_leaving_the_tree(tmp_path: Path) -> None:
    st = Staging(tmp_path / "app")
    for bad in ("../x", "/etc/passwd", "a/../../x"):
        with pytest.raises(UnsafePathError):
            st.file(bad)
    st.discard()
    assert list(tmp_path.iterdir()) == []
