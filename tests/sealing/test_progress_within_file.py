"""Progress bars move within one large file: seal, scrub, repair, unseal and
fetch report bytes as a 20 MiB file is processed, not once when it is done.

Each test records the ``progress(nbytes)`` calls for a package holding one
20 MiB file: several increments, summing exactly to the file's size.
"""

from __future__ import annotations

import json
import os
import pty
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


@pytest.mark.parametrize("command", ["hash", "check"])
def test_hash_and_check_draw_a_byte_progress_bar_on_stderr(
    sealed: tuple[Path, Path, Recorder], command: str
) -> None:
    """``auraseal hash|check BIG`` with stderr on a terminal draws a bar
    counting bytes there (hash and check drew none, and every bar went to
    stdout, so ``auraseal ... > out`` showed no progress); with ``--json``
    the output stays a single JSON document and stderr is empty."""
    big = sealed[0] / "site" / "big.bin"
    exe = str(Path(sys.executable).parent / "auraseal")
    integrity = subprocess.run([exe, "hash", str(big)], capture_output=True, text=True,
                               check=True).stdout.strip()
    argv = [exe, "hash", str(big)] if command == "hash" else [exe, "check", str(big), integrity]
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=slave, timeout=60,
                              check=False, env={**os.environ, "COLUMNS": "120"})
        os.close(slave)
        drawn = b""
        while True:
            try:
                got = os.read(master, 65536)
            except OSError:  # EIO: the child side is closed
                break
            if not got:
                break
            drawn += got
    finally:
        os.close(master)
    assert proc.returncode == 0
    word = b"hashing" if command == "hash" else b"checking"
    assert word in drawn and b"MB" in drawn, drawn[:400]
    quiet = subprocess.run([*argv, "--json"], capture_output=True, text=True, check=True)
    assert quiet.stderr == "" and json.loads(quiet.stdout)["file"] == str(big)
