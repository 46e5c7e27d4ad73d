"""Recovery from parts (Reed-Solomon, as ``auraseal unseal``) fetched over HTTP
from every source at once, against packages made by the real ``seal_tree``."""

from __future__ import annotations

import io
import os
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

import pytest

from auraseal.errors import ComponentLostError, StorageError
from auraseal.manifest import FileEntry, Manifest, part_name
from auraseal.sealing import rebuild_file, seal_tree
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
    # one flipped byte spoils one data part; the other k - 1 are re-created
    # from the downloaded copy and only the spoilt one is fetched
    assert f.parts_used == k and f.bad_parts == 0 and f.parts_salvaged == k - 1
    assert sum(a.hits[part_name("r.bin", i)] for i in range(k + _m)) == 1
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
    a.fault("r.bin", "status", status=404)  # nothing to salvage
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
    a.fault("r.bin", "status", status=500)  # nothing to salvage
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


def _region(data: bytes, start: int, length: int = 4096) -> bytes:
    return data[:start] + bytes(b ^ 0xA5 for b in data[start : start + length]) + data[
        start + length :
    ]


def test_damaged_region_salvaged_few_parts_fetched(
    client: Client, servers: tuple[FaultServer, FaultServer], sealed: tuple[Path, Path, Manifest]
) -> None:
    a, _ = servers
    k, m = _entry(sealed[2], "r.bin")
    a.fault("r.bin", "body", body=_region(FILES["r.bin"], 20_000))  # a 4 KiB region overwritten
    r = client(a.url)
    assert snapshot(client.dest) == FILES
    f = {x.path: x for x in r.files}["r.bin"]
    fetched = sum(a.hits[part_name("r.bin", i)] for i in range(k + m))
    assert f.source == "parts" and f.parts_used == k
    assert 1 <= fetched <= 3  # the data parts the region falls in, not all k
    assert f.parts_salvaged == k - fetched
    assert any(t == "fetch.recovered" and d["parts_salvaged"] == k - fetched
               for t, d in client.events)


def test_truncated_original_salvages_its_prefix(
    client: Client, servers: tuple[FaultServer, FaultServer], sealed: tuple[Path, Path, Manifest]
) -> None:
    a, _ = servers
    k, m = _entry(sealed[2], "r.bin")
    a.fault("r.bin", "truncate")  # half the bytes, then the connection drops
    r = client(a.url)
    assert snapshot(client.dest) == FILES
    f = {x.path: x for x in r.files}["r.bin"]
    assert f.source == "parts" and f.parts_used == k
    assert 0 < f.parts_salvaged < k
    assert sum(a.hits[part_name("r.bin", i)] for i in range(k + m)) == k - f.parts_salvaged


def test_salvaged_candidate_that_does_not_verify_is_never_used(
    client: Client, servers: tuple[FaultServer, FaultServer], sealed: tuple[Path, Path, Manifest]
) -> None:
    """A salvage that hands back wrong bytes (a bug, or a forged copy): every
    candidate is checked against the manifest's part integrity first."""
    a, _ = servers
    k, m = _entry(sealed[2], "r.bin")
    real = (sealed[0] / part_name("r.bin", 0)).read_bytes()
    offered: list[int] = []

    def bad_salvage(
        entry: FileEntry, copy: Path, scratch: Path, skip: Collection[int]
    ) -> dict[int, Path]:
        offered.append(copy.stat().st_size)
        out: dict[int, Path] = {}
        for n in [*range(k), k + m + 5]:
            p = scratch / f"cand.{n}"
            # one genuine part, the others right size but wrong bytes; one no such part
            p.write_bytes(real if n in (0, k + m + 5) else bytes(len(real)))
            out[n] = p
        return out

    rebuilt_from: list[dict[int, bytes]] = []

    def rebuild(entry: FileEntry, parts: Mapping[int, Path], target: Path) -> None:
        rebuilt_from.append({n: p.read_bytes() for n, p in parts.items()})
        rebuild_file(entry, parts, target)

    a.fault("r.bin", "flip")
    r = client(a.url, salvage=bad_salvage, rebuild=rebuild)
    assert snapshot(client.dest) == FILES
    f = {x.path: x for x in r.files}["r.bin"]
    assert offered and f.parts_salvaged == 1
    assert a.hits[part_name("r.bin", 0)] == 0  # the genuine one was used, not fetched
    assert sum(a.hits[part_name("r.bin", i)] for i in range(k + m)) == k - 1
    (parts,) = rebuilt_from
    assert all(p != bytes(len(real)) for p in parts.values())
    for n, p in parts.items():
        assert p == (sealed[0] / part_name("r.bin", n)).read_bytes()


def test_salvage_internal_failure_costs_a_warning_not_the_fetch(
    client: Client, servers: tuple[FaultServer, FaultServer], sealed: tuple[Path, Path, Manifest]
) -> None:
    """Issue 10.1: an internal failure inside the salvage (there: ``fileno``
    on an in-memory buffer) ended the fetch as ``error: : fileno``, exit 5,
    with no ``where``. Salvage only saves downloads: the parts are fetched."""
    a, _ = servers
    k, m = _entry(sealed[2], "r.bin")

    def broken_salvage(
        entry: FileEntry, copy: Path, scratch: Path, skip: Collection[int]
    ) -> dict[int, Path]:
        raise io.UnsupportedOperation("fileno")

    a.fault("r.bin", "flip")
    r = client(a.url, salvage=broken_salvage)
    assert snapshot(client.dest) == FILES
    f = {x.path: x for x in r.files}["r.bin"]
    assert f.source == "parts" and f.parts_salvaged == 0 and f.parts_used == k
    assert sum(a.hits[part_name("r.bin", i)] for i in range(k + m)) == k
    assert any("r.bin: salvage skipped: UnsupportedOperation: fileno" in w for w in r.warnings)


def test_rebuild_onto_a_blocked_disk_path_exits_5_naming_it_not_a_network_failure(
    client: Client, servers: tuple[FaultServer, FaultServer], tmp_path: Path
) -> None:
    """The rebuild from parts cannot write (here: a file where its directory
    should be; a full or read-only disk alike): the local path, exit 5 — not
    "could not fetch" (a network failure) naming the component."""
    a, _ = servers
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"a file, not a directory")

    def rebuild(entry: FileEntry, parts: Mapping[int, Path], target: Path) -> None:
        rebuild_file(entry, parts, blocker / target.name)

    a.fault("r.bin", "flip")
    with pytest.raises(StorageError) as info:
        client(a.url, rebuild=rebuild)
    assert info.value.exit_code == 5
    assert info.value.where == str(blocker), info.value
    assert not client.dest.exists()
