"""End to end: seal → serve (our server, then nginx from ``auraseal nginx-conf``)
→ damage 4% of the stored parts and one original → ``auraseal fetch``
recovers every byte."""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from _servers import free_port, run_nginx, run_server

from auraseal.cli import main as cli_main
from auraseal.manifest import Manifest, part_name
from auraseal.sealing import ComponentSpec, seal_tree
from auraseal.signing import SigningKey

from .helpers import no_leftovers, snapshot


def _source_tree(root: Path) -> dict[str, bytes]:
    rnd = random.Random(6)
    files = {
        "index.html": b"<!doctype html><title>site</title>\n" * 40,
        "js/app.js": b"export const answer = 42;\n" * 2000,
        "data/blob.bin": rnd.randbytes(300_000),
        "data/table.csv": "".join(f"{i},{i * i},{rnd.random()}\n" for i in range(4000)).encode(),
        "img/logo.bin": rnd.randbytes(40_000),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def _flip(p: Path, offset: int | None = None) -> None:
    data = bytearray(p.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x5A
    p.write_bytes(bytes(data))


def damage(pkg: Path, manifest: Manifest, original: str, fraction: float = 0.04) -> list[str]:
    """Flip a byte in ``fraction`` of all part files (never more than a
    component's parity ``m``, the first ones of ``original`` included) and in
    the original file ``original``. Returns the damaged names."""
    comps = [(e, e.recovery) for e in manifest.files if e.recovery is not None]
    total = sum(len(r.parts) for _, r in comps)
    want = math.ceil(total * fraction)
    # damage the chosen original's data parts first, so recovery must use parity
    comps.sort(key=lambda c: c[0].path != original)
    damaged: list[str] = []
    budget = {e.path: r.m for e, r in comps}
    while len(damaged) < want and any(budget.values()):
        for e, r in comps:
            if len(damaged) >= want:
                break
            if budget[e.path] == 0:
                continue
            n = r.m - budget[e.path]
            budget[e.path] -= 1
            name = part_name(e.path, n)
            _flip(pkg / name, 200)  # inside the payload (after the 128-byte header)
            damaged.append(name)
    _flip(pkg / original)
    damaged.append(original)
    return damaged


@pytest.fixture
def sealed_root(tmp_path: Path, key: SigningKey) -> tuple[Path, dict[str, bytes], Manifest]:
    src = tmp_path / "src"
    files = _source_tree(src)
    root = tmp_path / "root"
    m = seal_tree(src, root / "site", keys=[key], name="site", version=1)
    return root, files, m


def _fetch(url: str, dest: Path, cache: Path, pub: Path) -> dict[str, object]:
    out = dest.parent / "report.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli_main(["fetch", url, "-o", str(dest), "--trusted-key", str(pub),
                       "--cache", str(cache), "--json"])
    out.write_text(buf.getvalue())
    assert rc == 0, buf.getvalue()
    doc: dict[str, object] = json.loads(buf.getvalue())
    return doc


@pytest.fixture
def pub(tmp_path: Path, key: SigningKey) -> Path:
    p = tmp_path / "key.pub"
    p.write_bytes(key.public.pem())
    return p


def test_e2e_our_server_recovers_byte_exact(
    sealed_root: tuple[Path, dict[str, bytes], Manifest], tmp_path: Path, pub: Path
) -> None:
    root, files, m = sealed_root
    with run_server(root, healing=False) as url:
        # the server adopts ROOT/site (symlink to .versions/site/1); damage what it serves
        damaged = damage(root / "site", m, "data/blob.bin")
        assert len(damaged) >= 3
        dest = tmp_path / "out" / "site"
        rep = _fetch(f"{url}/packages/site", dest, tmp_path / "cache", pub)
    assert snapshot(dest) == files
    no_leftovers(dest)
    srcs = {f["path"]: f["source"] for f in rep["files"]}  # type: ignore[attr-defined]
    # the server repairs from parity before serving, or the client rebuilds from parts
    assert srcs["data/blob.bin"] in ("primary", "parts")
    assert rep["version"] == 1


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A function-scoped nginx serving ``tmp_path/root`` via ``auraseal nginx-conf``."""
    root = tmp_path / "root"
    d = tmp_path / "nginx"
    d.mkdir()
    port = free_port()
    conf = d / "nginx.conf"
    rc = cli_main(["nginx-conf", str(root), "--listen", f"127.0.0.1:{port}",
                   "--standalone", str(d), "-o", str(conf)])
    assert rc == 0
    with run_nginx(conf, port) as url:
        yield root, url


@pytest.mark.nginx
def test_e2e_nginx_recovers_from_parts(
    sealed_root: tuple[Path, dict[str, bytes], Manifest],
    nginx: tuple[Path, str],
    tmp_path: Path,
    pub: Path,
) -> None:
    root, files, m = sealed_root
    _, url = nginx
    damaged = damage(root / "site", m, "data/blob.bin")
    dest = tmp_path / "out" / "site"
    rep = _fetch(f"{url}/packages/site/files/", dest, tmp_path / "cache", pub)
    assert snapshot(dest) == files
    no_leftovers(dest)
    by = {f["path"]: f for f in rep["files"]}  # type: ignore[attr-defined]
    blob = by["data/blob.bin"]
    assert blob["source"] == "parts"  # nginx serves the damaged bytes as they are
    rec = m.entry("data/blob.bin").recovery
    assert rec is not None
    assert blob["parts_used"] == rec.k
    bad_blob_parts = sum(1 for d in damaged if d.startswith("data/blob.bin.part."))
    assert bad_blob_parts >= 1
    # the damaged original still re-creates every data part but the one holding
    # the flipped byte (codec none: stream offset -> stripe -> fragment); only
    # that one is fetched, then parity if the server's copy of it is damaged too
    assert rec.codec == "none"
    off = m.entry("data/blob.bin").size // 2
    plan = ComponentSpec.from_entry(m.entry("data/blob.bin")).plan
    lost = (off % plan.stripe_size) // plan.fragment_size
    assert blob["parts_salvaged"] == rec.k - 1
    assert blob["bad_parts"] == (1 if part_name("data/blob.bin", lost) in damaged else 0)
    # every other file was served intact (its parts may be damaged: never fetched)
    assert {p for p, f in by.items() if f["source"] != "primary"} == {"data/blob.bin"}
