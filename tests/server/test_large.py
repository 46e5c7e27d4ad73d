"""Files above the in-memory limit: streamed (uvicorn) or pathsend (granian),
verified once before they are first served, ranges, 304, gzip, repair on read."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _servers import free_port, run_server

from auraseal.sealing import seal_tree
from auraseal.server.static import SMALL_FILE

BIG = 3 << 20


@pytest.fixture(scope="module")
def big_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("large")
    src = base / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(BIG))
    text = b"".join(b"line %08d of a compressible text file\n" % i for i in range(12_000))
    assert SMALL_FILE < len(text) < 8 << 20
    (src / "big.txt").write_bytes(text)
    root = base / "root"
    root.mkdir()
    seal_tree(src, root / "big", name="big", version=1)
    return root


@pytest.fixture(scope="module")
def big_url(big_root: Path) -> Iterator[str]:
    with run_server(big_root, healing=False) as url:
        yield url


def test_large_file_full_range_head_304(big_url: str, big_root: Path) -> None:
    data = (big_root / "big" / "big.bin").read_bytes()
    url = f"{big_url}/packages/big/files/big.bin"
    r = httpx.get(url, timeout=30)
    assert r.status_code == 200 and r.content == data
    assert r.headers["etag"] == f'"sha512-{hashlib.sha512(data).hexdigest()[:40]}"'
    assert int(r.headers["content-length"]) == BIG
    h = httpx.head(url)
    assert h.content == b"" and h.headers["content-length"] == str(BIG)
    assert httpx.get(url, headers={"if-none-match": r.headers["etag"]}).status_code == 304
    for header, first, last in (("bytes=1048570-2097160", 1048570, 2097160),
                                ("bytes=-1000", BIG - 1000, BIG - 1), ("bytes=3000000-", 3000000,
                                                                       BIG - 1)):
        rr = httpx.get(url, headers={"range": header}, timeout=30)
        assert rr.status_code == 206
        assert rr.content == data[first : last + 1]
        assert rr.headers["content-range"] == f"bytes {first}-{last}/{BIG}"
    assert httpx.get(url, headers={"range": f"bytes={BIG}-"}).status_code == 416


def test_large_text_gzip(big_url: str, big_root: Path) -> None:
    raw = (big_root / "big" / "big.txt").read_bytes()
    r = httpx.get(f"{big_url}/packages/big/files/big.txt", headers={"accept-encoding": "gzip"},
                  timeout=30)
    assert r.headers["content-encoding"] == "gzip"
    assert r.content == raw
    assert int(r.headers["content-length"]) < len(raw) // 3


def test_large_damaged_file_is_repaired_before_serving(tmp_path: Path, big_root: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(big_root / "big", root / "big", symlinks=False)
    p = root / "big" / "big.bin"
    good = p.read_bytes()
    bad = bytearray(good)
    bad[BIG // 2] ^= 0xFF
    p.write_bytes(bytes(bad))
    with run_server(root, healing=False) as url:
        r = httpx.get(f"{url}/packages/big/files/big.bin", timeout=60)
        assert r.status_code == 200
        assert r.content == good
    assert (root / ".versions" / "big" / "1" / "big.bin").read_bytes() == good


def test_granian_process_serves_large_and_small(big_root: Path) -> None:
    port = free_port()
    exe = Path(sys.executable).parent / "auraseal"
    proc = subprocess.Popen([str(exe), "serve", str(big_root), "--port", str(port),
                             "--server", "granian", "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}/packages/big/files"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                assert time.monotonic() < deadline
                time.sleep(0.2)
        data = (big_root / "big" / "big.bin").read_bytes()
        for _ in range(2):
            r = httpx.get(f"{base}/big.bin", timeout=30)
            assert r.status_code == 200 and r.content == data
        rr = httpx.get(f"{base}/big.bin", headers={"range": "bytes=10-19"})
        assert rr.status_code == 206 and rr.content == data[10:20]
        part = (big_root / "big" / "big.bin.part.0").read_bytes()
        for _ in range(3):  # the hot path (memoised after the first answer)
            p = httpx.get(f"{base}/big.bin.part.0")
            assert p.status_code == 200 and p.content == part
            assert p.headers["x-content-type-options"] == "nosniff"
            assert p.headers["access-control-allow-origin"] == "*"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
