"""Publishing and the ledger endpoints against the real server."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from _servers import run_server

from auraseal import merkle
from auraseal.ledger import open_checkpoint
from auraseal.manifest import MANIFEST_NAME
from auraseal.server import store as store_mod
from auraseal.signing import load_public_key

from .conftest import uploads_empty


def _put(url: str, body: bytes, token: str) -> httpx.Response:
    return httpx.put(f"{url}/packages/site", content=body,
                     headers={"authorization": f"Bearer {token}"}, timeout=60)


def _wait_committed(url: str, entry_id: str) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        e = httpx.get(f"{url}/ledger/entries/{entry_id}").json()
        if e.get("inclusion"):
            return e  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError("entry never committed")


def test_publish_swaps_atomically_and_is_recorded(
    root: Path, serve, token: tuple[str, Path],  # type: ignore[no-untyped-def]
    site_zip: Callable[[int], bytes], sealed_versions: dict[int, Path],
) -> None:
    url = serve(root)
    old_manifest = httpx.get(f"{url}/packages/site/integrity-manifest.json").content
    seen: set[bytes] = set()
    statuses: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        with httpx.Client() as c:
            while not stop.is_set():
                r = c.get(f"{url}/packages/site/integrity-manifest.json")
                statuses.append(r.status_code)
                seen.add(r.content)
                p = c.get(f"{url}/packages/site/files/data/blob.bin.part.1")
                statuses.append(p.status_code)

    t = threading.Thread(target=reader)
    t.start()
    try:
        r = _put(url, site_zip(2), token[0])
    finally:
        time.sleep(0.2)
        stop.set()
        t.join()
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 2
    new_manifest = (sealed_versions[2] / MANIFEST_NAME).read_bytes()
    # readers only ever saw the old or the new manifest, never an error or a mix
    assert statuses and set(statuses) == {200}
    assert seen <= {old_manifest, new_manifest}
    assert httpx.get(f"{url}/packages/site/integrity-manifest.json").content == new_manifest
    assert (root / "site").is_symlink()
    assert os.readlink(root / "site") == ".versions/site/2"
    # the old version stays reachable, immutable
    v1 = httpx.get(f"{url}/packages/site/versions/1/integrity-manifest.json")
    assert v1.status_code == 200 and v1.content == old_manifest
    assert httpx.get(f"{url}/packages/site/versions/2/files/index.html").status_code == 200
    assert uploads_empty(root)
    assert httpx.get(f"{url}/packages/site/versions").json() == {
        "package": "site", "current": 2, "versions": [1, 2]}
    # a further publish goes through the symlink swap
    assert _put(url, site_zip(3), token[0]).status_code == 201
    assert os.readlink(root / "site") == ".versions/site/3"
    # recorded in the ledger, with an inclusion proof once its block is committed
    entry = _wait_committed(url, r.json()["ledger_entry"])
    assert entry["entry_type"] == "server.publish"
    inc = entry["inclusion"]
    merkle.verify_inclusion(
        bytes.fromhex(inc["leaf_hash"]), inc["leaf_index"], inc["tree_size"],
        [bytes.fromhex(p) for p in inc["proof"]], bytes.fromhex(inc["root"]),
    )
    pkgs = httpx.get(f"{url}/packages").json()["packages"]
    assert [(p["name"], p["version"]) for p in pkgs] == [("site", 3)]
    m = httpx.get(f"{url}/metrics").text
    assert 'auraseal_publishes_total{result="ok"} 2' in m


def test_rollback_is_refused_across_restarts(
    root: Path, publisher_key, token: tuple[str, Path],  # type: ignore[no-untyped-def]
    site_zip: Callable[[int], bytes],
) -> None:
    cfg = {"trusted_keys": (publisher_key.public,), "publish_token_file": token[1],
           "healing": False}
    with run_server(root, **cfg) as url:
        assert _put(url, site_zip(3), token[0]).status_code == 201
    # even if an operator puts an older copy back by hand, v2 is still refused
    with run_server(root, **cfg) as url:
        r = _put(url, site_zip(2), token[0])
        assert r.status_code == 409


def test_publish_disabled_without_trusted_keys(
    root: Path, serve, token: tuple[str, Path], site_zip: Callable[[int], bytes],  # type: ignore[no-untyped-def]
) -> None:
    url = serve(root, trusted_keys=())
    r = _put(url, site_zip(2), token[0])
    assert r.status_code == 403
    assert uploads_empty(root)


def test_ledger_endpoints(root: Path, serve, token: tuple[str, Path]) -> None:  # type: ignore[no-untyped-def]
    url = serve(root)
    auth = {"authorization": f"Bearer {token[0]}"}
    ids = []
    for i in range(3):
        r = httpx.post(f"{url}/ledger/entries", json={"type": "note", "data": {"i": i}},
                       headers=auth)
        assert r.status_code == 201
        ids.append(r.json()["id"])
    entries = [_wait_committed(url, i) for i in ids]
    size = max(e["inclusion"]["tree_size"] for e in entries)
    # the checkpoint is a C2SP signed note by the server's checkpoint key
    note = httpx.get(f"{url}/ledger/checkpoint").text
    pub = load_public_key(root / ".auraseal" / "checkpoint.key.pub")
    cp = open_checkpoint(note, "auraseal-server", pub)
    assert cp.size >= size
    vk = httpx.get(f"{url}/ledger/verifier-key").text.strip()
    assert vk.startswith("auraseal-server+")
    # consistency between the first entry's tree and the checkpoint
    first = entries[0]["inclusion"]["tree_size"]
    c = httpx.get(f"{url}/ledger/consistency", params={"from": first, "to": cp.size}).json()
    merkle.verify_consistency(first, cp.size, [bytes.fromhex(p) for p in c["proof"]],
                              bytes.fromhex(c["root_from"]), cp.root)
    assert bytes.fromhex(c["root_to"]) == cp.root
    # blocks
    b = httpx.get(f"{url}/ledger/blocks/1")
    assert b.status_code == 200
    assert b.json()["block_number"] == 1
    assert httpx.get(f"{url}/ledger/blocks/999999").status_code == 404
    assert httpx.get(f"{url}/ledger/entries/nope").status_code == 404
    for q in ({"from": "x", "to": "1"}, {"from": "5", "to": "1"}, {}):
        assert httpx.get(f"{url}/ledger/consistency", params=q).status_code == 400
    assert httpx.get(f"{url}/ledger/consistency",
                     params={"from": 1, "to": 10**9}).status_code == 404
    assert httpx.post(f"{url}/ledger/entries", content=b"{", headers=auth).status_code == 400
    head = httpx.get(f"{url}/metrics").text
    assert "auraseal_ledger_entries" in head


def test_concurrent_publishes_never_go_backwards(
    root: Path, serve, token: tuple[str, Path], site_zip: Callable[[int], bytes],  # type: ignore[no-untyped-def]
) -> None:
    url = serve(root, healing=False)
    results: dict[int, int] = {}

    def publish(v: int) -> None:
        results[v] = _put(url, site_zip(v), token[0]).status_code

    threads = [threading.Thread(target=publish, args=(v,)) for v in (3, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[3] == 201
    assert results[2] in (201, 409)
    assert httpx.get(f"{url}/packages").json()["packages"][0]["version"] == 3
    assert uploads_empty(root)


def test_leftovers_of_a_crash_are_cleaned_at_start(root: Path, serve) -> None:  # type: ignore[no-untyped-def]
    staging = root / ".versions" / "site" / ".staging-deadbeef"
    staging.mkdir(parents=True)
    (staging / "half.bin").write_bytes(b"x" * 100)
    uploads = root / ".auraseal" / "uploads"
    uploads.mkdir(parents=True)
    (uploads / "site-0123.zip").write_bytes(b"PK")
    url = serve(root, healing=False)
    assert not staging.exists()
    assert uploads_empty(root)
    assert httpx.get(f"{url}/packages").json()["packages"][0]["version"] == 1


def test_storage_fault_during_swap_leaves_old_version(
    root: Path, serve, token: tuple[str, Path], site_zip: Callable[[int], bytes],  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fault injection: the symlink swap fails (disk error): 503, v1 still served,
    nothing half-installed left behind, and the next publish works."""
    url = serve(root, healing=False)
    real_replace = store_mod.os.replace

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(store_mod.os, "replace", failing_replace)
    r = _put(url, site_zip(2), token[0])
    assert r.status_code == 503
    assert r.json()["error"]["type"] == "StorageError"
    assert httpx.get(f"{url}/packages").json()["packages"][0]["version"] == 1
    assert not (root / ".versions" / "site" / "2").exists()
    assert uploads_empty(root)
    assert not [p for p in root.iterdir() if p.name.startswith(".site.")]
    monkeypatch.setattr(store_mod.os, "replace", real_replace)
    assert _put(url, site_zip(2), token[0]).status_code == 201
    assert httpx.get(f"{url}/packages").json()["packages"][0]["version"] == 2


