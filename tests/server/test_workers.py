"""Several server processes on one ROOT (what `auraseal serve --workers N` runs):
publishes, start-up adoption and the package archive under real concurrency.

Each "worker" is a separate Python process running the real server on its own
loopback port over the shared ROOT. Slowness is injected deterministically: a
driver wraps the publish checks so that a chosen version waits for a go-file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from _servers import free_port, run_server, wait_listening

from auraseal._fs import is_temp_name
from auraseal.sealing import seal_tree
from auraseal.signing import SigningKey

WORKER = r"""
import os, sys, time
from pathlib import Path
from auraseal.server import app as app_mod
from _servers import run_server
from auraseal.signing import load_public_key

root, key, tokens, hold, out = sys.argv[1:6]
real_check = app_mod.check_package

def slow_check(staging, name, **kw):
    verified = real_check(staging, name, **kw)
    if verified.manifest.version == int(hold):  # a slow publish: checked, then held
        Path(out + ".held").write_text("1")
        while not Path(out + ".go").exists():
            time.sleep(0.01)
    return verified

app_mod.check_package = slow_check
with run_server(Path(root), trusted_keys=(load_public_key(Path(key)),),
                publish_token_file=Path(tokens), healing=False) as url:
    Path(out + ".tmp").write_text(url)
    os.replace(out + ".tmp", out)
    sys.stdin.read()
"""


class Worker:
    def __init__(self, proc: subprocess.Popen[bytes], out: Path, url: str) -> None:
        self.proc, self.out, self.url = proc, out, url

    def wait_held(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not Path(str(self.out) + ".held").exists():
            assert time.monotonic() < deadline, "publish never reached the checks"
            time.sleep(0.01)

    def release(self) -> None:
        Path(str(self.out) + ".go").write_text("1")


@pytest.fixture
def workers(tmp_path: Path, publisher_key: SigningKey,
            token: tuple[str, Path]) -> Iterator[Callable[[Path, int], Worker]]:
    key = tmp_path / "publisher.pub"
    key.write_bytes(publisher_key.public.pem())
    procs: list[subprocess.Popen[bytes]] = []

    def start(root: Path, hold: int = -1) -> Worker:
        out = tmp_path / f"worker-{len(procs)}.url"
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(root), str(key), str(token[1]), str(hold),
             str(out)],
            stdin=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        procs.append(proc)
        deadline = time.monotonic() + 60
        while not out.exists():
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode() if proc.stderr else "died")
            assert time.monotonic() < deadline, "worker did not start"
            time.sleep(0.02)
        return Worker(proc, out, out.read_text())

    yield start
    for p in procs:
        if p.stdin:
            p.stdin.close()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p.stderr:
            p.stderr.close()


def _put(url: str, body: bytes, tok: str) -> httpx.Response:
    return httpx.put(f"{url}/packages/site", content=body, timeout=120,
                     headers={"authorization": f"Bearer {tok}"})


def _trusted_version(root: Path) -> int:
    doc = json.loads((root / ".auraseal" / "trust-state.json").read_text())
    version: int = doc["trusted"]["site"]["version"]
    return version


def _race(workers: Callable[..., Worker], root: Path, site_zip: Callable[[int], bytes],
          tok: str, slow: int, fast: int) -> tuple[int, int]:
    """Worker A publishes ``slow`` and is held after its checks; meanwhile worker B
    publishes ``fast``; then A goes on. Returns (A's status, B's status)."""
    a = workers(root, slow)
    b = workers(root)
    got: dict[str, int] = {}
    t = threading.Thread(target=lambda: got.update(a=_put(a.url, site_zip(slow), tok).status_code))
    t.start()
    try:
        a.wait_held()
        got["b"] = _put(b.url, site_zip(fast), tok).status_code
    finally:
        a.release()
        t.join(120)
    return got["a"], got["b"]


def test_slow_lower_publish_on_another_worker_cannot_roll_back(
    root: Path, workers: Callable[..., Worker], token: tuple[str, Path],
    site_zip: Callable[[int], bytes],
) -> None:
    """A slow v2 on worker A and a fast v3 on worker B: v3 stays served and trusted."""
    a_status, b_status = _race(workers, root, site_zip, token[0], slow=2, fast=3)
    assert b_status == 201
    assert a_status == 409
    assert _trusted_version(root) == 3
    assert os.readlink(root / "site").endswith("/3")
    assert not [p for p in root.iterdir() if is_temp_name(p.name)]


def test_same_version_published_on_two_workers_is_409_not_503(
    root: Path, workers: Callable[..., Worker], token: tuple[str, Path],
    site_zip: Callable[[int], bytes],
) -> None:
    a_status, b_status = _race(workers, root, site_zip, token[0], slow=2, fast=2)
    assert (a_status, b_status) == (409, 201)
    assert _trusted_version(root) == 2
    assert os.readlink(root / "site").endswith("/2")


ADOPT = r"""
import sys, time
from pathlib import Path
from auraseal.server.store import PackageStore

