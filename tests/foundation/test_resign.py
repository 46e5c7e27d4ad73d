"""`auraseal resign`: fresh expiry and version without re-sealing, only over one's own manifest."""

from __future__ import annotations

import contextlib
import io
import json
from datetime import timedelta
from pathlib import Path

import pytest

from auraseal._time import utcnow
from auraseal.cli import main as cli_main
from auraseal.errors import ThresholdError, UnknownKeyError, UsageError
from auraseal.manifest import (
    MANIFEST_NAME,
    build_manifest,
    dump_manifest,
    load_manifest,
    resign_manifest,
)
from auraseal.signing import SigningKey, TrustPolicy, generate_keypair


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main(list(argv))
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    d = tmp_path / "site"
    d.mkdir()
    (d / "app.js").write_bytes(b"console.log(1)\n")
    (d / "big.bin").write_bytes(bytes(range(256)) * 4000)
    return d


def _signed(tree: Path, key: SigningKey, *, expires: timedelta, version: int = 4) -> bytes:
    now = utcnow() - timedelta(days=2)
    m = build_manifest(tree, name="site", version=version, expires=expires, now=now)
    return dump_manifest(m, "native", [key])


def test_resign_an_expired_manifest_gives_a_fresh_valid_next_version(tree: Path) -> None:
    key = SigningKey.generate()
    data = _signed(tree, key, expires=timedelta(days=1))  # expired a day ago
    policy = TrustPolicy([key.public])
    with pytest.raises(Exception, match="expired"):
        load_manifest(data, policy=policy)
    new, out = resign_manifest(data, [key], expires=timedelta(days=30))
    loaded = load_manifest(out, policy=policy)
    old = load_manifest(data)
    assert loaded.version == old.version + 1 == 5
    assert loaded.files == old.files
    assert loaded.expires is not None and loaded.expires > utcnow() + timedelta(days=29)
    assert new == loaded


def test_resign_refuses_a_manifest_signed_by_someone_else(tree: Path) -> None:
    mine, theirs = SigningKey.generate(), SigningKey.generate()
    data = _signed(tree, theirs, expires=timedelta(days=30))
    with pytest.raises(UnknownKeyError):
        resign_manifest(data, [mine])
    # the explicit, unsafe override works
    new, _ = resign_manifest(data, [mine], require_own_signature=False)
    assert new.version == 5


def test_resign_refuses_an_unsigned_manifest(tree: Path) -> None:
    m = build_manifest(tree, name="site", version=1)
    with pytest.raises(ThresholdError):
        resign_manifest(dump_manifest(m), [SigningKey.generate()])


def test_resign_refuses_a_version_that_does_not_go_up(tree: Path) -> None:
    key = SigningKey.generate()
    data = _signed(tree, key, expires=timedelta(days=30), version=4)
    with pytest.raises(UsageError):
        resign_manifest(data, [key], version=4)
    assert resign_manifest(data, [key], version=9)[0].version == 9


def test_resign_cli_in_place_then_tree_still_verifies(tree: Path, tmp_path: Path) -> None:
    keyfile = tmp_path / "release.key"
    generate_keypair(keyfile)
    rc, _o, err = run_cli("manifest", "build", str(tree), "--key", str(keyfile),
                          "--version", "3", "--expires", "1d")
    assert rc == 0, err
    rc, out, err = run_cli("resign", str(tree), "--key", str(keyfile), "--expires", "90d",
                           "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["version"] == 4 and doc["name"] == "site"
    rc, _o, err = run_cli("manifest", "verify", str(tree), "--trusted-key", f"{keyfile}.pub")
    assert rc == 0, err
    # a key that never signed it: exit 3, the file is unchanged
    other = tmp_path / "other.key"
    generate_keypair(other)
    before = (tree / MANIFEST_NAME).read_bytes()
    rc, _o, err = run_cli("resign", str(tree), "--key", str(other))
    assert rc == 3 and err.startswith("auraseal: error: ")
    assert (tree / MANIFEST_NAME).read_bytes() == before


def test_resign_cli_missing_manifest_is_exit_2(tmp_path: Path) -> None:
    keyfile = tmp_path / "k"
    generate_keypair(keyfile)
    rc, _o, err = run_cli("resign", str(tmp_path / "nope.json"), "--key", str(keyfile))
    assert rc == 2 and "no such file" in err
