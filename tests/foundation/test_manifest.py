"""Manifests: checked-in fixtures, format round trips, trees, hostile names."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auraseal.errors import (
    ExpiredError,
    ManifestFormatError,
    RollbackError,
    ThresholdError,
    TreeMismatchError,
    UnsafePathError,
)
from auraseal.manifest import (
    FileEntry,
    Manifest,
    build_manifest,
    check_tree,
    dump_manifest,
    dump_signed,
    load_manifest,
    verify_tree,
)
from auraseal.signing import SigningKey, TrustPolicy, TrustState, load_public_key

FIX = Path(__file__).parent.parent / "fixtures" / "manifest"
FIXED_NOW = datetime(2026, 11, 22, tzinfo=UTC)


def test_native_fixture_reads_back_and_verifies() -> None:
    """A format change must never be silent: the checked-in manifest still
    parses, its signature still verifies, and re-serializing is byte-identical."""
    data = (FIX / "native.json").read_bytes()
    policy = TrustPolicy([load_public_key(FIX / "test-key.pub")])
    m = load_manifest(data, "native.json", policy=policy)
    assert (m.name, m.version, m.spec_version) == ("fixture", 7, 1)
    assert m.paths() == ["a.txt", "sub/b.js"]
    assert m.entry("a.txt").size == 6
    assert m.created == FIXED_NOW
    env = json.loads(data)
    assert env["signed"]["_type"] == "auraseal/manifest"
    assert json.loads(dump_signed(m))["signed"] == env["signed"]
    check_tree(FIX / "tree", m)


def test_seed_fixture_round_trip() -> None:
    data = (FIX / "seed.json").read_bytes()
    m = load_manifest(data, "seed.json")
    assert m.extra["format"] == "seed"
    assert json.loads(dump_manifest(m, "seed")) == json.loads(data)
    check_tree(FIX / "tree", m)


def test_blockhub_fixture_round_trip() -> None:
    data = (FIX / "index.json").read_bytes()
    m = load_manifest(data, "index.json")
    assert m.entry("a.txt").url == "https://cdn.example/v1/a.txt"
    assert m.version == 7_000_000
    assert json.loads(dump_manifest(m, "blockhub")) == json.loads(data)
    check_tree(FIX / "tree", m)


def test_seed_document_from_seed_000_keeps_every_field() -> None:
    seed = {
        "diram-component-1.bin": {
            "integrity": "auraseal-sha512-" + "A" * 86 + "==-" + "B" * 86 + "==",
            "size": 10240,
            "parts": 2,
            "recovery": {
                "primary": "diram-component-1.part.0",
                "secondary": "diram-component-1.part.1",
            },
        }
    }
    m = load_manifest(json.dumps(seed).encode(), "seed")
    assert m.entry("diram-component-1.bin").parts == 2
    assert json.loads(dump_manifest(m, "seed")) == seed


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "d").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha")
    (root / "d" / "b.bin").write_bytes(os.urandom(300_000))
    (root / "d" / "c.txt").write_bytes(b"")
    return root


def test_verify_reports_every_difference(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    m = build_manifest(root, name="t")
    assert verify_tree(root, m).ok
    (root / "a.txt").write_bytes(b"alphA")
    (root / "d" / "c.txt").unlink()
    (root / "new.txt").write_bytes(b"x")
    (root / "d" / "b.bin").write_bytes(b"changed")
    report = verify_tree(root, m)
    assert [x.path for x in report.modified] == ["a.txt", "d/b.bin"]
    assert report.modified[0].expected == m.entry("a.txt").integrity
    assert report.modified[0].actual.startswith("sha512-")
    assert report.missing == ["d/c.txt"]
    assert report.unexpected == ["new.txt"]
    with pytest.raises(TreeMismatchError, match="2 modified, 1 missing, 1 unexpected"):
        check_tree(root, m)


def test_verify_ignores_temp_files_left_by_a_killed_command(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    m = build_manifest(root, name="t")
    # what a killed repair / unseal / seal leaves: temp files and a temp directory
    (root / ".a.txt.auraseal-tmp-repair-999999-0123456789ab").write_bytes(b"half")
    (root / "d" / ".b.bin.auraseal-tmp-write-999999-abcdef012345").write_bytes(b"half")
    tmpdir = root / ".pkg.auraseal-tmp-seal-999999-aaaaaaaaaaaa"
    (tmpdir / "sub").mkdir(parents=True)
    (tmpdir / "sub" / "x.part.0").write_bytes(b"part")
    assert verify_tree(root, m).ok
    # a look-alike that is not a temp name is still reported
    (root / ".a.txt.auraseal-tmp-repair").write_bytes(b"x")
    assert verify_tree(root, m).unexpected == [".a.txt.auraseal-tmp-repair"]


def test_symlink_out_of_tree_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    secret = tmp_path / "secret"
    secret.write_text("outside")
    (root / "link").symlink_to(secret)
    with pytest.raises(UnsafePathError, match="symlink leaves the tree"):
        build_manifest(root, name="t")


def test_symlink_inside_tree_allowed(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    (root / "alias.txt").symlink_to(root / "a.txt")
    m = build_manifest(root, name="t")
    assert m.entry("alias.txt").integrity == m.entry("a.txt").integrity


@pytest.mark.parametrize(
    "name",
    ["../evil", "/etc/passwd", "a/../../b", "a\\b", "a\x00b", "a//b", "./a", "C:/x", "x" * 300],
)
def test_hostile_names_in_manifest_refused(name: str) -> None:
    doc = {name: {"integrity": "sha256-" + "A" * 43 + "=", "size": 1}}
    with pytest.raises(UnsafePathError) as ei:
        load_manifest(json.dumps(doc).encode(), "m.json")
    assert "m.json" in str(ei.value)


def test_duplicate_entries_refused() -> None:
    raw = b'{"a": {"integrity": "sha256-' + b"A" * 43 + b'=", "size": 1}, "a": {}}'
    with pytest.raises(ManifestFormatError, match="duplicate key 'a'"):
        load_manifest(raw, "m.json")


def test_truncated_and_garbage_manifests(tmp_path: Path) -> None:
    data = (FIX / "native.json").read_bytes()
    with pytest.raises(ManifestFormatError, match="not valid JSON"):
        load_manifest(data[: len(data) // 2], "m.json")
    with pytest.raises(ManifestFormatError):
        load_manifest(b'{"signed": {"_type": "auraseal/manifest", "spec_version": 99}, '
                      b'"signatures": []}', "m.json")


def test_trust_expiry_rollback(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    k = SigningKey.generate()
    policy = TrustPolicy([k.public])
    state = TrustState(tmp_path / "state.json")
    m5 = build_manifest(root, name="pkg", version=5, expires=timedelta(hours=1), now=FIXED_NOW)
    d5 = dump_signed(m5, [k])
    load_manifest(d5, policy=policy, state=state, now=FIXED_NOW)
    # freeze: the same manifest after expiry
    with pytest.raises(ExpiredError, match="expired at 2026-11-22T01:00:00Z"):
        load_manifest(d5, policy=policy, now=FIXED_NOW + timedelta(hours=2))
    # rollback: an older version
    m4 = build_manifest(root, name="pkg", version=4, now=FIXED_NOW)
    with pytest.raises(RollbackError, match="older than trusted version 5"):
        load_manifest(dump_signed(m4, [k]), policy=policy, state=state, now=FIXED_NOW)
    # same version, other content
    (root / "a.txt").write_bytes(b"changed")
    m5b = build_manifest(root, name="pkg", version=5, expires=timedelta(hours=1), now=FIXED_NOW)
    with pytest.raises(RollbackError, match="differs"):
        load_manifest(dump_signed(m5b, [k]), policy=policy, state=state, now=FIXED_NOW)
    # unsigned formats cannot satisfy a policy
    with pytest.raises(ThresholdError):
        load_manifest(dump_manifest(m5, "seed"), policy=policy)


names = st.lists(
    st.text(alphabet="abcdefgh-_.", min_size=1, max_size=8).filter(lambda s: s not in (".", "..")),
    min_size=1,
    max_size=3,
).map("/".join)


@settings(max_examples=60, deadline=None)
@given(
    files=st.dictionaries(names, st.integers(0, 10**12), min_size=1, max_size=6),
    version=st.integers(0, 2**40),
    fmt=st.sampled_from(["native", "seed"]),
)
def test_round_trip_property(files: dict[str, int], version: int, fmt: str) -> None:
    entries = tuple(
        FileEntry(p, size, "sha256-" + "A" * 43 + "=") for p, size in sorted(files.items())
    )
    m = Manifest("p", version, FIXED_NOW, FIXED_NOW + timedelta(days=1), entries)
    back = load_manifest(dump_manifest(m, fmt))
    assert [(f.path, f.size, f.integrity) for f in back.files] == [
        (f.path, f.size, f.integrity) for f in entries
    ]
    if fmt == "native":
        assert back == m


def test_parallel_manifest_build_equals_sequential_and_plain_sha512(tmp_path: Path) -> None:
    """manifest build hashes files in threads, biggest first, into reused
    buffers, opening each with O_NOFOLLOW in a directory checked once: the
    manifest must be the one a plain one-thread sha512 of each file gives
    (0-byte, 5 KiB, 20 MiB, a 1 MiB boundary, nested, and a symlink inside)."""
    import hashlib  # noqa: PLC0415

    from auraseal.integrity import auraseal_string  # noqa: PLC0415

    root = tmp_path / "tree"
    (root / "d" / "e").mkdir(parents=True)
    blobs = {
        "empty": b"",
        "five.bin": os.urandom(5 << 10),
        "d/big.bin": os.urandom(20 << 20),
        "d/e/mib.bin": os.urandom(1 << 20),
        "d/e/mib1.bin": os.urandom((1 << 20) + 1),
    }
    for rel, data in blobs.items():
        (root / rel).write_bytes(data)
    (root / "d" / "alias").symlink_to(root / "five.bin")
    blobs["d/alias"] = blobs["five.bin"]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    seq = build_manifest(root, name="t", jobs=1, now=now)
    par = build_manifest(root, name="t", jobs=4, now=now)
    assert seq == par
    assert [e.path for e in par.files] == sorted(blobs)
    for rel, data in blobs.items():
        want = auraseal_string(hashlib.sha512(data).digest(), algorithm="sha512")
        assert par.entry(rel).integrity == want, rel
        assert par.entry(rel).size == len(data)