def test_stale_server_temps_of_dead_workers_are_cleaned_at_start(
    root: Path, serve  # type: ignore[no-untyped-def]
) -> None:
    """Temp zips, uploads, staging dirs and swap links of a killed worker use the
    shared temp scheme and are removed at start; a live process's temps stay."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = os.getpid()
    zips = root / ".auraseal" / "zips"
    uploads = root / ".auraseal" / "uploads"
    vsite = root / ".versions" / "site"
    for d in (zips, uploads, vsite):
        d.mkdir(parents=True, exist_ok=True)
    stale = [
        zips / f".site-1-0123456789abcdef.zip.auraseal-tmp-zip-{dead.pid}-a1b2c3",
        uploads / f".site.auraseal-tmp-upload-{dead.pid}-a1b2c3",
        root / f".site.auraseal-tmp-link-{dead.pid}-a1b2c3",
    ]
    for p in stale:
        p.write_bytes(b"half")
    stale_dir = vsite / f".staging.auraseal-tmp-staging-{dead.pid}-a1b2c3"
    stale_dir.mkdir()
    (stale_dir / "x.bin").write_bytes(b"x")
    kept = zips / f".site-1-0123456789abcdef.zip.auraseal-tmp-zip-{live}-d4e5f6"
    kept.write_bytes(b"busy")
    url = serve(root, healing=False)
    assert [p for p in stale if p.exists() or p.is_symlink()] == []
    assert not stale_dir.exists()
    assert kept.exists()  # owned by a running process
    assert httpx.get(f"{url}/packages/site", timeout=30).status_code == 200
    names = os.listdir(zips)
    assert not [n for n in names if n.endswith(".tmp") or ("auraseal-tmp" in n and n != kept.name)]
