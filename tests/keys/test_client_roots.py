"""The client walks served roots from its pinned version; rotation, revoked
keys, root rollback and online timestamps, against ``python3 -m http.server``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from client.faultserver import fault_server  # tests/client's fault-injecting server

from auraseal.client import HttpConfig, fetch_package
from auraseal.client.roots import RootTrust, pinned_root
from auraseal.errors import (
    AuraSealError,
    ExpiredError,
    PackageMismatchError,
    RollbackError,
    ThresholdError,
    TrustError,
    UnknownKeyError,
)
from auraseal.manifest import manifest_digest
from auraseal.root import make_timestamp
from auraseal.signing import SigningKey

from .conftest import StaticHost
from .helpers import FILES, publish_root, root_v1, rotate, write_package

FAST = HttpConfig(timeout=2.0, trust_env=False)


def fetch(host: StaticHost, tmp: Path, anchor: bytes | None = None, **kw: object) -> object:
    return fetch_package(
        host.url, tmp / "out" / "site", cache_dir=tmp / "cache", http=FAST, package="site",
        root=RootTrust(anchor, "--root", tmp / "cache"), **kw,  # type: ignore[arg-type]
    )


def installed(tmp: Path) -> dict[str, bytes]:
    d = tmp / "out" / "site"
    return {p: (d / p).read_bytes() for p in FILES if (d / p).exists()}


def test_rotation_1_2_3_client_pinned_at_1_ends_at_3(
    static_host: StaticHost, tmp_path: Path, keys: dict[str, SigningKey]
) -> None:
    k1, k2, k3, k4 = keys["k1"], keys["k2"], keys["k3"], keys["k4"]
    tree = static_host.root
    r1, d1 = root_v1([k1, k2], 2)
    r2, d2 = rotate(r1, [k2, k3], 2, [k1, k2, k3])
    r3, d3 = rotate(r2, [k3, k4], 2, [k2, k3, k4])
    for v, d in ((1, d1), (2, d2), (3, d3)):
        publish_root(tree, d, v)
    write_package(tree, [k3, k4], version=5)
    report = fetch(static_host, tmp_path, d1)
    assert report.version == 5  # type: ignore[attr-defined]
    assert installed(tmp_path) == FILES
    pin = pinned_root(tmp_path / "cache", "site")
    assert pin is not None and pin.version == 3 and pin.digest() == r3.digest()
    # the pin is kept: a later fetch without --root still goes by root v3
    write_package(tree, [k1, k2], version=6)  # signed by v1's keys only: no longer trusted
    with pytest.raises(TrustError):
        fetch_package(static_host.url, tmp_path / "out" / "site", cache_dir=tmp_path / "cache",
                      http=FAST, package="site", manifest_ttl=timedelta(0))
    assert installed(tmp_path) == FILES


def test_fetch_refuses_manifest_signed_only_by_revoked_key(
    static_host: StaticHost, tmp_path: Path, keys: dict[str, SigningKey]
) -> None:
    k1, k2 = keys["k1"], keys["k2"]
    tree = static_host.root
    r1, d1 = root_v1([k1, k2], 1)
    # k2 leaked: root v2 removes it (signed by k1, in both v1 and v2)
    r2, d2 = rotate(r1, [k1], 1, [k1])
    publish_root(tree, d1, 1)
    publish_root(tree, d2, 2)
    write_package(tree, [k2], version=9)  # the thief signs a manifest with k2
    with pytest.raises(UnknownKeyError) as ei:
        fetch(static_host, tmp_path, d1)
    assert ei.value.exit_code == 3
    assert not (tmp_path / "out" / "site").exists()
    # the client now pins v2; the leaked key cannot rotate on to a v3 of its own
    assert pinned_root(tmp_path / "cache", "site").version == 2  # type: ignore[union-attr]
    _r3, d3 = rotate(r2, [k2], 1, [k2])
    publish_root(tree, d3, 3)
    with pytest.raises(UnknownKeyError, match="none of the keys of root v2"):
        fetch(static_host, tmp_path, d1)
    assert not (tmp_path / "out" / "site").exists()


def test_fetch_refuses_rotation_signed_by_too_few_old_keys(
    static_host: StaticHost, tmp_path: Path, keys: dict[str, SigningKey]
) -> None:
    k1, k2, k3 = keys["k1"], keys["k2"], keys["k3"]
    tree = static_host.root
    r1, d1 = root_v1([k1, k2], 2)
    _r2, d2 = rotate(r1, [k3], 1, [k2, k3])  # a draft: one of v1's two keys
    publish_root(tree, d1, 1)
    publish_root(tree, d2, 2)
    write_package(tree, [k3], version=2)
    with pytest.raises(ThresholdError, match="draft"):
        fetch(static_host, tmp_path, d1)
    assert not (tmp_path / "out" / "site").exists()


def test_fetch_refuses_server_serving_older_root_as_newest(
    static_host: StaticHost, tmp_path: Path, keys: dict[str, SigningKey]
) -> None:
    k1, k2, k3 = keys["k1"], keys["k2"], keys["k3"]
    tree = static_host.root
    r1, d1 = root_v1([k1, k2], 1)
    r2, d2 = rotate(r1, [k1, k2], 1, [k1])
    _r3, d3 = rotate(r2, [k1], 1, [k1])  # v3 revokes k2
    for v, d in ((1, d1), (2, d2), (3, d3)):
        publish_root(tree, d, v)
    write_package(tree, [k1], version=3)
    fetch(static_host, tmp_path, d1)
    before = installed(tmp_path)
    pin = pinned_root(tmp_path / "cache", "site")
    assert pin is not None and pin.version == 3
    # the server (or a mirror) goes back to root v2, where k2 still counts
    (tree / "root" / "3.json").unlink()
    write_package(tree, [k2], version=4, files={**FILES, "index.html": b"evil\n"})
    with pytest.raises(RollbackError, match="older"):
        fetch(static_host, tmp_path, d1, manifest_ttl=timedelta(0))
    # a different document as v3 is refused too
    _r3x, d3x = rotate(r2, [k1, k3], 1, [k1])
    publish_root(tree, d3x, 3)
    with pytest.raises(RollbackError, match="differs"):
        fetch(static_host, tmp_path, d1, manifest_ttl=timedelta(0))
    assert installed(tmp_path) == before
    assert pinned_root(tmp_path / "cache", "site").version == 3  # type: ignore[union-attr]


def test_expired_final_root_refused(
    static_host: StaticHost, tmp_path: Path, keys: dict[str, SigningKey]
) -> None:
    k1 = keys["k1"]
    tree = static_host.root
    r1, d1 = root_v1([k1], 1)
    _r2, d2 = rotate(r1, [k1], 1, [k1], expires=timedelta(seconds=-5))
    publish_root(tree, d1, 1)
    publish_root(tree, d2, 2)
    write_package(tree, [k1])
    with pytest.raises(ExpiredError, match="root v2"):
        fetch(static_host, tmp_path, d1)


# --- online freshness: timestamp.json --------------------------------------


def _timestamped(
    host: StaticHost, keys: dict[str, SigningKey]
) -> tuple[bytes, object]:
    k1, t1 = keys["k1"], keys["t1"]
    _r1, d1 = root_v1([k1], 1, timestamp=[t1])
    publish_root(host.root, d1, 1)
    m = write_package(host.root, [k1], version=7)
    return d1, m


def test_valid_timestamp_accepted(
    static_host: StaticHost, tmp_path: Path, keys: dict[str, SigningKey]
) -> None:
    d1, m = _timestamped(static_host, keys)
    (static_host.root / "timestamp.json").write_bytes(
        make_timestamp("site", 7, manifest_digest(m), [keys["t1"]])  # type: ignore[arg-type]
    )
    assert fetch(static_host, tmp_path, d1).version == 7  # type: ignore[attr-defined]


def test_fetch_refuses_expired_timestamp(
    static_host: StaticHost, tmp_path: Path, keys: dict[str, SigningKey]
) -> None:
    d1, m = _timestamped(static_host, keys)
    # a mirror frozen two days ago still serves yesterday's timestamp
    (static_host.root / "timestamp.json").write_bytes(make_timestamp(
        "site", 7, manifest_digest(m), [keys["t1"]], lifetime=timedelta(days=1),  # type: ignore[arg-type]
        now=__import__("auraseal._time", fromlist=["utcnow"]).utcnow() - timedelta(days=2),
    ))
    with pytest.raises(ExpiredError, match="frozen"):
        fetch(static_host, tmp_path, d1)
    assert not (tmp_path / "out" / "site").exists()


def test_fetch_refuses_timestamp_naming_another_manifest(
    static_host: StaticHost, tmp_path: Path, keys: dict[str, SigningKey]
) -> None:
    d1, m = _timestamped(static_host, keys)
    # the timestamp names v8; the mirror still serves v7
    (static_host.root / "timestamp.json").write_bytes(
        make_timestamp("site", 8, "ab" * 32, [keys["t1"]])
    )
    with pytest.raises(RollbackError, match="names manifest v8"):
        fetch(static_host, tmp_path, d1)
    # same version, other digest (another v7)
    (static_host.root / "timestamp.json").write_bytes(
        make_timestamp("site", 7, "cd" * 32, [keys["t1"]])
    )
    with pytest.raises(RollbackError):
        fetch(static_host, tmp_path, d1)
    # a timestamp for another package
    (static_host.root / "timestamp.json").write_bytes(
        make_timestamp("other", 7, manifest_digest(m), [keys["t1"]])  # type: ignore[arg-type]
    )
    with pytest.raises(PackageMismatchError):
        fetch(static_host, tmp_path, d1)
    assert not (tmp_path / "out" / "site").exists()


def test_fetch_refuses_missing_or_wrongly_signed_timestamp(
    static_host: StaticHost, tmp_path: Path, keys: dict[str, SigningKey]
) -> None:
    d1, m = _timestamped(static_host, keys)
    with pytest.raises(ExpiredError, match="serves none"):
        fetch(static_host, tmp_path, d1)
    # signed by the release key, not the timestamp key
    (static_host.root / "timestamp.json").write_bytes(
        make_timestamp("site", 7, manifest_digest(m), [keys["k1"]])  # type: ignore[arg-type]
    )
    with pytest.raises(UnknownKeyError):
        fetch(static_host, tmp_path, d1)


def test_trust_on_first_use_pins_served_root_1(
    static_host: StaticHost, tmp_path: Path, keys: dict[str, SigningKey]
) -> None:
    k1, k2 = keys["k1"], keys["k2"]
    tree = static_host.root
    r1, d1 = root_v1([k1], 1)
    _r2, d2 = rotate(r1, [k2], 1, [k1, k2])
    publish_root(tree, d1, 1)
    publish_root(tree, d2, 2)
    write_package(tree, [k2], version=2)
    report = fetch_package(
        static_host.url, tmp_path / "out" / "site", cache_dir=tmp_path / "cache", http=FAST,
        package="site", root=RootTrust(cache_dir=tmp_path / "cache", tofu=True),
    )
    assert any("first use" in w for w in report.warnings)
    assert pinned_root(tmp_path / "cache", "site").version == 2  # type: ignore[union-attr]


def test_failed_root_walk_is_not_skipped_for_the_next_source(
    tmp_path: Path, keys: dict[str, SigningKey]
) -> None:
    """A root walk that fails on the primary (500 on root/2.json) must not let
    the mirror's manifest through unchecked: the failure holds for the fetch."""
    k1, k9 = keys["k1"], keys["k5"]
    primary, mirror = tmp_path / "p", tmp_path / "m"
    r1, d1 = root_v1([k1], 1)
    _r2, d2 = rotate(r1, [k1], 1, [k1])
    for tree in (primary, mirror):
        publish_root(tree, d1, 1)
        publish_root(tree, d2, 2)
    write_package(primary, [k1], version=3)
    write_package(mirror, [k9], version=4, files={**FILES, "index.html": b"evil\n"})
    with fault_server(primary) as p, fault_server(mirror) as m:
        p.fault("root/2.json", "status", status=500)
        with pytest.raises(AuraSealError):
            fetch_package(
                p.url, tmp_path / "out" / "site", mirrors=[m.url], cache_dir=tmp_path / "cache",
                http=FAST, package="site", root=RootTrust(d1, "--root", tmp_path / "cache"),
            )
    assert not (tmp_path / "out" / "site").exists()
