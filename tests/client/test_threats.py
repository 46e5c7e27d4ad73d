"""One test per threat: seed 003's table and PRODUCT.md's threat model.

Each asserts the outcome (which source was used, or the refusal's exit
code) and, after every refusal, that DIR is byte-for-byte what it was and
no staging directory is left beside it.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest

from auraseal._time import utcnow
from auraseal.client import HttpConfig
from auraseal.errors import (
    AuraSealError,
    BadSignatureError,
    ComponentLostError,
    DigestMismatchError,
    ExpiredError,
    NetworkError,
    RollbackError,
    UnknownKeyError,
    UnsafePathError,
)
from auraseal.manifest import MANIFEST_NAME, build_manifest, dump_signed, load_manifest
from auraseal.signing import SigningKey, TrustPolicy, sign_envelope

from .conftest import Client
from .faultserver import FaultServer, fault_server
from .helpers import FILES_V1, files_v2, no_leftovers, snapshot, write_package


def refused(
    client: Client, url: str, exc_type: type[AuraSealError], code: int, **kw: object
) -> AuraSealError:
    before = snapshot(client.dest)
    with pytest.raises(exc_type) as info:
        client(url, **kw)
    assert info.value.exit_code == code
    assert snapshot(client.dest) == before, "DIR changed after a refusal"
    no_leftovers(client.dest)
    assert any(t == "fetch.refused" for t, _ in client.events)
    return info.value


def installed(client: Client, files: dict[str, bytes]) -> None:
    assert snapshot(client.dest) == files
    no_leftovers(client.dest)


# --- seed 003: "Threats Mitigated" ------------------------------------------------


def test_cdn_compromise_tampered_file_rejected_local_fallback_used(
    client: Client, primary: FaultServer, tmp_path: Path
) -> None:
    """CDN compromise: the tampered file is rejected and the local fallback applied."""
    fallback = tmp_path / "fallback"
    write_package(fallback, FILES_V1, [])
    primary.fault("js/app.js", "body", body=b"alert('owned')\n")
    r = client(primary.url, fallback_dir=fallback)
    installed(client, FILES_V1)
    src = {f.path: f.source for f in r.files}
    assert src["js/app.js"] == "fallback"
    assert src["index.html"] == "primary"
    app = next(f for f in r.files if f.path == "js/app.js")
    assert any(x.startswith("primary") for x in app.rejected)


def test_cdn_compromise_without_fallback_refused_exit_1(
    client: Client, primary: FaultServer
) -> None:
    client(primary.url)  # v1 installed
    before = snapshot(client.dest)
    primary.fault("js/app.js", "body", body=b"alert('owned')\n")
    # a new cache so the good cached copy is not used
    refused(client, primary.url, DigestMismatchError, 1, cache_dir=client.cache.parent / "c2",
            dest=client.dest.parent / "other")
    assert snapshot(client.dest) == before


def test_mitm_flipped_bytes_mirror_used(
    client: Client, primary: FaultServer, mirror: FaultServer
) -> None:
    """Man-in-the-middle on the primary: the mismatch is caught, the mirror used."""
    primary.fault("data/blob.bin", "flip")
    r = client(primary.url, mirrors=[mirror.url])
    installed(client, FILES_V1)
    assert {f.path: f.source for f in r.files}["data/blob.bin"] == "mirror 1"
    assert mirror.hits["data/blob.bin"] == 1
    assert any(t == "fetch.rejected" for t, _ in client.events)


def test_mitm_altered_manifest_bad_signature_exit_3(
    client: Client, primary: FaultServer, pkg: Path
) -> None:
    env = json.loads((pkg / MANIFEST_NAME).read_bytes())
    env["signed"]["files"]["js/app.js"]["size"] += 1
    primary.fault(MANIFEST_NAME, "body", body=json.dumps(env).encode())
    refused(client, primary.url, BadSignatureError, 3)
    assert not client.dest.exists()


def test_repository_hijack_manifest_by_unknown_key_exit_3(
    client: Client, primary: FaultServer, pkg: Path, other_key: SigningKey
) -> None:
    """A forked or hijacked repository signs with a key we do not trust."""
    client(primary.url)
    write_package(pkg, files_v2(), [other_key], version=2)
    refused(client, primary.url, UnknownKeyError, 3, manifest_ttl=timedelta(0))
    installed(client, FILES_V1)


def test_accidental_corruption_and_404_fail_over_to_mirror(
    client: Client, primary: FaultServer, mirror: FaultServer
) -> None:
    primary.fault("index.html", "status", status=404)
    primary.fault("js/app.js", "status", status=500)
    r = client(primary.url, mirrors=[mirror.url])
    installed(client, FILES_V1)
    src = {f.path: f.source for f in r.files}
    assert src == {"index.html": "mirror 1", "js/app.js": "mirror 1", "data/blob.bin": "primary"}


def test_manifest_revalidated_with_etag_on_every_online_fetch(
    client: Client, primary: FaultServer
) -> None:
    """Within its TTL the cached index is still revalidated (one 304), files from cache."""
    r1 = client(primary.url)
    assert r1.manifest_source == "primary"
    primary.clear()
    r2 = client(primary.url)
    assert r2.manifest_source == "revalidated"
    assert primary.hits[MANIFEST_NAME] == 1
    assert {f.source for f in r2.files} == {"cache"}
    assert sum(primary.hits.values()) == 1
    later = utcnow() + timedelta(hours=2)
    r3 = client(primary.url, now=later)
    assert r3.manifest_source == "revalidated"
    assert primary.hits[MANIFEST_NAME] == 2
    installed(client, FILES_V1)


def test_file_ttl_expired_cache_entry_is_downloaded_again(
    client: Client, primary: FaultServer
) -> None:
    client(primary.url)
    primary.clear()
    r = client(primary.url, now=utcnow() + timedelta(hours=7), manifest_ttl=timedelta(days=1))
    assert {f.source for f in r.files} == {"primary"}
    assert primary.hits["data/blob.bin"] == 1
    r = client(primary.url, file_ttl=timedelta(hours=6))
    assert {f.source for f in r.files} == {"cache"}


def test_stale_cached_file_still_used_when_every_source_fails(
    client: Client, primary: FaultServer
) -> None:
    client(primary.url)
    for p in FILES_V1:
        primary.fault(p, "status", status=503)
    r = client(primary.url, now=utcnow() + timedelta(hours=7), manifest_ttl=timedelta(days=1))
    assert {f.source for f in r.files} == {"stale cache"}
    installed(client, FILES_V1)


# --- seed 003: "Threats NOT mitigated" — mitigated here -----------------------------


def test_account_compromise_rules_and_hashes_replaced_but_unsigned_exit_3(
    client: Client, primary: FaultServer, pkg: Path
) -> None:
    """An attacker who can update both files and hashes still cannot sign."""
    client(primary.url)
    evil = files_v2()
    write_package(pkg, evil, [], version=2)  # consistent hashes, no signature
    refused(client, primary.url, AuraSealError, 3, manifest_ttl=timedelta(0))
    installed(client, FILES_V1)


def test_local_fallback_tampering_is_not_used_exit_1(
    client: Client, primary: FaultServer, tmp_path: Path
) -> None:
    fallback = tmp_path / "fallback"
    tampered = dict(FILES_V1)
    tampered["js/app.js"] = b"alert('tampered fallback')\n"
    write_package(fallback, tampered, [])
    primary.fault("js/app.js", "flip")
    err = refused(client, primary.url, DigestMismatchError, 1, fallback_dir=fallback)
    assert "fallback" in str(err) and "primary" in str(err)
    assert not client.dest.exists()


# --- PRODUCT.md threat model --------------------------------------------------------


@pytest.mark.parametrize("kind", ["truncate", "short"])
def test_truncated_response_fails_over(
    client: Client, primary: FaultServer, mirror: FaultServer, kind: str
) -> None:
    primary.fault("data/blob.bin", kind)
    r = client(primary.url, mirrors=[mirror.url])
    assert {f.path: f.source for f in r.files}["data/blob.bin"] == "mirror 1"
    installed(client, FILES_V1)


def test_truncated_everywhere_refused_exit_5(client: Client, primary: FaultServer) -> None:
    client(primary.url)
    primary.fault("data/blob.bin", "truncate")
    other = client.dest.parent / "other"
    refused(client, primary.url, NetworkError, 5, cache_dir=client.cache.parent / "c2", dest=other)
    assert not other.exists()
    installed(client, FILES_V1)


def test_endless_data_is_cut_at_the_manifest_size(
    client: Client, primary: FaultServer, mirror: FaultServer
) -> None:
    primary.fault("data/blob.bin", "endless")
    t0 = time.monotonic()
    r = client(primary.url, mirrors=[mirror.url])
    assert time.monotonic() - t0 < 10
    assert {f.path: f.source for f in r.files}["data/blob.bin"] == "mirror 1"
    # the endless body cost at most one chunk past the file's size
    assert r.bytes_downloaded < 2 * 200_000 + 300_000
    installed(client, FILES_V1)


def test_endless_manifest_is_capped(client: Client, primary: FaultServer) -> None:
    primary.fault(MANIFEST_NAME, "endless")
    cfg = HttpConfig(timeout=1.0, min_rate=1000, grace=0.5, max_manifest_bytes=1_000_000)
    err = refused(client, primary.url, NetworkError, 5, http=cfg)
    assert "more than" in str(err)


@pytest.mark.parametrize("kind", ["stall", "trickle"])
def test_slow_retrieval_fails_over(
    client: Client, primary: FaultServer, mirror: FaultServer, kind: str
) -> None:
    primary.fault("data/blob.bin", kind)
    t0 = time.monotonic()
    r = client(primary.url, mirrors=[mirror.url])
    assert time.monotonic() - t0 < 8
    f = {f.path: f for f in r.files}["data/blob.bin"]
    assert f.source == "mirror 1"
    assert any(("stalled" in x) or ("too slow" in x) for x in f.rejected), f.rejected
    installed(client, FILES_V1)


def test_slow_everywhere_refused_exit_5(
    client: Client, primary: FaultServer, mirror: FaultServer
) -> None:
    primary.fault("data/blob.bin", "stall")
    mirror.fault("data/blob.bin", "trickle")
    refused(client, primary.url, NetworkError, 5, mirrors=[mirror.url])
    assert not client.dest.exists()


def test_rollback_older_signed_manifest_refused_exit_3(
    client: Client, primary: FaultServer, pkg: Path, key: SigningKey
) -> None:
    old = (pkg / MANIFEST_NAME).read_bytes()
    write_package(pkg, files_v2(), [key], version=2)
    r = client(primary.url)
    assert r.version == 2
    primary.fault(MANIFEST_NAME, "body", body=old)  # replay v1 (validly signed)
    err = refused(client, primary.url, RollbackError, 3, manifest_ttl=timedelta(0))
    assert "older" in str(err)
    installed(client, files_v2())


def test_rollback_refused_even_with_a_fresh_cache(
    client: Client, primary: FaultServer, pkg: Path, key: SigningKey
) -> None:
    """The install record next to DIR also remembers the installed version."""
    old = (pkg / MANIFEST_NAME).read_bytes()
    write_package(pkg, files_v2(), [key], version=2)
    client(primary.url)
    primary.fault(MANIFEST_NAME, "body", body=old)
    refused(client, primary.url, RollbackError, 3, cache_dir=client.cache.parent / "fresh")


def test_same_version_with_other_content_refused_exit_3(
    client: Client, primary: FaultServer, pkg: Path, key: SigningKey
) -> None:
    client(primary.url)
    write_package(pkg, files_v2(), [key], version=1)  # v1 again, different files
    refused(client, primary.url, RollbackError, 3, manifest_ttl=timedelta(0))
    installed(client, FILES_V1)


def test_freeze_expired_manifest_refused_exit_3(
    client: Client, primary: FaultServer, pkg: Path, key: SigningKey
) -> None:
    write_package(pkg, FILES_V1, [key], expires=timedelta(seconds=1))
    err = refused(client, primary.url, ExpiredError, 3, now=utcnow() + timedelta(minutes=5))
    assert "expired" in str(err)


def test_expired_cached_manifest_is_fetched_again(
    client: Client, primary: FaultServer, pkg: Path, key: SigningKey
) -> None:
    m = write_package(pkg, FILES_V1, [key], expires=timedelta(minutes=30))
    client(primary.url)
    assert m.expires is not None
    write_package(pkg, files_v2(), [key], version=2, expires=timedelta(days=1))
    r = client(primary.url, now=m.expires + timedelta(seconds=1))
    assert r.version == 2 and r.manifest_source == "primary"


def test_mix_and_match_file_from_other_version_refused_exit_1(
    client: Client, primary: FaultServer, pkg: Path, key: SigningKey
) -> None:
    """v2's manifest, but the server hands out v1's app.js: never mixed in."""
    client(primary.url)
    v1_app = FILES_V1["js/app.js"]
    write_package(pkg, files_v2(), [key], version=2)
    primary.fault("js/app.js", "body", body=v1_app)
    err = refused(client, primary.url, DigestMismatchError, 1, manifest_ttl=timedelta(0))
    assert "js/app.js" in str(err)
    installed(client, FILES_V1)  # still wholly v1


def test_mix_and_match_cached_old_version_not_used(
    client: Client, primary: FaultServer, pkg: Path, key: SigningKey, mirror: FaultServer,
    mirror_pkg: Path,
) -> None:
    client(primary.url)
    write_package(pkg, files_v2(), [key], version=2)
    write_package(mirror_pkg, files_v2(), [key], version=2)
    primary.fault("js/app.js", "body", body=FILES_V1["js/app.js"])
    r = client(primary.url, mirrors=[mirror.url], manifest_ttl=timedelta(0))
    src = {f.path: f.source for f in r.files}
    assert src["js/app.js"] == "mirror 1"
    assert src["data/blob.bin"] == "cache"  # unchanged between versions: same bytes
    installed(client, files_v2())
    assert r.previous_version == 1


def test_path_traversal_in_manifest_names_refused_exit_2(
    client: Client, primary: FaultServer, pkg: Path, key: SigningKey, tmp_path: Path
) -> None:
    m = build_manifest(pkg, name="site", version=1)
    doc = m.to_dict()
    doc["files"]["../../escape.txt"] = doc["files"].pop("index.html")
    env = sign_envelope(doc, [key])
    primary.fault(MANIFEST_NAME, "body", body=json.dumps(env).encode())
    refused(client, primary.url, UnsafePathError, 2)
    assert not (tmp_path / "escape.txt").exists()
    assert not (client.dest.parent.parent / "escape.txt").exists()


def test_failure_midway_leaves_dir_exactly_as_it_was(
    client: Client, primary: FaultServer, pkg: Path, key: SigningKey
) -> None:
    client(primary.url)
    write_package(pkg, files_v2(), [key], version=2)
    primary.fault("js/app.js", "status", status=500)
    refused(client, primary.url, NetworkError, 5, manifest_ttl=timedelta(0))
    installed(client, FILES_V1)
    primary.clear()
    r = client(primary.url, manifest_ttl=timedelta(0))
    assert r.version == 2
    installed(client, files_v2())


def test_manifest_from_mirror_when_primary_serves_untrusted(
    client: Client, primary: FaultServer, mirror: FaultServer, other_key: SigningKey,
    pkg: Path,
) -> None:
    write_package(pkg, FILES_V1, [other_key])
    r = client(primary.url, mirrors=[mirror.url])
    assert r.manifest_source == "mirror 1"
    installed(client, FILES_V1)


def test_dump_signed_keeps_working(key: SigningKey, tmp_path: Path) -> None:
    """Sanity: the helper's manifests verify (guards the fixtures themselves)."""
    m = write_package(tmp_path / "p", FILES_V1, [key])
    back = load_manifest(dump_signed(m, [key]), policy=TrustPolicy([key.public]))
    assert back.paths() == sorted(FILES_V1)