root, go, ready = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
ready.write_text("1")
while not go.exists():
    time.sleep(0.001)
store = PackageStore(root)
store.clean_staging()
store.adopt()
"""


def test_workers_starting_together_adopt_plain_packages_safely(
    tmp_path: Path, sealed_versions: dict[int, Path]
) -> None:
    """Replays `--workers 2` start-up: every worker adopts the plain package
    folders at once. None may crash, none may leave a stray symlink."""
    failures = []
    for attempt in range(2):
        root = tmp_path / f"root{attempt}"
        root.mkdir()
        names = [f"p{i}" for i in range(6)]
        for n in names:
            shutil.copytree(sealed_versions[1], root / n)
        go = tmp_path / f"go{attempt}"
        ready = [tmp_path / f"ready{attempt}-{i}" for i in range(4)]
        procs = [subprocess.Popen([sys.executable, "-c", ADOPT, str(root), str(go), str(r)],
                                  stderr=subprocess.PIPE) for r in ready]
        deadline = time.monotonic() + 60
        while not all(r.exists() for r in ready):  # every process waits at the start line
            assert time.monotonic() < deadline
            time.sleep(0.01)
        go.write_text("1")
        for p in procs:
            p.wait(60)
            err = p.stderr.read().decode() if p.stderr else ""
            if p.returncode != 0:
                failures.append(err.strip().splitlines()[-1])
            if p.stderr:
                p.stderr.close()
        for n in names:
            link = root / n
            assert link.is_symlink(), n
            assert os.readlink(link) == f".versions/{n}/1"
            assert (root / ".versions" / n / "1" / "integrity-manifest.json").is_file()
        stray = [p.name for p in root.iterdir() if p.name not in
                 (*names, ".auraseal", ".versions")]
        assert not stray
    assert not failures


def test_serve_with_two_workers_adopts_once_in_the_parent(
    root: Path, publisher_key: SigningKey, tmp_path: Path
) -> None:
    key = tmp_path / "publisher.pub"
    key.write_bytes(publisher_key.public.pem())
    for n in ("a", "b", "c"):
        shutil.copytree(root / "site", root / n)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "auraseal", "serve", str(root), "--port", str(port),
         "--workers", "2", "--server", "uvicorn", "--trusted-key", str(key)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        wait_listening(port, 60, proc)
        for n in ("site", "a", "b", "c"):
            assert (root / n).is_symlink()
        for _ in range(8):
            r = httpx.get(f"http://127.0.0.1:{port}/packages/a/files/index.html")
            assert r.status_code == 200
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    assert "Traceback" not in err, err
    assert not [p.name for p in root.iterdir() if p.name.startswith(".") and
                p.name not in (".auraseal", ".versions")]


# --- the package archive ----------------------------------------------------------


def _members(body: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def test_archive_is_never_built_from_damaged_bytes_or_kept_after_repair(
    root: Path, sealed_versions: dict[int, Path], serve: Callable[..., str],
    token: tuple[str, Path],
) -> None:
    url = serve(root, healing=False)
    auth = {"authorization": f"Bearer {token[0]}"}
    good = sealed_versions[1]
    # the package was scrubbed intact, then a byte rots on disk
    assert httpx.post(f"{url}/packages/site/scrub", headers=auth).json()["health"][
        "state"] == "intact"
    blob = root / "site" / "data" / "blob.bin"
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    with open(blob, "r+b") as fh:  # in place, like bit rot
        fh.write(bytes(data))
    r = httpx.get(f"{url}/packages/site", timeout=60)
    assert r.status_code == 200, r.text
    first = _members(r.content)
    assert first["data/blob.bin"] == (good / "data" / "blob.bin").read_bytes()
    assert blob.read_bytes() == (good / "data" / "blob.bin").read_bytes()  # repaired
    # damage again after the archive exists: a repair drops the cached archive
    notes = root / "site" / "data" / "notes.txt"
    with open(notes, "r+b") as fh:
        fh.write(b"XXXX")
    zdir = root / ".auraseal" / "zips"
    assert [p for p in zdir.iterdir() if p.suffix == ".zip"]
    assert httpx.post(f"{url}/packages/site/scrub", headers=auth).json()["health"][
        "state"] == "intact"
    assert not [p for p in zdir.iterdir() if p.suffix == ".zip"]
    again = httpx.get(f"{url}/packages/site", timeout=60)
    assert again.status_code == 200
    assert _members(again.content) == first
    assert again.headers["etag"] == r.headers["etag"]  # same bytes when rebuilt


def test_archive_damaged_on_disk_is_rebuilt(
    root: Path, serve: Callable[..., str]
) -> None:
    url = serve(root, healing=False)
    r = httpx.get(f"{url}/packages/site", timeout=60)
    assert r.status_code == 200
    zpath = next(p for p in (root / ".auraseal" / "zips").iterdir() if p.suffix == ".zip")
    with open(zpath, "r+b") as fh:
        fh.seek(200)
        fh.write(b"rot!")
    again = httpx.get(f"{url}/packages/site", timeout=60)
    assert again.status_code == 200
    assert again.content == r.content


BIG = 18 << 20  # with its parity parts: a ~40 MB package


@pytest.fixture(scope="module")
def big_archive_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("bigzip")
    src = base / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(BIG))
    (src / "small.txt").write_bytes(b"hello\n")
    root = base / "root"
    root.mkdir()
    seal_tree(src, root / "big", name="big", version=1)
    return root


def test_concurrent_first_archive_requests_build_one_zip(
    big_archive_root: Path, token: tuple[str, Path]
) -> None:
    """Eight concurrent first requests for a ~40 MB package (18 MiB file and its
    parts) build it once: one temp zip, not one per request."""
    zdir = big_archive_root / ".auraseal" / "zips"
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError):
                seen.update(n for n in os.listdir(zdir) if n.startswith("."))
            time.sleep(0.002)

    bodies: list[bytes] = []
    statuses: list[int] = []
    lock = threading.Lock()
    with run_server(big_archive_root, healing=False, publish_token_file=token[1]) as url:
        # the store was scrubbed (as the background healing does): requests go
        # straight to the archive
        scrub = httpx.post(f"{url}/packages/big/scrub", timeout=60,
                           headers={"authorization": f"Bearer {token[0]}"})
        assert scrub.json()["health"]["state"] == "intact"
        watcher = threading.Thread(target=watch)
        watcher.start()

        def get() -> None:
            r = httpx.get(f"{url}/packages/big", timeout=120)
            with lock:
                statuses.append(r.status_code)
                bodies.append(hashlib.sha256(r.content).digest())

        threads = [threading.Thread(target=get) for _ in range(8)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(180)
        finally:
            done.set()
            watcher.join()
    assert statuses == [200] * 8
    assert len(set(bodies)) == 1
    temps = {n for n in seen if ".zip" in n and (n.endswith(".tmp") or is_temp_name(n))}
    assert len(temps) == 1, sorted(temps)
    assert not [n for n in os.listdir(zdir) if n.startswith(".") and is_temp_name(n)]
