"""Issue 11, consumer side: never trust silently, never touch user files.

Each test replays one way the client used to trust or overwrite without
saying so, asserting the exit code, the one-line message, and that nothing
was written, moved or deleted (the whole work folder is snapshotted before
and after: DIR, the files beside it and the cache).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from auraseal.cli import main as cli_main
from auraseal.client.install import prev_dir
from auraseal.client.trust import load_pin, pin_path
from auraseal.errors import PinnedKeyError
from auraseal.manifest import MANIFEST_NAME
from auraseal.signing import SigningKey

from .conftest import Client
from .faultserver import FaultServer
from .helpers import FILES_V1, files_v2, snapshot, write_package

USER_FILES = {"notes.txt": b"my notes\n", "photos/cat.jpg": b"\xff\xd8 not really a cat"}


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def state(root: Path) -> dict[str, bytes | None]:
    """Every entry below ``root``, hidden ones included (directories as None)."""
    if not root.exists():
        return {}
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def one_error_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("auraseal: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture
def pub(tmp_path: Path, key: SigningKey) -> Path:
    p = tmp_path / "key.pub"
    p.write_bytes(key.public.pem())
    return p


@pytest.fixture
def work(tmp_path: Path) -> Path:
    w = tmp_path / "work"
    w.mkdir()
    return w


def test_fetch_without_trust_anchor_refuses_exit_3_and_writes_nothing(
    primary: FaultServer, work: Path
) -> None:
    dest, cache = work / "site", work / "cache"
    before = state(work)
    rc, out, err = run_cli("fetch", primary.url, "-o", str(dest), "--cache", str(cache))
    assert rc == 3 and out == ""
    one_error_line(err, "no trust anchor for this package", "--trusted-key",
                   "--trust-on-first-use", "--allow-unsigned")
    assert state(work) == before == {}
    assert primary.hits[MANIFEST_NAME] == 0  # refused before asking anyone
    rc, out, _ = run_cli("fetch", primary.url, "-o", str(dest), "--no-cache", "--json")
    assert rc == 3 and json.loads(out)["error"]["type"] == "NoTrustAnchorError"
    assert state(work) == {}


def test_trust_on_first_use_pins_keys_then_refuses_package_signed_by_other_key(
    primary: FaultServer, pkg: Path, work: Path, other_key: SigningKey
) -> None:
    dest, cache = work / "site", work / "cache"
    rc, out, err = run_cli("fetch", primary.url, "-o", str(dest), "--cache", str(cache),
                           "--trust-on-first-use")
    assert rc == 0, err
    pin = pin_path(cache, "site")
    assert f"trust on first use: pinned 1 key(s), threshold 1, for 'site' in {pin}" in out
    anchor = load_pin(cache, "site")
    assert anchor is not None and anchor.threshold == 1 and len(anchor.keys) == 1
    # later fetches need no flag: the pin is the anchor (and is said so)
    rc, out, err = run_cli("fetch", primary.url, "-o", str(dest), "--cache", str(cache),
                           "--json")
    assert rc == 0, err
    trust = json.loads(out)["trust"]
    assert trust["mode"] == "pinned" and trust["pin"] == str(pin)
    assert trust["signatures"] == 1 and trust["verified"] is True
    # the server now serves a v2 signed by another key: refused, nothing changes
    write_package(pkg, files_v2(), [other_key], version=2)
    before = state(work)
    for extra in ((), ("--trust-on-first-use",)):
        rc, out, err = run_cli("fetch", primary.url, "-o", str(dest), "--cache", str(cache),
                               *extra)
        assert rc == 3 and out == ""
        one_error_line(err, "pinned for 'site'", str(pin), "delete that file")
        assert state(work) == before
    assert snapshot(dest) == FILES_V1


def test_tofu_pin_requires_every_original_signer_after_one_key_is_stolen(
    client: Client, primary: FaultServer, pkg: Path, key: SigningKey, other_key: SigningKey
) -> None:
    write_package(pkg, FILES_V1, [key, other_key])
    r = client(primary.url, policy=None, allow_unsigned=False, trust_on_first_use=True)
    assert r.trust["mode"] == "pinned-now" and r.trust["threshold"] == 2
    anchor = load_pin(client.cache, "site")
    assert anchor is not None and anchor.threshold == 2
    assert sorted(anchor.key_ids()) == sorted([key.key_id, other_key.key_id])
    # whoever holds only one of the two keys cannot publish
    write_package(pkg, files_v2(), [other_key], version=2)
    before = state(client.dest.parent)
    with pytest.raises(PinnedKeyError, match="1 of the required 2"):
        client(primary.url, policy=None, allow_unsigned=False)
    # --allow-unsigned does not bypass a pin either
    with pytest.raises(PinnedKeyError):
        client(primary.url, policy=None, allow_unsigned=True)
    assert state(client.dest.parent) == before
    write_package(pkg, files_v2(), [key, other_key], version=2)
    assert client(primary.url, policy=None, allow_unsigned=False).version == 2


def test_trust_on_first_use_with_no_cache_is_usage_error_exit_2(
    primary: FaultServer, work: Path
) -> None:
    rc, out, err = run_cli("fetch", primary.url, "-o", str(work / "site"), "--no-cache",
                           "--trust-on-first-use")
    assert rc == 2 and out == ""
    one_error_line(err, "--trust-on-first-use needs a cache")
    assert state(work) == {}


def test_unsigned_manifest_needs_allow_unsigned_and_says_unsigned_every_time(
    primary: FaultServer, pkg: Path, work: Path
) -> None:
    write_package(pkg, FILES_V1, [])
    dest, cache = work / "site", work / "cache"
    rc, _, err = run_cli("fetch", primary.url, "-o", str(dest), "--cache", str(cache))
    assert rc == 3
    one_error_line(err, "no trust anchor")
    assert state(work) == {}
    # nothing to pin: trust on first use refuses too, and pins nothing
    rc, _, err = run_cli("fetch", primary.url, "-o", str(dest), "--cache", str(cache),
                         "--trust-on-first-use")
    assert rc == 3
    one_error_line(err, "no valid signature with a public key to pin")
    assert not dest.exists() and not pin_path(cache, "site").exists()
    for _ in range(2):
        rc, out, err = run_cli("fetch", primary.url, "-o", str(dest), "--cache", str(cache),
                               "--allow-unsigned")
        assert rc == 0, err
        assert "UNSIGNED: signatures not checked" in out
        rc, out, err = run_cli("fetch", primary.url, "-o", str(dest), "--cache", str(cache),
                               "--allow-unsigned", "--json")
        assert rc == 0, err
        assert json.loads(out)["trust"]["mode"] == "unsigned"
    assert snapshot(dest) == FILES_V1


def test_fetch_into_non_empty_user_folder_refuses_exit_2_and_moves_nothing(
    primary: FaultServer, work: Path, pub: Path
) -> None:
    dest = work / "Documents"
    for rel, data in USER_FILES.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(data)
    before = state(work)
    rc, out, err = run_cli("fetch", primary.url, "-o", str(dest), "--trusted-key", str(pub),
                           "--no-cache", "--package", "site")
    assert rc == 2 and out == ""
    one_error_line(err, str(dest), "not an AuraSeal install", "--force")
    assert state(work) == before
    assert primary.hits[MANIFEST_NAME] == 0


def test_fetch_force_keeps_user_files_as_rollback_copy_until_next_fetch(
    primary: FaultServer, pkg: Path, key: SigningKey, work: Path, pub: Path
) -> None:
    dest = work / "Documents"
    for rel, data in USER_FILES.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(data)
    base = ["--trusted-key", str(pub), "--no-cache", "--package", "site"]
    rc, out, err = run_cli("fetch", primary.url, "-o", str(dest), *base, "--force")
    assert rc == 0, err
    assert snapshot(dest) == FILES_V1
    assert snapshot(prev_dir(dest)) == USER_FILES  # kept, not deleted
    assert f"its 2 entries were moved to {prev_dir(dest)}" in out
    assert "auraseal rollback" in out
    # rollback brings the user's files back, exactly
    rc, out, err = run_cli("rollback", str(dest))
    assert rc == 0, err
    assert "files that were there before 'fetch --force'" in out
    assert snapshot(dest) == USER_FILES
    # ... and they are user files again: a plain fetch refuses to touch them
    before = state(work)
    rc, _, err = run_cli("fetch", primary.url, "-o", str(dest), *base)
    assert rc == 2
    one_error_line(err, "not an AuraSeal install")
    assert state(work) == before
    # forced again, then the next version: only now do the user files go, said so
    assert run_cli("fetch", primary.url, "-o", str(dest), *base, "--force")[0] == 0
    assert snapshot(prev_dir(dest)) == USER_FILES
    write_package(pkg, files_v2(), [key], version=2)
    rc, out, err = run_cli("fetch", primary.url, "-o", str(dest), *base, "--json")
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["version"] == 2 and rep["previous_version"] == 1
    assert any("before 'fetch --force'" in w and w.startswith("removed ")
               for w in rep["warnings"])
    assert snapshot(prev_dir(dest)) == FILES_V1


def test_fetch_right_after_publish_installs_new_version(
    primary: FaultServer, pkg: Path, key: SigningKey, work: Path, pub: Path
) -> None:
    dest, cache = work / "site", work / "cache"
    base = ["fetch", primary.url, "-o", str(dest), "--trusted-key", str(pub),
            "--cache", str(cache), "--json"]
    assert run_cli(*base)[0] == 0
    primary.clear()
    rc, out, _ = run_cli(*base)  # unchanged: one conditional request, a 304
    assert rc == 0 and json.loads(out)["manifest_source"] == "revalidated"
    assert primary.hits[MANIFEST_NAME] == 1 and sum(primary.hits.values()) == 1
    write_package(pkg, files_v2(), [key], version=2)  # publish, well within the 1h TTL
    rc, out, err = run_cli(*base)
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["version"] == 2 and rep["manifest_source"] == "primary"
    assert snapshot(dest) == files_v2()


def test_cached_manifest_used_only_when_server_unreachable_and_said_so(
    primary: FaultServer, work: Path, pub: Path
) -> None:
    dest, cache = work / "site", work / "cache"
    base = ["fetch", primary.url, "-o", str(dest), "--trusted-key", str(pub),
            "--cache", str(cache)]
    assert run_cli(*base)[0] == 0
    primary.fault(MANIFEST_NAME, "status", status=503)
    rc, out, err = run_cli(*base)
    assert rc == 0, err
    assert "manifest from stale cache" in out
    assert "warning: using cached manifest from " in out and "(server unreachable)" in out
    rc, out, err = run_cli(*base, "--json")
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["manifest_source"] == "stale cache" and rep["manifest_cached_at"]
    # a TTL of 0: the cached copy may not stand in; exit 5, nothing changes
    before = state(work)
    rc, out, err = run_cli(*base, "--manifest-ttl", "0s")
    assert rc == 5
    one_error_line(err, "older than the manifest TTL")
    assert state(work) == before
