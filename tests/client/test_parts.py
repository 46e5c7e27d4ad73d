"""Recovery from parts (Reed-Solomon, as ``auraseal unseal``) fetched over HTTP
from every source at once, against packages made by the real ``seal_tree``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from auraseal.errors import ComponentLostError
from auraseal.manifest import Manifest, part_name
from auraseal.sealing import seal_tree
from auraseal.signing import SigningKey

from .conftest import Client
from .faultserver import FaultServer, fault_server
from .helpers import no_leftovers, snapshot

FILES = {
    "r.bin": os.urandom(50_000),  # incompressible: k = 13, m = 4 at 4 KiB parts, coherence 0.8
    "doc/t.txt": b"a line of text\n" * 3000,
}


@pytest.fixture
def sealed(tmp_path: Path, key: SigningKey) -> tuple[Path, Path, Manifest]:
    src = tmp_path / "src"
    for rel, data in FILES.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    m = seal_tree(src, tmp_path / "a", part_size=4096, coherence=0.8, keys=[key], name="s")
    seal_tree(src, tmp_path / "b", part_size=4096, coherence=0.8, keys=[key], name="s")
    return tmp_path / "a", tmp_path / "b", m


@pytest.fixture
def servers(sealed: tuple[Path, Path, Manifest]) -> Iterator[tuple[FaultServer, FaultServer]]:
    with fault_server(sealed[0]) as a, fault_server(sealed[1]) as b:
        yield a, b


def _entry(m: Manifest, path: str) -> tuple[int, int]:
    rec = m.entry(path).recovery
    assert rec is not None
    return rec.k, rec.m


def test_corrupt_original_rebuilt_from_parts(
    client: Client, servers: tuple[FaultServer, FaultServer], sealed: tuple[Path, Path, Manifest]
) -> None:
    a, _ = servers
    m = sealed[2]
    k, _m = _entry(m, "r.bin")
    a.fault("r.bin", "flip")
    r = client(a.url)
    assert snapshot(client.dest) == FILES
    f = {x.path: x for x in r.files}["r.bin"]
    assert f.source == "parts"
    assert f.parts_used == k and f.bad_parts == 0
    assert sum(a.hits[part_name("r.bin", i)] for i in range(k)) == k  # exactly k fetched
    assert any(t == "fetch.recovered" for t, _ in client.events)


def test_bad_parts_on_primary_taken_from_mirror(
    client: Client, servers: tuple[FaultServer, FaultServer], sealed: tuple[Path, Path, Manifest]
) -> None:
    a, b = servers
    k, m = _entry(sealed[2], "r.bin")
    a.fault("r.bin", "status", status=404)
    b.fault("r.bin", "flip")
    for i in range(k + m):  # each part is bad where it is first asked for, good elsewhere
        (b if i % 2 else a).fault(part_name("r.bin", i), "flip" if i % 3 else "status", status=404)
    r = client(a.url, mirrors=[b.url])
    assert snapshot(client.dest) == FILES
    f = {x.path: x for x in r.files}["r.bin"]
    assert f.source == "parts" and f.parts_used == k
    assert f.bad_parts >= 1
    assert sum(b.hits[part_name("r.bin", i)] for i in range(k + m)) > 0
    assert sum(a.hits[part_name("r.bin", i)] for i in range(k + m)) > 0


def test_missing_parts_within_parity_recovered(
    client: Client, servers: tuple[FaultServer, FaultServer], sealed: tuple[Path, Path, Manifest]
) -> None:
    a, _ = servers
    k, m = _entry(sealed[2], "r.bin")
    a.fault("r.bin", "truncate")
    for i in range(m):  # lose exactly m data parts: still k good
        a.fault(part_name("r.bin", i), "status", status=404)
    r = client(a.url)
    f = {x.path: x for x in r.files}["r.bin"]
    assert f.source == "parts" and f.bad_parts == m and f.parts_used == k
    assert snapshot(client.dest) == FILES


def test_too_few_parts_refused_exit_4_dir_unchanged(
    client: Client, servers: tuple[FaultServer, FaultServer], sealed: tuple[Path, Path, Manifest]
) -> None:
    a, _ = servers
    client(a.url)
    before = snapshot(client.dest)
    _k, m = _entry(sealed[2], "r.bin")
    a.fault("r.bin", "flip")
    for i in range(m + 1):
        a.fault(part_name("r.bin", i), "flip")
    other = client.dest.parent / "other"
    with pytest.raises(ComponentLostError) as info:
        client(a.url, dest=other, cache_dir=client.cache.parent / "c2")
    assert info.value.exit_code == 4
    assert "too few good parts" in str(info.value)
    assert not other.exists()
    assert snapshot(client.dest) == before
    no_leftovers(client.dest)
