"""Issue 11: publishing a manifest-only update (fresh signatures and expiry, same files)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from auraseal.client.publish import PublishRefusedError, publish_package
from auraseal.manifest import MANIFEST_NAME, resign_manifest
from auraseal.sealing import seal_tree
from auraseal.signing import SigningKey

from .conftest import EXAMPLE, manifest_bytes, uploads_empty


def _put(base: str, body: bytes, tok: str, ctype: str = "application/json") -> httpx.Response:
    return httpx.put(f"{base}/packages/site", content=body, timeout=60,
                     headers={"Authorization": f"Bearer {tok}", "Content-Type": ctype})


def _inodes(d: Path) -> dict[str, int]:
    return {p.relative_to(d).as_posix(): p.stat().st_ino
            for p in d.rglob("*") if p.is_file() and p.name != MANIFEST_NAME}


def test_manifest_only_publish_links_the_served_files(
    root: Path, serve: Callable[..., str], token: tuple[str, Path],
    sealed_versions: dict[int, Path],
) -> None:
    base = serve(root, healing=False)
    v2 = manifest_bytes(sealed_versions[2])
    r = _put(base, v2, token[0])
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 2
    assert httpx.get(f"{base}/packages/site/integrity-manifest.json").content == v2
    assert httpx.get(f"{base}/packages/site/versions").json()["versions"] == [1, 2]
    old, new = _inodes(root / ".versions/site/1"), _inodes(root / ".versions/site/2")
    assert old and old == new  # every file and part is a hard link, nothing copied
    assert (root / ".versions/site/2" / MANIFEST_NAME).read_bytes() == v2
    r = httpx.get(f"{base}/packages/site/files/index.html")
    assert r.status_code == 200 and r.headers["x-auraseal-version"] == "2"
    # no Content-Type: the JSON envelope is recognised by its first byte
    r = _put(base, manifest_bytes(sealed_versions[3]), token[0], "application/octet-stream")
    assert r.status_code == 201, r.text
    assert _inodes(root / ".versions/site/3") == old
    assert uploads_empty(root)


def test_manifest_only_publish_refuses_changed_files_and_the_usual_attacks(
    root: Path, serve: Callable[..., str], token: tuple[str, Path],
    sealed_versions: dict[int, Path], publisher_key: SigningKey, tmp_path: Path,
) -> None:
    base = serve(root, healing=False)
    before = manifest_bytes(root / "site")
    # a manifest for other content, properly signed: the files must be uploaded
    changed = tmp_path / "changed"
    shutil.copytree(EXAMPLE, changed)
    (changed / "index.html").write_text("<p>other content</p>\n")
    seal_tree(changed, tmp_path / "sealed", keys=[publisher_key], name="site", version=5)
    r = _put(base, manifest_bytes(tmp_path / "sealed"), token[0])
    assert r.status_code == 409, r.text
    assert r.json()["error"]["type"] == "FilesDifferError"
    assert "files differ from the served version" in r.json()["error"]["message"]
    assert "upload the whole package" in r.json()["error"]["message"]
    # same checks as a full publish: token, version, signer, expiry
    v2 = manifest_bytes(sealed_versions[2])
    assert _put(base, v2, "wrong-token").status_code == 401
    r = _put(base, manifest_bytes(sealed_versions[1]), token[0])
    assert r.status_code == 409 and r.json()["error"]["type"] == "RollbackError"
    _, other = resign_manifest(v2, [SigningKey.generate()], version=7,
                               require_own_signature=False)
    assert _put(base, other, token[0]).status_code == 403
    expired = tmp_path / "expired"
    seal_tree(EXAMPLE, expired, keys=[publisher_key], name="site", version=8,
              expires=timedelta(seconds=-60))
    r = _put(base, manifest_bytes(expired), token[0])
    assert r.status_code == 403 and "expired" in r.json()["error"]["message"]
    r = _put(base, b'{"signed": ' * 100 + b"1" + b"}" * 100, token[0])
    assert r.status_code == 400
    assert manifest_bytes(root / "site") == before  # nothing was installed
    assert sorted(os.listdir(root / ".versions/site")) == ["1"]
    assert uploads_empty(root)


def test_publish_client_sends_only_a_manifest_file(
    root: Path, serve: Callable[..., str], token: tuple[str, Path],
    sealed_versions: dict[int, Path], publisher_key: SigningKey, tmp_path: Path,
) -> None:
    base = serve(root, healing=False)
    data = manifest_bytes(sealed_versions[1])
    _, fresh = resign_manifest(data, [publisher_key], version=4, expires=timedelta(days=60))
    path = tmp_path / MANIFEST_NAME
    path.write_bytes(fresh)
    result = publish_package(path, base, token[0], retries=0)
    assert result.status == "published" and result.version == 4
    assert result.bytes == len(fresh)  # the manifest alone went over the wire
    pkgs = httpx.get(f"{base}/packages").json()["packages"]
    assert pkgs[0]["version"] == 4 and pkgs[0]["versions"] == [1, 4]
    assert pkgs[0]["expiry_state"] == "ok" and pkgs[0]["seconds_left"] > 59 * 86400
    # a manifest whose files are not the served ones: refused as input (exit 2)
    changed = tmp_path / "changed"
    shutil.copytree(EXAMPLE, changed)
    (changed / "extra.txt").write_text("new file\n")
    seal_tree(changed, tmp_path / "sealed", keys=[publisher_key], name="site", version=9)
    with pytest.raises(PublishRefusedError, match="upload the whole package"):
        publish_package(tmp_path / "sealed" / MANIFEST_NAME, base, token[0], retries=0)
    ledger = httpx.get(f"{base}/").text
    assert "manifest_only=True" in ledger
    assert json.loads(fresh)["signed"]["version"] == 4
