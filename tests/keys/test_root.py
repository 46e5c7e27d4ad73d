"""Root documents as pure functions over bytes: init, rotation, drafts."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from auraseal.errors import (
    ExpiredError,
    ManifestFormatError,
    RollbackError,
    ThresholdError,
    UnknownKeyError,
)
from auraseal.manifest import build_manifest, verify_tree
from auraseal.root import (
    Root,
    load_root,
    parse_root,
    root_status,
    sign_root,
    verify_root,
    verify_root_chain,
)
from auraseal.signing import SigningKey

from .helpers import cosign, root_v1, rotate

FIXTURE = Path(__file__).parent.parent / "fixtures" / "root"


def test_root_v1_needs_its_own_threshold(keys: dict[str, SigningKey]) -> None:
    k1, k2 = keys["k1"], keys["k2"]
    _r, data = root_v1([k1, k2], 2)
    assert load_root(data).version == 1
    # signed by one of two: a draft, refused
    draft = Root.new([k1.public, k2.public], 2)
    one = sign_root(draft, [k1])
    with pytest.raises(ThresholdError, match="draft"):
        load_root(one)
    assert not root_status(one).complete
    assert root_status(cosign(one, k2)).complete
    assert load_root(cosign(one, k2)).release.threshold == 2


def test_rotation_signed_by_too_few_old_keys_refused(keys: dict[str, SigningKey]) -> None:
    k1, k2, k3 = keys["k1"], keys["k2"], keys["k3"]
    r1, _ = root_v1([k1, k2], 2)
    # new keys {k1, k3} thr 2: both new keys sign, but only one of the old (k1)
    _r2, data = rotate(r1, [k1, k3], 2, [k1, k3])
    with pytest.raises(ThresholdError, match="v1"):
        verify_root(data, r1)
    st = root_status(data, r1)
    assert (st.own_signed, st.previous_signed, st.complete) == (2, 1, False)
    # a leaked key alone cannot rotate: signed by k3 only (a key v1 never had)
    _, only_new = rotate(r1, [k3], 1, [k3])
    with pytest.raises(UnknownKeyError):
        verify_root(only_new, r1)
    # once the second old key co-signs, it is complete
    assert verify_root(cosign(data, k2), r1).version == 2


def test_rotation_signed_by_too_few_new_keys_refused(keys: dict[str, SigningKey]) -> None:
    k1, k2, k3, k4 = keys["k1"], keys["k2"], keys["k3"], keys["k4"]
    r1, _ = root_v1([k1, k2], 2)
    # both old keys sign, but the new root {k3, k4} thr 2 has none of its own
    _r2, data = rotate(r1, [k3, k4], 2, [k1, k2])
    with pytest.raises(ThresholdError, match="own keys"):
        verify_root(data, r1)
    data = cosign(data, k3)
    with pytest.raises(ThresholdError, match="own keys"):
        verify_root(data, r1)
    assert verify_root(cosign(data, k4), r1).release.keyids == tuple(sorted(
        [k3.public.key_id, k4.public.key_id]))


def test_rotation_must_be_the_next_version(keys: dict[str, SigningKey]) -> None:
    k1 = keys["k1"]
    r1, _ = root_v1([k1], 1)
    r2, d2 = rotate(r1, [k1], 1, [k1])
    _r3, d3 = rotate(r2, [k1], 1, [k1])
    with pytest.raises(RollbackError):
        verify_root(d3, r1)  # skips v2
    with pytest.raises(RollbackError):
        verify_root(d2, r2)  # the same version again
    assert verify_root_chain(r1, [(d2, "2"), (d3, "3")]).version == 3


def test_expired_root_refused_only_at_the_end_of_a_walk(keys: dict[str, SigningKey]) -> None:
    k1 = keys["k1"]
    r1, d1 = root_v1([k1], 1, expires=timedelta(seconds=-1))
    with pytest.raises(ExpiredError):
        load_root(d1)
    r2, d2 = rotate(r1, [k1], 1, [k1])
    assert verify_root_chain(r1, [(d2, "2")]).version == 2
    _r3, d3 = rotate(r2, [k1], 1, [k1], expires=timedelta(seconds=-1))
    with pytest.raises(ExpiredError):
        verify_root_chain(r1, [(d2, "2"), (d3, "3")])


def test_tampered_root_refused(keys: dict[str, SigningKey]) -> None:
    k1, k3 = keys["k1"], keys["k3"]
    _, data = root_v1([k1], 1)
    doc = json.loads(data)
    doc["signed"]["keys"][k3.public.key_id] = {"keytype": "ed25519",
                                               "public": k3.public.raw.hex()}
    doc["signed"]["roles"]["release"]["keyids"].append(k3.public.key_id)
    with pytest.raises(Exception) as ei:
        load_root(json.dumps(doc).encode())
    assert type(ei.value).__name__ == "BadSignatureError"
    doc["signed"]["keys"][k3.public.key_id]["public"] = keys["k4"].public.raw.hex()
    with pytest.raises(ManifestFormatError, match="does not match"):
        parse_root(json.dumps(doc).encode())


def test_root_fixture_matches_docs() -> None:
    """docs/MANIFEST.md's root example is tests/fixtures/root/root-v1.json."""
    data = (FIXTURE / "root-v1.json").read_bytes()
    root, doc = parse_root(data)
    assert root.version == 1 and root.release.threshold == 2
    assert root.timestamp is not None and root.timestamp.threshold == 1
    # signatures verify (the fixture never expires)
    assert load_root(data).digest() == root.digest()
    docs = (Path(__file__).parents[2] / "docs" / "MANIFEST.md").read_text()
    block = docs.split("<!-- root fixture -->\n```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(block) == doc


def test_served_roots_and_timestamp_stay_out_of_the_manifest(
    tmp_path: Path, keys: dict[str, SigningKey]
) -> None:
    """A static package tree carries root/<N>.json and timestamp.json beside
    its manifest: `manifest build` does not list them, `verify` does not
    call them unexpected (other files under root/ are ordinary content)."""
    tree = tmp_path / "pkg"
    (tree / "root").mkdir(parents=True)
    (tree / "index.html").write_bytes(b"x\n")
    (tree / "root" / "notes.txt").write_bytes(b"content\n")
    (tree / "root" / "1.json").write_bytes(root_v1([keys["k1"]], 1)[1])
    (tree / "timestamp.json").write_bytes(b"{}")
    m = build_manifest(tree, name="pkg")
    assert sorted(f.path for f in m.files) == ["index.html", "root/notes.txt"]
    (tree / "root" / "2.json").write_bytes(b"{}")
    report = verify_tree(tree, m)
    assert report.ok and report.unexpected == []
    (tree / "root" / "x.json").write_bytes(b"{}")
    assert verify_tree(tree, m).unexpected == ["root/x.json"]
