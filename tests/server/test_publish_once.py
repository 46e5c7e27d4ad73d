"""A publish reads each byte once and parses its manifest once; a fetch parses
the manifest once and verifies each signature once (issue 13).

Counted through the real server code path (uvicorn on loopback) with a
:class:`~auraseal.sealing.source.CountingSource` injected by the state's
``publish_source_hook`` test seam, and through counters on the one manifest
parser (``auraseal.manifest.parse_json``) and on ``PublicKey.verify``.
"""

from __future__ import annotations

import contextlib
import io
import random
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _servers import run_app

import auraseal.manifest as manifest_mod
from auraseal._canonical import canonical_json
from auraseal.client import fetch_package
from auraseal.client.publish import _dir_upload, publish_package
from auraseal.manifest import MANIFEST_NAME, resign_manifest
from auraseal.sealing import seal_tree
from auraseal.sealing.source import CountingSource, MemberSource
from auraseal.server.app import create_app
from auraseal.server.config import ServerConfig
from auraseal.server.publish import new_token
from auraseal.server.state import ServerState
from auraseal.signing import PublicKey, SigningKey, TrustPolicy

from .conftest import zip_dir

MiB = 1 << 20


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def big_package(tmp_path_factory: pytest.TempPathFactory, key: SigningKey) -> Path:
    """'big' v1: a 5 MiB and a 20 MiB random file, their parts, signed."""
    base = tmp_path_factory.mktemp("big")
    src = base / "src"
    src.mkdir()
    rnd = random.Random(13)
    (src / "five.bin").write_bytes(rnd.randbytes(5 * MiB))
    (src / "sub").mkdir()
    (src / "sub" / "twenty.bin").write_bytes(rnd.randbytes(20 * MiB))
    (src / "small.txt").write_bytes(b"a small text file\n" * 10)
    out = base / "pkg"
    seal_tree(src, out, keys=[key], name="big", version=1)
    return out


class Server:
    def __init__(self, url: str, state: ServerState, token: str) -> None:
        self.url, self.state, self.token = url, state, token
        self.sources: list[CountingSource] = []

    def put(self, body: bytes, content_type: str, name: str = "big") -> httpx.Response:
        return httpx.put(f"{self.url}/packages/{name}", content=body, timeout=120,
                         headers={"Authorization": f"Bearer {self.token}",
                                  "Content-Type": content_type})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, key: SigningKey) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("srv")
    root = base / "root"
    root.mkdir()
    tok, line = new_token()
    (base / "tokens.txt").write_text(line + "\n")
    cfg = ServerConfig(root=root, trusted_keys=(key.public,),
                       publish_token_file=base / "tokens.txt", healing=False)
    state = ServerState(cfg)
    app = create_app(cfg, state=state)
    with run_app(app) as url:
        srv = Server(url, state, tok)

        def hook(src: MemberSource) -> MemberSource:
            counting = CountingSource(src)
            srv.sources.append(counting)
            return counting

        state.publish_source_hook = hook
        yield srv


@contextlib.contextmanager
def counted(monkeypatch: pytest.MonkeyPatch, raw: bytes) -> Iterator[Counter[str]]:
    """Count parses of ``raw`` (the manifest's bytes) and verifications of
    signatures over its signed body while the block runs."""
    counts: Counter[str] = Counter()
    body = canonical_json(manifest_mod.parse_json(raw, "test")["signed"])
    real_parse = manifest_mod.parse_json
    real_verify = PublicKey.verify

    def parse(data: bytes, where: str) -> Any:
        if bytes(data) == raw:
            counts["parse"] += 1
        return real_parse(data, where)

    def verify(self: PublicKey, signature: bytes, data: bytes, where: str = "") -> None:
        if bytes(data) == body:
            counts["verify"] += 1
        real_verify(self, signature, data, where)

    with monkeypatch.context() as mp:
        mp.setattr(manifest_mod, "parse_json", parse)
        mp.setattr(PublicKey, "verify", verify)
        yield counts


def _members(pkg: Path) -> dict[str, int]:
    return {p.relative_to(pkg).as_posix(): p.stat().st_size
            for p in pkg.rglob("*") if p.is_file()}