def test_component_lost_has_exit_code_4() -> None:
    assert ComponentLostError("x").exit_code == 4


def _server_layout(tmp_path: Path, key: SigningKey, with_versions: bool) -> Path:
    """A static tree laid out like `auraseal serve` (docs/SERVER.md)."""
    root = tmp_path / "layout"
    write_package(root / "packages" / "site" / "files", FILES_V1, [key])
    if with_versions:
        write_package(root / "packages" / "site" / "versions" / "1" / "files", FILES_V1, [key])
    return root


def test_server_base_is_pinned_to_the_manifest_version(
    client: Client, tmp_path: Path, key: SigningKey
) -> None:
    """A publish during the fetch (current files already v2) cannot mix versions:
    files come from the immutable /versions/<v>/files/ base."""
    root = _server_layout(tmp_path, key, with_versions=True)
    with fault_server(root) as srv:
        srv.fault("packages/site/files/js/app.js", "body", body=files_v2()["js/app.js"])
        r = client(srv.url + "packages/site")
        installed(client, FILES_V1)
        assert r.sources() == {"primary": 3}
        assert srv.hits["packages/site/versions/1/files/js/app.js"] == 1
        assert srv.hits["packages/site/files/js/app.js"] == 0


def test_hosts_without_kept_versions_use_the_plain_base(
    client: Client, tmp_path: Path, key: SigningKey
) -> None:
    root = _server_layout(tmp_path, key, with_versions=False)
    with fault_server(root) as srv:
        r = client(srv.url + "packages/site/files/", jobs=1)
        installed(client, FILES_V1)
        assert r.sources() == {"primary": 3}
        versioned = [p for p, n in srv.hits.items() if "/versions/" in p and n]
        assert len(versioned) == 1  # one 404, then the plain base for everything


