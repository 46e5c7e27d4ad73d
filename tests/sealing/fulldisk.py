"""Helpers for the full-disk tests: a small tmpfs per test, the CLI as a
subprocess, and checks that nothing half-written is left behind."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from auraseal._fs import is_temp_name

MiB = 1 << 20

Mount = Callable[[str], Path]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Mount]:
    """``mount(size)``: a fresh tmpfs of ``size`` (e.g. ``"24m"``), always unmounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        mnt = tmp_path / f"mnt{len(mounted)}"
        mnt.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs (EPERM?): {proc.stderr.decode().strip()}")
        mounted.append(mnt)
        return mnt

    try:
        yield mount
    finally:
        for mnt in reversed(mounted):
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def grow(mnt: Path, size: str) -> None:
    """Give the tmpfs at ``mnt`` more room (``mount -o remount,size=...``)."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)


def cli(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``auraseal ARGV`` in a subprocess (its own stderr, exit code, no test state)."""
    return subprocess.run(
        [sys.executable, "-m", "auraseal", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "AURASEAL_LEDGER": "", "PYTHONDONTWRITEBYTECODE": "1"},
    )


def assert_enospc(proc: subprocess.CompletedProcess[str], path: Path) -> None:
    """Exit 5 with exactly one line ``auraseal: error: <path...>: ...No space left...``."""
    assert proc.returncode == 5, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith(f"auraseal: error: {path}"), line
    assert "No space left" in line, line
    assert "Traceback" not in proc.stderr
    assert ".auraseal-tmp-" not in line  # names the real path, not a temp


def temps(root: Path) -> list[str]:
    """AuraSeal temp entries (files or directories) anywhere below ``root``."""
    out: list[str] = []
    for dirpath, dirs, files in os.walk(root):
        out += [os.path.join(dirpath, n) for n in dirs + files if is_temp_name(n)]
    return out


def fill(mnt: Path, leave: int) -> Path:
    """Fill the file system at ``mnt`` until about ``leave`` bytes are free."""
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    filler = mnt / "filler"
    with open(filler, "ab") as fh:
        fh.write(bytes(max(0, free - leave)))
    return filler


def digests(root: Path) -> dict[str, str]:
    """SHA-256 of every regular file below ``root`` (relative names)."""
    if not root.exists():
        return {}
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