def test_publish_reads_each_byte_once_and_parses_the_manifest_once(
    server: Server, big_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = zip_dir(big_package)
    raw = (big_package / MANIFEST_NAME).read_bytes()
    with counted(monkeypatch, raw) as counts:
        resp = server.put(body, "application/zip")
    assert resp.status_code == 201, resp.text
    assert len(server.sources) == 1
    got = server.sources[0].counts
    sizes = _members(big_package)
    assert max(sizes.values()) == 20 * MiB
    assert {n: got[n] for n in sizes} == sizes  # every member, every byte, once
    assert set(got) == set(sizes)
    assert counts == {"parse": 1, "verify": 1}
    # what was installed is what was read (copied from the same read)
    served = server.state.store.get("big")
    assert _members(Path(served.dir)) == sizes
    assert (Path(served.dir) / "sub" / "twenty.bin").read_bytes() == (
        big_package / "sub" / "twenty.bin").read_bytes()


def test_manifest_only_publish_reads_each_linked_byte_once(
    server: Server, big_package: Path, key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    if server.state.store.current_version("big") is None:
        assert server.put(zip_dir(big_package), "application/zip").status_code == 201
    current = server.state.store.get("big")
    _, data = resign_manifest(current.manifest_bytes, [key])
    server.sources.clear()
    with counted(monkeypatch, data) as counts:
        resp = server.put(data, "application/json")
    assert resp.status_code == 201, resp.text
    got = server.sources[0].counts
    sizes = {n: s for n, s in _members(big_package).items() if n != MANIFEST_NAME}
    assert {n: got[n] for n in sizes} == sizes
    assert counts == {"parse": 1, "verify": 1}


@pytest.mark.parametrize("trust", ["trusted-key", "first-use"])
def test_fetch_parses_the_manifest_once_and_verifies_each_signature_once(
    server: Server, tmp_path: Path, key: SigningKey, monkeypatch: pytest.MonkeyPatch,
    trust: str,
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "index.html").write_bytes(b"<p>hello</p>\n" * 300)
    pkg = tmp_path / "pkg"
    seal_tree(src, pkg, keys=[key], name=f"small-{trust}", version=1)
    assert server.put(zip_dir(pkg), "application/zip", f"small-{trust}").status_code == 201
    raw = (pkg / MANIFEST_NAME).read_bytes()
    # the server (same process) loads its view of the package first: not the client's parse
    assert httpx.get(f"{server.url}/packages/small-{trust}/files/{MANIFEST_NAME}").content == raw
    kw: dict[str, Any] = (
        {"policy": TrustPolicy([key.public], 1)} if trust == "trusted-key"
        else {"trust_on_first_use": True}
    )
    with counted(monkeypatch, raw) as counts:
        report = fetch_package(f"{server.url}/packages/small-{trust}", tmp_path / "out",
                               cache_dir=tmp_path / "cache", **kw)
    assert report.trust["verified"]
    assert counts == {"parse": 1, "verify": 1}
    assert (tmp_path / "out" / "index.html").read_bytes() == (src / "index.html").read_bytes()


def test_client_publish_of_a_directory_reads_each_file_once(
    server: Server, tmp_path: Path, key: SigningKey
) -> None:
    """`auraseal publish DIR` streams the zip: no temp zip read back, each file once."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "five.bin").write_bytes(random.Random(5).randbytes(5 * MiB))
    (src / "a.txt").write_bytes(b"text\n" * 1000)
    pkg = tmp_path / "pkg"
    seal_tree(src, pkg, keys=[key], name="dirpub", version=1)
    reads: list[CountingSource] = []

    def wrap(source: MemberSource) -> MemberSource:
        reads.append(CountingSource(source))
        return reads[-1]

    server.sources.clear()
    result = publish_package(pkg, server.url, server.token, wrap=wrap)
    assert result.status == "published"
    sizes = _members(pkg)
    files = {n: s for n, s in sizes.items() if n != MANIFEST_NAME}  # read once, before
    assert len(reads) == 1
    assert dict(reads[0].counts) == files
    assert {n: server.sources[0].counts[n] for n in sizes} == sizes
    assert result.bytes > sum(sizes.values())  # the zip: members plus headers


def test_streamed_zip_length_is_announced_exactly(tmp_path: Path, key: SigningKey) -> None:
    """The directory publish sends a Content-Length (plain proxies refuse chunked
    uploads): stored_zip_size must equal what the stream produces."""
    src = tmp_path / "src"
    (src / "dïr").mkdir(parents=True)
    (src / "dïr" / "ünïcode-名前.txt").write_bytes(b"x" * 70_000)
    (src / "empty").write_bytes(b"")
    (src / "b.bin").write_bytes(random.Random(1).randbytes(300_000))
    pkg = tmp_path / "pkg"
    seal_tree(src, pkg, keys=[key], name="z", version=1)
    up = _dir_upload(pkg, None)
    body = b"".join(up.body(manifest_mod.load_manifest(up.manifest)))
    assert up.size == len(body)
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None
        assert sorted(zf.namelist()) == sorted(_members(pkg))