def test_manifest_unreachable_everywhere_uses_cached_copy_with_warning(
    client: Client, primary: FaultServer, mirror: FaultServer
) -> None:
    first = client(primary.url)
    primary.fault(MANIFEST_NAME, "status", status=503)
    mirror.fault(MANIFEST_NAME, "stall")
    r = client(primary.url, mirrors=[mirror.url], manifest_ttl=timedelta(hours=1))
    assert r.manifest_source == "stale cache"
    assert r.manifest_cached_at is not None and r.to_dict()["manifest_cached_at"]
    assert any(
        w.startswith("using cached manifest from ") and w.endswith("(server unreachable)")
        for w in r.warnings
    )
    installed(client, FILES_V1)
    # past the TTL the cached copy is not used: the fetch fails (exit 5), DIR unchanged
    before = snapshot(client.dest)
    with pytest.raises(NetworkError, match="older than the manifest TTL"):
        client(primary.url, mirrors=[mirror.url], manifest_ttl=timedelta(hours=1),
               now=utcnow() + timedelta(hours=2))
    assert snapshot(client.dest) == before and first.version == 1


def test_corrupted_cache_entry_is_detected_and_replaced(
    client: Client, primary: FaultServer
) -> None:
    client(primary.url)
    blobs = [p for p in (client.cache / "files").rglob("*") if p.is_file()]
    assert len(blobs) == 3
    for p in blobs:
        data = bytearray(p.read_bytes())
        data[0] ^= 1
        p.write_bytes(bytes(data))
    other = client.dest.parent / "other"
    r = client(primary.url, dest=other)
    assert r.sources() == {"primary": 3}
    assert all("cache" in f.rejected[0] for f in r.files)
    assert snapshot(other) == FILES_V1


def test_offline_with_only_a_fallback_folder(
    client: Client, primary: FaultServer, tmp_path: Path
) -> None:
    client(primary.url, dest=tmp_path / "first")  # fills the cache; its files are removed below
    fallback = tmp_path / "fb"
    write_package(fallback, FILES_V1, [])
    for p in (client.cache / "files").rglob("*"):
        if p.is_file():
            p.unlink()
    primary.clear()
    r = client(primary.url, offline=True, fallback_dir=fallback)
    assert sum(primary.hits.values()) == 0
    assert r.sources() == {"fallback": 3}
    installed(client, FILES_V1)
