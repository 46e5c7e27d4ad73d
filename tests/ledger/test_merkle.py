"""RFC 9162 Merkle functions against the transparency-dev vectors and an
independent, literal transcription of the RFC's recursive definitions."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auraseal import merkle
from auraseal.errors import MerkleProofError

VECTORS = Path("/work/shared/vectors/merkle")
if not VECTORS.is_dir():  # a copy travels with the repository
    VECTORS = Path(__file__).resolve().parents[1] / "fixtures" / "ledger" / "merkle_vectors"


def _b64(v: str | None) -> bytes:
    return base64.b64decode(v) if v else b""


def _cases(kind: str) -> list[tuple[str, dict[str, Any]]]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    return [(str(f.relative_to(VECTORS)), json.loads(f.read_text())) for f in files]


INCLUSION = _cases("inclusion")
CONSISTENCY = _cases("consistency")


def test_vector_counts() -> None:
    assert len(INCLUSION) >= 50
    assert len(CONSISTENCY) >= 50
    assert any(not c["wantErr"] for _, c in INCLUSION)
    assert any(c["wantErr"] for _, c in CONSISTENCY)


@pytest.mark.parametrize(("name", "case"), INCLUSION, ids=[n for n, _ in INCLUSION])
def test_inclusion_vectors(name: str, case: dict[str, Any]) -> None:
    proof = [_b64(p) for p in case["proof"] or []]
    args = (_b64(case["leafHash"]), case["leafIdx"], case["treeSize"], proof, _b64(case["root"]))
    if case["wantErr"]:
        with pytest.raises(MerkleProofError):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)


@pytest.mark.parametrize(("name", "case"), CONSISTENCY, ids=[n for n, _ in CONSISTENCY])
def test_consistency_vectors(name: str, case: dict[str, Any]) -> None:
    proof = [_b64(p) for p in case["proof"] or []]
    args = (case["size1"], case["size2"], proof, _b64(case["root1"]), _b64(case["root2"]))
    if case["wantErr"]:
        with pytest.raises(MerkleProofError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)


# --- independent transcription of RFC 9162 §2.1.1, §2.1.3.1, §2.1.4.1 -------------


def _h(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + d[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + mth(d[:k]) + mth(d[k:]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


DATA = [i.to_bytes(4, "big") + b"leaf" for i in range(600)]
LEAVES = [merkle.leaf_hash(x) for x in DATA]


def test_empty_root() -> None:
    assert merkle.root([]) == hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT


def test_known_root_of_eight() -> None:
    # RFC 6962 test data (the vectors' happy path): 8 leaves with known root.
    leaves = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
              b"\x50\x51\x52\x53\x54\x55\x56\x57",
              b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f"]
    got = merkle.root([merkle.leaf_hash(x) for x in leaves])
    assert base64.b64encode(got).decode() == "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg="


def test_roots_and_proofs_sizes_1_to_600() -> None:
    """Every size 1..600: root, some inclusion and consistency proofs vs the RFC text."""
    levels_root = {}
    for n in range(1, 601):
        r = merkle.root(LEAVES[:n])
        assert r == mth(DATA[:n]), n
        levels_root[n] = r
        for m in {0, n // 3, n // 2, n - 1}:
            p = merkle.inclusion_proof(LEAVES[:n], m)
            assert p == path(m, DATA[:n]), (n, m)
            merkle.verify_inclusion(LEAVES[m], m, n, p, r)
        for m in {1, n // 2 or 1, n - 1 or 1, n}:
            c = merkle.consistency_proof(LEAVES[:n], m)
            assert c == subproof(m, DATA[:n], True), (n, m)
            merkle.verify_consistency(m, n, c, levels_root.get(m) or mth(DATA[:m]), r)


def test_every_proof_small_sizes() -> None:
    for n in range(1, 70):
        r = merkle.root(LEAVES[:n])
        for m in range(n):
            merkle.verify_inclusion(LEAVES[m], m, n, merkle.inclusion_proof(LEAVES[:n], m), r)
        for m in range(1, n + 1):
            merkle.verify_consistency(
                m, n, merkle.consistency_proof(LEAVES[:n], m), merkle.root(LEAVES[:m]), r
            )


def test_append_nodes_matches_full_recomputation() -> None:
    size, stored = 0, {}
    for step in [1, 1, 2, 3, 5, 8, 13, 100, 7, 1, 64, 0, 295]:
        frontier = [stored[c] for c in merkle.compact_range_coords(size)]
        nodes, r = merkle.append_nodes(size, frontier, LEAVES[size : size + step])
        for lv, i, h in nodes:
            assert (lv, i) not in stored
            stored[(lv, i)] = h
        size += step
        assert r == mth(DATA[:size])
        levels = merkle.tree_levels(LEAVES[:size])
        assert len(stored) == sum(len(x) for x in levels)
        for lv, row in enumerate(levels):
            for i, h in enumerate(row):
                assert stored[(lv, i)] == h
        assert merkle.root_from(lambda lv, i: stored[(lv, i)], size) == r


def test_coords_are_logarithmic() -> None:
    for n in (1000, 65537, 1_000_000):
        for m in (0, n // 2, n - 1):
            assert len(merkle.inclusion_coords(m, n)) <= 2 * n.bit_length()
        assert len(merkle.consistency_coords(n // 3 or 1, n)) <= 2 * n.bit_length()


def test_seed_scheme_collision_is_avoided() -> None:
    """The seed duplicates the last odd node: [a,b,c] and [a,b,c,c] share a root.
    RFC 9162 gives them different roots."""

    def seed_root(hashes: list[str]) -> str:
        hashes = list(hashes)
        while len(hashes) > 1:
            if len(hashes) % 2 == 1:
                hashes.append(hashes[-1])
            hashes = [
                hashlib.sha256((hashes[i] + hashes[i + 1]).encode()).hexdigest()
                for i in range(0, len(hashes), 2)
            ]
        return hashes[0]

    a, b, c = (hashlib.sha256(x).hexdigest() for x in (b"a", b"b", b"c"))
    assert seed_root([a, b, c]) == seed_root([a, b, c, c])
    la, lb, lc = (merkle.leaf_hash(x.encode()) for x in (a, b, c))
    assert merkle.root([la, lb, lc]) != merkle.root([la, lb, lc, lc])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.data())
def test_tampered_proofs_rejected(n: int, data: st.DataObject) -> None:
    m = data.draw(st.integers(0, n - 1))
    r = merkle.root(LEAVES[:n])
    p = merkle.inclusion_proof(LEAVES[:n], m)
    if p:
        j = data.draw(st.integers(0, len(p) - 1))
        bad = list(p)
        bad[j] = bytes([bad[j][0] ^ 1]) + bad[j][1:]
        with pytest.raises(MerkleProofError):
            merkle.verify_inclusion(LEAVES[m], m, n, bad, r)
        with pytest.raises(MerkleProofError):
            merkle.verify_inclusion(LEAVES[m], m, n, p[:-1], r)
    with pytest.raises(MerkleProofError):
        merkle.verify_inclusion(LEAVES[m], m, n, [*p, r], r)
    with pytest.raises(MerkleProofError):
        merkle.verify_inclusion(LEAVES[(m + 1) % 600], m, n, p, r)


def test_out_of_range_proof_requests() -> None:
    with pytest.raises(MerkleProofError):
        merkle.inclusion_proof(LEAVES[:5], 5)
    with pytest.raises(MerkleProofError):
        merkle.consistency_proof(LEAVES[:5], 6)
    with pytest.raises(MerkleProofError):
        merkle.consistency_proof(LEAVES[:5], 0)
