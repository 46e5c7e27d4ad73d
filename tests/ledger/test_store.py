"""The store suite: every test runs on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import tempfile
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from auraseal import merkle
from auraseal.errors import MissingSecretError, NotFoundError
from auraseal.ledger import Block, BlockPolicy, Ledger, open_ledger

from .conftest import SECRET, run_sql


def _lp(s: str) -> bytes:
    return len(s.encode()).to_bytes(4, "big") + s.encode()


def _independent_leaf(d: dict[str, object]) -> bytes:
    """The v1 leaf encoding written out from docs/LEDGER.md, not from the library."""
    meta = rfc8785.dumps(d["metadata"]).decode()
    signed = (b"auraseal-ledger-entry-v1\n" + _lp(str(d["entry_id"])) + _lp(str(d["entry_type"]))
              + _lp(str(d["data_hash"])) + _lp(meta) + _lp(str(d["timestamp"])))
    return signed + _lp(str(d["signature"] or ""))


def test_record_fields_match_outside_computation(make_ledger: Callable[..., Ledger]) -> None:
    led = make_ledger()
    data = {"key": "value", "n": 3, "nested": {"z": [1, 2.5, None], "a": "é"}}
    res = led.record("memory_write", data, {"scope": "user"})
    assert res.data_hash == hashlib.sha256(rfc8785.dumps(data)).hexdigest()
    assert res.database_recorded and res.file_recorded
    e = led.entry(res.entry_id)
    signed = _independent_leaf(e.to_json())[: -len(_lp(res.signature or ""))]
    assert res.signature == hmac.new(SECRET, signed, hashlib.sha256).hexdigest()
    assert e.leaf() == _independent_leaf(e.to_json())
    assert e.metadata == {"scope": "user"}
    assert res.timestamp.endswith("Z")
    d = res.to_dict()
    assert set(d) >= {"entry_id", "data_hash", "signature", "file_recorded", "timestamp"}


def test_signature_needs_secret(make_ledger: Callable[..., Ledger]) -> None:
    led = make_ledger(secret=None)
    with pytest.raises(MissingSecretError):
        led.record("x", {"a": 1})
    assert led.pending() == []  # nothing half-recorded
    res = led.record("x", {"a": 1}, with_signature=False)
    assert res.signature is None
    assert led.entry(res.entry_id).signature is None
    assert led.verify_chain().unsigned_entries == 1


def test_blocks_every_n_entries_and_on_demand(make_ledger: Callable[..., Ledger]) -> None:
    led = make_ledger(max_entries=10)
    ids = [r.entry_id for r in led.record_many([("t", {"i": i}, None) for i in range(25)])]
    blocks = list(led.blocks())
    assert [b.data_count for b in blocks] == [10, 10]
    assert len(led.pending()) == 5
    more = led.commit()
    assert [b.data_count for b in more] == [5]
    blocks = list(led.blocks())
    assert [b.block_number for b in blocks] == [1, 2, 3]
    assert blocks[0].previous_hash == "0" * 64
    for a, b in itertools.pairwise(blocks):
        assert b.previous_hash == a.block_hash
    assert blocks[-1].tree_size == 25
    assert led.commit() == []
    # the tree over all entries, recomputed independently from the entry fields
    leaves = [hashlib.sha256(b"\x00" + _independent_leaf(led.entry(i).to_json())).digest()
              for i in ids]
    assert merkle.root(leaves).hex() == blocks[-1].tree_root == led.tree_root().hex()
    assert merkle.root(leaves[10:20]).hex() == blocks[1].merkle_root
    for i, eid in enumerate(ids):
        assert led.entry(eid).leaf_index == i
    single = [led.record("one", {"i": i}).blocks_committed for i in range(10)]
    assert single[-1] == (4,) and all(s == () for s in single[:-1])


def test_age_limit_commits_pending(make_ledger: Callable[..., Ledger]) -> None:
    led = make_ledger(max_entries=100)
    led.record("t", {"a": 1})
    assert led.maybe_commit() == []
    later = datetime.now(UTC) + timedelta(minutes=5, seconds=1)
    blocks = led.maybe_commit(now=later)
    assert [b.data_count for b in blocks] == [1]
    assert led.pending() == []


def test_proofs_from_stored_nodes(make_ledger: Callable[..., Ledger]) -> None:
    led = make_ledger(max_entries=7)
    ids = [r.entry_id for r in led.record_many([("t", {"i": i}, None) for i in range(53)])]
    led.commit()
    leaves = [led.entry(i).leaf_hash() for i in ids]
    root = merkle.root(leaves)
    for eid in ids:
        p = led.inclusion(eid)
        assert p.root == root and p.tree_size == 53
        assert p.proof == merkle.inclusion_proof(leaves, p.leaf_index)
        p.verify()
    sizes = [b.tree_size for b in led.blocks()]
    for s1 in sizes:
        for s2 in sizes:
            if s1 <= s2:
                proof, r1, r2 = led.consistency(s1, s2)
                assert r1 == merkle.root(leaves[:s1]) and r2 == merkle.root(leaves[:s2])
                merkle.verify_consistency(s1, s2, proof, r1, r2)
    old = led.inclusion(ids[3], tree_size=14)
    old.verify()
    assert old.root == merkle.root(leaves[:14])
    with pytest.raises(NotFoundError):
        led.inclusion(ids[20], tree_size=14)


def test_proofs_read_only_log_n_nodes(make_ledger: Callable[..., Ledger]) -> None:
    led = make_ledger(jsonl=False, max_entries=100)
    ids = [r.entry_id for r in led.record_many([("t", {"i": i}, None) for i in range(3000)])]
    asked: list[int] = []
    real = led.store.nodes

    def counting(coords: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        coords = list(coords)
        asked.append(len(set(coords)))
        return real(coords)

    led.store.nodes = counting  # type: ignore[method-assign]
    for eid in ids[::97]:
        led.inclusion(eid).verify()
    assert asked and max(asked) <= 2 * (3000).bit_length()  # O(log n), not O(n)
    led.consistency(1234, 3000)
    assert asked[-1] <= 3 * (3000).bit_length()


def test_verify_entry(make_ledger: Callable[..., Ledger]) -> None:
    led = make_ledger(max_entries=4)
    r = led.record("t", {"a": 1}, {"m": True})
    pending = led.verify_entry(r.entry_id, {"a": 1})
    assert pending["hash_valid"] and not pending["included"] and not pending["verified"]
    led.commit()
    ok = led.verify_entry(r.entry_id, {"a": 1})
    assert ok["verified"] and ok["signature_valid"] is True and ok["block_number"] == 1
    assert ok["inclusion_proof"]["tree_size"] == 1
    bad = led.verify_entry(r.entry_id, {"a": 2})
    assert bad["hash_valid"] is False and bad["verified"] is False
    with pytest.raises(NotFoundError):
        led.verify_entry("00000000-0000-7000-8000-000000000000", {})


def test_reopen_keeps_state(ledger_url: str, make_ledger: Callable[..., Ledger]) -> None:
    led = make_ledger(jsonl=False, max_entries=3)
    led.record_many([("t", {"i": i}, None) for i in range(8)])
    head = led.head()
    origin = led.origin
    led.close()
    again = open_ledger(ledger_url, secret=SECRET, policy=BlockPolicy(max_entries=3))
    try:
        assert again.head() == head and again.origin == origin
        assert len(again.pending()) == 2
        again.record("t", {"i": 9})
        assert again.head().block_number == 3  # type: ignore[union-attr]
        assert again.verify_chain().ok
    finally:
        again.close()


def test_verify_chain_clean_and_report(make_ledger: Callable[..., Ledger]) -> None:
    led = make_ledger(max_entries=10)
    led.record_many([("t", {"i": i}, {"k": i}) for i in range(95)])
    led.record("u", {"x": 1}, with_signature=False)
    rep = led.verify_chain()
    assert rep.ok and rep.blocks == 9 and rep.entries == 90 and rep.pending == 6
    assert rep.signatures_checked and rep.jsonl_checked and rep.unsigned_entries == 1
    d = rep.to_dict()
    assert d["overall_valid"] is True and d["database_chain"]["valid"] is True
    assert d["first_bad_block"] is None


# --- tamper tests: each names the first bad block ---------------------------------


def _ledger_with_blocks(make: Callable[..., Ledger]) -> tuple[Ledger, list[str]]:
    led = make(max_entries=10)
    ids = [r.entry_id for r in led.record_many([("t", {"i": i}, {"k": i}) for i in range(50)])]
    assert led.verify_chain().ok
    return led, ids


def _first_bad(led: Ledger) -> int | None:
    rep = led.verify_chain()
    assert not rep.ok
    return rep.first_bad_block


def test_tamper_changed_entry_row(ledger_url: str, make_ledger: Callable[..., Ledger]) -> None:
    led, ids = _ledger_with_blocks(make_ledger)
    run_sql(ledger_url, "UPDATE {e} SET entry_type = 'forged' WHERE id = %s", (ids[23],))
    assert _first_bad(led) == 3


def test_tamper_changed_data_hash(ledger_url: str, make_ledger: Callable[..., Ledger]) -> None:
    led, ids = _ledger_with_blocks(make_ledger)
    run_sql(ledger_url, "UPDATE {e} SET data_hash = %s WHERE id = %s", ("ab" * 32, ids[41]))
    rep = led.verify_chain()
    assert rep.first_bad_block == 5
    assert any("merkle_root" in p.what for p in rep.problems)
    with pytest.raises(Exception, match="block 5"):
        rep.raise_for_problems()


def test_tamper_deleted_entry(ledger_url: str, make_ledger: Callable[..., Ledger]) -> None:
    led, ids = _ledger_with_blocks(make_ledger)
    run_sql(ledger_url, "DELETE FROM {e} WHERE id = %s", (ids[15],))
    assert _first_bad(led) == 2


def test_tamper_reordered_blocks(ledger_url: str, make_ledger: Callable[..., Ledger]) -> None:
    led, _ = _ledger_with_blocks(make_ledger)
    cols = "previous_hash, block_hash, merkle_root, tree_size, tree_root, data_count"
    r2 = run_sql(ledger_url, f"SELECT {cols} FROM {{b}} WHERE block_number = 2")[0]
    r3 = run_sql(ledger_url, f"SELECT {cols} FROM {{b}} WHERE block_number = 3")[0]
    upd = ("UPDATE {b} SET previous_hash=%s, block_hash=%s, merkle_root=%s, tree_size=%s,"
           " tree_root=%s, data_count=%s WHERE block_number = %s")
    run_sql(ledger_url, upd, (*r2[:1], "tmp", *r2[2:], 2))
    run_sql(ledger_url, upd, (*r2, 3))
    run_sql(ledger_url, upd, (*r3, 2))
    assert _first_bad(led) == 2


def test_tamper_inserted_block(ledger_url: str, make_ledger: Callable[..., Ledger]) -> None:
    led, _ = _ledger_with_blocks(make_ledger)
    head = led.head()
    assert head is not None
    fake = Block(6, "cd" * 32, "", head.merkle_root, head.tree_size, head.tree_root,
                 head.timestamp, 0)
    fake = Block(6, fake.previous_hash, fake.compute_hash(), fake.merkle_root, fake.tree_size,
                 fake.tree_root, fake.timestamp, 0)
    assert fake.compute_hash() == fake.block_hash  # a correctly recomputed hash
    tcol = "timestamp" if ledger_url.startswith("sqlite") else "ts"
    run_sql(ledger_url,
            "INSERT INTO {b} (block_number, previous_hash, block_hash, merkle_root, tree_size,"
            f" tree_root, {tcol}, data_count) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (6, fake.previous_hash, fake.block_hash, fake.merkle_root, fake.tree_size,
             fake.tree_root, fake.timestamp, 0))
    rep = led.verify_chain()
    assert rep.first_bad_block == 6
    assert any("previous_hash" in p.what for p in rep.problems if p.block == 6)


def test_tamper_forged_hmac(ledger_url: str, make_ledger: Callable[..., Ledger]) -> None:
    led, ids = _ledger_with_blocks(make_ledger)
    e = led.entry(ids[33])
    forged = hmac.new(b"attacker-key", e.signed_bytes(), hashlib.sha256).hexdigest()
    run_sql(ledger_url, "UPDATE {e} SET signature = %s WHERE id = %s", (forged, ids[33]))
    rep = led.verify_chain()
    assert rep.first_bad_block == 4
    assert any("HMAC" in p.what and p.entry == ids[33] for p in rep.problems)
    assert led.verify_entry(ids[33], {"i": 33})["signature_valid"] is False


def test_tamper_tree_node(ledger_url: str, make_ledger: Callable[..., Ledger]) -> None:
    led, _ = _ledger_with_blocks(make_ledger)
    run_sql(ledger_url, "UPDATE {n} SET hash = %s WHERE level = 2 AND idx = 5",
            (b"\x00" * 32,))
    rep = led.verify_chain()
    # node (2, 5) covers leaves 20..23, completed by block 3
    assert rep.first_bad_block == 3 and any("tree node" in p.what for p in rep.problems)


def test_tamper_deleted_tree_node(ledger_url: str, make_ledger: Callable[..., Ledger]) -> None:
    led, ids = _ledger_with_blocks(make_ledger)
    run_sql(ledger_url, "DELETE FROM {n} WHERE level = 3 AND idx = 1")
    rep = led.verify_chain()
    # node (3, 1) covers leaves 8..15, completed by block 2
    assert rep.first_bad_block == 2 and any("is missing" in p.what for p in rep.problems)
    with pytest.raises(Exception, match="missing"):
        led.inclusion(ids[3])  # a proof that needs it fails loudly, never silently


def test_rewritten_history_caught_by_checkpoint(
    ledger_url: str, make_ledger: Callable[..., Ledger]
) -> None:
    led, ids = _ledger_with_blocks(make_ledger)
    cp = led.checkpoint()
    assert led.verify_chain(checkpoint=cp).ok
    # rewrite everything consistently from block 4 on: delete and re-record
    run_sql(ledger_url, "DELETE FROM {n} WHERE 1 = 1")
    run_sql(ledger_url, "UPDATE {e} SET block_number = NULL, leaf_index = NULL WHERE 1 = 1")
    run_sql(ledger_url, "DELETE FROM {b} WHERE 1 = 1")
    run_sql(ledger_url, "UPDATE {e} SET entry_type = 'rewritten' WHERE id = %s", (ids[35],))
    led.commit()
    rep = led.verify_chain()
    assert any(p.source == "jsonl" for p in rep.problems)  # the mirror remembers
    # without the mirror and the HMAC secret (or with a leaked one) the chain looks fine
    plain = open_ledger(ledger_url, secret=None)
    try:
        assert plain.verify_chain().ok
        bad = plain.verify_chain(checkpoint=cp)
        assert not bad.ok and any("checkpoint" in p.what for p in bad.problems)
    finally:
        plain.close()


OPS = st.lists(
    st.one_of(st.tuples(st.just("one"), st.integers(0, 3)),
              st.tuples(st.just("many"), st.integers(0, 40)),
              st.tuples(st.just("commit"), st.just(0))),
    min_size=1, max_size=12,
)


@settings(max_examples=25, deadline=None)
@given(OPS, st.integers(1, 9))
def test_random_operations_keep_invariants(ops: list[tuple[str, int]], block: int) -> None:
    """Any mix of single records, batches and commits: contiguous chain, every block
    within policy, tree root = independent recomputation, every proof verifies."""
    with tempfile.TemporaryDirectory() as d:
        led = open_ledger(f"sqlite://{d}/p.db", Path(d) / "p.jsonl", secret=SECRET,
                          policy=BlockPolicy(max_entries=block))
        try:
            n = 0
            for op, k in ops:
                if op == "one":
                    led.record("t", {"n": n, "k": k}, with_signature=k % 2 == 0)
                    n += 1
                elif op == "many":
                    led.record_many([("m", {"n": n + j}, {"j": j}) for j in range(k)])
                    n += k
                else:
                    led.commit()
            blocks = list(led.blocks())
            assert [b.block_number for b in blocks] == list(range(1, len(blocks) + 1))
            assert all(0 < b.data_count <= block for b in blocks)
            committed = list(led.store.committed_entries())
            assert len(committed) + len(led.pending()) == n
            assert len(led.pending()) < block  # full blocks are always cut
            leaves = [hashlib.sha256(b"\x00" + _independent_leaf(e.to_json())).digest()
                      for e in committed]
            if blocks:
                assert merkle.root(leaves).hex() == blocks[-1].tree_root
            for e in committed[:: max(1, len(committed) // 7)]:
                led.inclusion(e.entry_id).verify()
            assert led.verify_chain().ok
        finally:
            led.close()
