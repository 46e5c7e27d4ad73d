"""Checked-in v1 fixtures: entry leaf, HMAC, block hash, JSONL, checkpoint, bundle.

Each value is recomputed from the docs' definitions (independently of the
library where practical), so any format change breaks here first.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from auraseal import merkle
from auraseal.errors import (
    BadSignatureError,
    DigestMismatchError,
    InputError,
    MerkleProofError,
    UnknownKeyError,
)
from auraseal.ledger import (
    Block,
    Checkpoint,
    Entry,
    JsonlMirror,
    open_checkpoint,
    sign_checkpoint,
    verifier_key,
    verify_bundle,
)
from auraseal.ledger._model import canonical_text
from auraseal.signing import PublicKey, SigningKey, load_public_key

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "ledger"
SPEC: dict[str, Any] = json.loads((FIX / "format_v1.json").read_text())
NAME = SPEC["key_name"]


def _key() -> SigningKey:
    seed = bytes.fromhex(SPEC["ed25519_private_seed_hex"])
    return SigningKey(Ed25519PrivateKey.from_private_bytes(seed))


def _pub() -> PublicKey:
    return load_public_key(FIX / "fixture_key.pub")


def _lp(s: str) -> bytes:
    return len(s.encode()).to_bytes(4, "big") + s.encode()


@pytest.mark.parametrize("i", range(5))
def test_entry_encoding(i: int) -> None:
    d = SPEC["entries"][i]
    signed = (b"auraseal-ledger-entry-v1\n" + _lp(d["entry_id"]) + _lp(d["entry_type"])
              + _lp(d["data_hash"]) + _lp(rfc8785.dumps(d["metadata"]).decode())
              + _lp(d["timestamp"]))
    assert signed.hex() == d["signed_bytes_hex"]
    leaf = signed + _lp(d["signature"] or "")
    assert hashlib.sha256(b"\x00" + leaf).hexdigest() == d["leaf_hash_hex"]
    assert d["data_hash"] == hashlib.sha256(rfc8785.dumps({"i": i})).hexdigest()
    if d["signature"] is None:
        assert i == 4  # the explicitly unsigned one
    else:
        want = hmac.new(SPEC["hmac_secret"].encode(), signed, hashlib.sha256).hexdigest()
        assert d["signature"] == want
    e = Entry.from_json(d)
    assert e.signed_bytes().hex() == d["signed_bytes_hex"]
    assert e.leaf_hash().hex() == d["leaf_hash_hex"]


def test_block_hashes_and_roots() -> None:
    leaves = [bytes.fromhex(d["leaf_hash_hex"]) for d in SPEC["entries"]]
    b1, b2 = SPEC["blocks"]
    for b in (b1, b2):
        header = {k: b[k] for k in ("v", "block_number", "previous_hash", "merkle_root",
                                    "tree_size", "tree_root", "timestamp", "data_count")}
        assert hashlib.sha256(rfc8785.dumps(header)).hexdigest() == b["block_hash"]
        assert Block.from_json(b).compute_hash() == b["block_hash"]
    assert b1["previous_hash"] == "0" * 64 and b2["previous_hash"] == b1["block_hash"]
    assert b1["merkle_root"] == merkle.root(leaves[:3]).hex() == b1["tree_root"]
    assert b2["merkle_root"] == merkle.root(leaves[3:]).hex()
    assert b2["tree_root"] == SPEC["tree_root_hex"] == merkle.root(leaves).hex()


def test_jsonl_fixture_reads_and_chains() -> None:
    raw = (FIX / "ledger_v1.jsonl").read_text().splitlines()
    assert [json.loads(x)["record_type"] for x in raw] == ["entry"] * 3 + ["block"] + [
        "entry"] * 2 + ["block"]
    for x in raw:  # keys sorted, no spaces
        assert x == json.dumps(json.loads(x), sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False)
    got = JsonlMirror(FIX / "ledger_v1.jsonl").read()
    assert not got.bad_lines and got.torn_tail is None and len(got.entries) == 5
    want = {hashlib.sha256(Entry.from_json(d).jsonl_line()).digest() for d in SPEC["entries"]}
    assert set(got.entries) == want
    assert [b.to_json() for _, b in got.blocks] == SPEC["blocks"]
    for d in SPEC["entries"]:
        assert Entry.from_json(d).jsonl_line().decode() in (x + "\n" for x in raw)


def test_checkpoint_note_format() -> None:
    note = (FIX / "checkpoint_v1.note").read_text()
    body, sigline = note.split("\n\n")
    origin, size, root_b64 = body.split("\n")
    assert origin == "auraseal/ledger/fixture0000000000" and size == "5"
    assert base64.b64decode(root_b64).hex() == SPEC["tree_root_hex"]
    dash, name, blob_b64 = sigline.rstrip("\n").split(" ")
    assert dash == "\u2014" and name == NAME
    blob = base64.b64decode(blob_b64)
    pub = _pub()
    kid = hashlib.sha256(NAME.encode() + b"\n\x01" + pub.raw).digest()[:4]
    assert blob[:4] == kid and len(blob) == 68
    pub.verify(blob[4:], (body + "\n").encode())  # signature over the body lines exactly
    vkey = SPEC["verifier_key"]
    enc = base64.b64encode(b"\x01" + pub.raw).decode()
    assert vkey == f"{NAME}+{kid.hex()}+{enc}"
    assert verifier_key(NAME, pub) == vkey
    # Ed25519 is deterministic: signing again gives the same note
    cp = open_checkpoint(note, NAME, pub)
    assert cp == Checkpoint("auraseal/ledger/fixture0000000000", 5,
                            bytes.fromhex(SPEC["tree_root_hex"]))
    assert sign_checkpoint(cp, NAME, _key()) == note


def test_checkpoint_rejections() -> None:
    note = (FIX / "checkpoint_v1.note").read_text()
    pub = _pub()
    with pytest.raises(BadSignatureError):
        open_checkpoint(note.replace("\n5\n", "\n6\n"), NAME, pub)
    with pytest.raises(UnknownKeyError):
        open_checkpoint(note, "other-name", pub)
    other = SigningKey.generate()
    with pytest.raises(UnknownKeyError):
        open_checkpoint(note, NAME, other.public)
    with pytest.raises(BadSignatureError):
        open_checkpoint(note, NAME, pub, origin="someone/else")
    with pytest.raises(InputError):
        open_checkpoint(note.replace("\n\n", "\n"), NAME, pub)
    # a note signed by two keys opens with either
    junk = base64.b64encode(b"1234" + b"x" * 64).decode()
    two = note + f"\u2014 second {junk}\n"
    assert open_checkpoint(two, NAME, pub).size == 5


def test_consistency_between_fixture_checkpoints() -> None:
    pub = _pub()
    old = open_checkpoint((FIX / "checkpoint_v1_size3.note").read_text(), NAME, pub)
    new = open_checkpoint((FIX / "checkpoint_v1.note").read_text(), NAME, pub)
    proof = [bytes.fromhex(h) for h in SPEC["consistency_3_5"]]
    merkle.verify_consistency(old.size, new.size, proof, old.root, new.root)
    with pytest.raises(MerkleProofError):
        merkle.verify_consistency(old.size, new.size, proof[::-1], old.root, new.root)


def test_bundle_offline() -> None:
    bundle = json.loads((FIX / "bundle_v1.json").read_text())
    assert bundle["format"] == "auraseal-ledger-proof" and bundle["version"] == 1
    res = verify_bundle(bundle, NAME, _pub(), original_data={"i": 1})
    assert res["verified"] and res["leaf_index"] == 1 and res["tree_size"] == 5
    assert res["data_checked"] and res["signed_entry"]
    with pytest.raises(DigestMismatchError):
        verify_bundle(bundle, NAME, _pub(), original_data={"i": 2})
    for mutate in (
        lambda b: b.__setitem__("leaf_index", 2),
        lambda b: b["entry"].__setitem__("entry_type", "unseal"),
        lambda b: b["inclusion_proof"].reverse(),
        lambda b: b.__setitem__("tree_size", 4),
    ):
        bad = json.loads(json.dumps(bundle))
        mutate(bad)
        with pytest.raises((MerkleProofError, BadSignatureError)):
            verify_bundle(bad, NAME, _pub())
    with pytest.raises(UnknownKeyError):
        verify_bundle(bundle, NAME, SigningKey.generate().public)
    with pytest.raises(InputError):
        verify_bundle({**bundle, "version": 2}, NAME, _pub())


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids,
                                                                max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(JSON)
def test_canonical_fast_path_equals_rfc8785(obj: Any) -> None:
    try:
        want = rfc8785.dumps(obj).decode()
    except Exception:
        with pytest.raises(InputError):
            canonical_text(obj)
        return
    assert canonical_text(obj) == want


@settings(max_examples=60, deadline=None)
@given(
    st.text(min_size=1, max_size=20),
    st.dictionaries(st.text(max_size=5), st.integers(-(2**53) + 1, 2**53 - 1), max_size=3),
    st.one_of(st.none(), st.text(max_size=70)),
)
def test_entry_json_round_trip(etype: str, meta: dict[str, int], sig: str | None) -> None:
    e = Entry("01900000-0000-7000-8000-000000000009", etype, "ab" * 32, canonical_text(meta),
              "2026-11-22T03:00:00.000000Z", sig)
    line = e.jsonl_line()
    back = Entry.from_json(json.loads(line))
    assert back == e and back.leaf() == e.leaf()


def _rehash(block: dict[str, Any]) -> None:
    """What a forger does after editing a block: recompute its (unkeyed) hash."""
    block["block_hash"] = Block.from_json(block).compute_hash()


def _bundle_field_error(mutate: Any) -> str:
    bad = json.loads((FIX / "bundle_v1.json").read_text())
    mutate(bad)
    with pytest.raises((MerkleProofError, InputError)) as exc:
        verify_bundle(bad, NAME, _pub())
    return exc.value.where


def test_bundle_with_zeroed_merkle_root_is_refused_naming_the_field() -> None:
    def zero(rehash: bool) -> Any:
        def mutate(b: dict[str, Any]) -> None:
            b["block"]["merkle_root"] = "0" * 64
            if rehash:
                _rehash(b["block"])
        return mutate

    assert _bundle_field_error(zero(False)) == "bundle: block.block_hash"
    assert _bundle_field_error(zero(True)) == "bundle: block.merkle_root"


def _set(field: str, value: Any, rehash: bool = True) -> Any:
    def mutate(b: dict[str, Any]) -> None:
        b["block"][field] = value
        if rehash:
            _rehash(b["block"])
    return mutate


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (_set("tree_root", "1" * 64), "block.tree_root"),
        (_set("previous_hash", "2" * 64), "block.previous_hash"),
        (_set("block_number", 2), "previous_block"),
        (_set("tree_size", 2), "block.data_count"),  # would start at leaf -1
        (_set("tree_size", 4), "block_proof.leaves"),  # leaves [1, 4): entry 1 is not first
        (_set("data_count", 2), "block.data_count"),
        (_set("tree_size", 9), "block.tree_size"),
        (lambda b: b.pop("block_proof"), "block_proof"),
        (lambda b: b["block_proof"]["leaves"].append(b["block_proof"]["leaves"].pop(0)),
         "block_proof.leaves"),
        (lambda b: b["block_proof"]["consistency"].pop(), "block.tree_root"),
        (lambda b: b["block_proof"]["frontier"].append(b["block_proof"]["leaves"][0]),
         "block_proof.frontier"),
        (lambda b: b["block"].__setitem__("record_type", "entry"), "block"),
    ],
)
def test_bundle_block_claims_are_checked_against_the_signed_tree(mutate: Any, field: str) -> None:
    assert _bundle_field_error(mutate) == f"bundle: {field}"


def test_bundle_with_forged_block_around_the_real_entry_is_refused() -> None:
    """A self-consistent fake block (other neighbours, roots and hash recomputed)."""
    def forge(b: dict[str, Any]) -> None:
        leaves = [base64.b64decode(x) for x in b["block_proof"]["leaves"]]
        leaves[0] = merkle.leaf_hash(b"forged neighbour")
        b["block_proof"]["leaves"] = [base64.b64encode(x).decode() for x in leaves]
        b["block"]["merkle_root"] = b["block"]["tree_root"] = merkle.root(leaves).hex()
        _rehash(b["block"])

    assert _bundle_field_error(forge) == "bundle: block.tree_root"
