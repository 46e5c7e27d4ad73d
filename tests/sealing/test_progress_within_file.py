"""Progress bars move within one large file: seal, scrub, repair, unseal and
fetch report bytes as a 20 MiB file is processed, not once when it is done.

Each test records the ``progress(nbytes)`` calls for a package holding one
20 MiB file: several increments, summing exactly to the file's size.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from auraseal.client import fetch_package
from auraseal.sealing import open_package, repair, scrub, seal_tree, unseal
from auraseal.signing import TrustPolicy, generate_keypair, load_public_key

SIZE = 20 << 20


class Recorder:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, n: int) -> None:
        self.calls.append(n)

    # the client's FetchProgress protocol
    def start(self, total_bytes: int, total_files: int) -> None:
        self.total = total_bytes

    def advance(self, n: int) -> None:
        self.calls.append(n)

    def file_done(self, path: str, source: str) -> None:
        pass

    def check(self) -> None:
        assert len([n for n in self.calls if n > 0]) >= 3, self.calls
        assert sum(self.calls) == SIZE, self.calls


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Recorder]:
    root = tmp_path_factory.mktemp("progress")
    src = root / "site"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(SIZE))
    key = generate_keypair(root / "release.key")
    rec = Recorder()
    seal_tree(src, root / "pkg", keys=[key], progress=rec, jobs=2)
    return root, root / "pkg", rec


def test_seal_progress_moves_within_a_large_file(sealed: tuple[Path, Path, Recorder]) -> None:
    sealed[2].check()


def test_scrub_progress_moves_within_a_large_file(sealed: tuple[Path, Path, Recorder]) -> None:
    rec = Recorder()
    with open_package(sealed[1]) as pkg:
        assert scrub(pkg, progress=rec, jobs=2).exit_code == 0
    rec.check()


def test_repair_progress_moves_within_a_large_file(sealed: tuple[Path, Path, Recorder]) -> None:
    rec = Recorder()
    with open_package(sealed[1]) as pkg:
        repair(pkg, progress=rec, jobs=2)
    rec.check()


def test_unseal_progress_moves_within_a_large_file(
    sealed: tuple[Path, Path, Recorder], tmp_path: Path
) -> None:
    rec = Recorder()
    with open_package(sealed[1]) as pkg:
        unseal(pkg, tmp_path / "out", progress=rec, jobs=2)
    rec.check()


@pytest.fixture()
def static_host(sealed: tuple[Path, Path, Recorder]) -> Iterator[str]:
    """``python3 -m http.server`` serving the package directory."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(sealed[1])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_fetch_progress_moves_within_a_large_file(
    sealed: tuple[Path, Path, Recorder], static_host: str, tmp_path: Path
) -> None:
    rec = Recorder()
    policy = TrustPolicy([load_public_key(sealed[0] / "release.key.pub")], 1)
    fetch_package(static_host, tmp_path / "installed", policy=policy, progress=rec,
                  package="site", cache_dir=None)
    rec.check()


def test_seal_progress_moves_within_a_large_compressible_file(tmp_path: Path) -> None:
    src = tmp_path / "site"
    src.mkdir()
    (src / "big.txt").write_bytes(b"0123456789abcdef\n" * (SIZE // 17) + b"x" * (SIZE % 17))
    rec = Recorder()
    seal_tree(src, tmp_path / "pkg", progress=rec, jobs=2)
    rec.check()
