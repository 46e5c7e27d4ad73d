"""`auraseal publish` uploads the roots a package carries (root/<N>.json)
before its manifest, to the real server; a draft or a conflicting root
publishes nothing (exit 3)."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _servers import run_server

from auraseal.cli import main as cli_main
from auraseal.client import HttpConfig, fetch_package
from auraseal.client.roots import RootTrust
from auraseal.manifest import MANIFEST_NAME
from auraseal.root import Root
from auraseal.server.freshness import install_root
from auraseal.server.publish import new_token
from auraseal.signing import SigningKey

from .helpers import publish_root, root_v1, rotate, write_package

FAST = HttpConfig(timeout=5.0, trust_env=False)


@pytest.fixture
def token_file(tmp_path: Path) -> tuple[Path, Path]:
    """(the server's token list, the publisher's token file)."""
    tok, line = new_token()
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(line + "  release\n")
    f = tmp_path / "token"
    f.write_text(tok + "\n")
    return tokens, f


@pytest.fixture
def chain(keys: dict[str, SigningKey]) -> tuple[Root, bytes, Root, bytes]:
    """Root v1 (k1) and its rotation v2 (k2, signed by k1 and k2)."""
    r1, d1 = root_v1([keys["k1"]], 1)
    r2, d2 = rotate(r1, [keys["k2"]], 1, [keys["k1"], keys["k2"]])
    return r1, d1, r2, d2


@pytest.fixture
def server(
    tmp_path: Path, keys: dict[str, SigningKey], token_file: tuple[Path, Path]
) -> Iterator[tuple[Path, str]]:
    store = tmp_path / "ROOT"
    store.mkdir()
    with run_server(store, healing=False, publish_token_file=token_file[0],
                    trusted_keys=(keys["k2"].public,)) as url:
        yield store, url


def _publish(source: Path, url: str, token: Path, capsys: pytest.CaptureFixture[str]
             ) -> tuple[int, dict[str, object]]:
    capsys.readouterr()
    rc = cli_main(["publish", str(source), url, "--token-file", str(token), "--json"])
    out = capsys.readouterr().out
    return rc, (json.loads(out) if rc == 0 else {})


def test_publish_uploads_the_roots_the_package_carries(
    tmp_path: Path, keys: dict[str, SigningKey], server: tuple[Path, str],
    token_file: tuple[Path, Path], chain: tuple[Root, bytes, Root, bytes],
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, url = server
    _r1, d1, r2, d2 = chain
    pkg = tmp_path / "pkg"
    publish_root(pkg, d1, 1)
    publish_root(pkg, d2, 2)
    write_package(pkg, [keys["k2"]], version=1)  # signed by the key only root v2 names
    rc, doc = _publish(pkg, url, token_file[1], capsys)
    assert rc == 0
    assert doc["roots"] == [{"version": 1, "status": "uploaded"},
                            {"version": 2, "status": "uploaded"}]
    base = f"{url}/packages/site/files/"
    assert httpx.get(base + "root/1.json").content == d1
    assert httpx.get(base + "root/2.json").content == d2
    # the version holds exactly what its manifest lists; the roots live beside it
    assert not (store / ".versions" / "site" / "1" / "root").exists()
    # a client anchored at root v1 walks to v2 and accepts the k2-signed manifest
    got = fetch_package(f"{url}/packages/site", tmp_path / "out", cache_dir=tmp_path / "c",
                        http=FAST, root=RootTrust(d1, "--root", tmp_path / "c"))
    assert got.version == 1
    # publishing the same package again: nothing to do
    rc, doc = _publish(pkg, url, token_file[1], capsys)
    assert rc == 0 and doc["status"] == "unchanged"
    assert doc["roots"] == [{"version": 1, "status": "unchanged"},
                            {"version": 2, "status": "unchanged"}]
    # a zip carries its roots under the same names: v2 of the package with root v3
    _r3, d3 = rotate(r2, [keys["k2"]], 1, [keys["k2"]])
    publish_root(pkg, d3, 3)
    write_package(pkg, [keys["k2"]], version=2)
    zpath = tmp_path / "pkg.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(pkg.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(pkg).as_posix())
    rc, doc = _publish(zpath, url, token_file[1], capsys)
    assert rc == 0 and doc["status"] == "published" and doc["version"] == 2
    assert [r["status"] for r in doc["roots"]] == ["unchanged", "unchanged", "uploaded"]  # type: ignore[attr-defined]
    assert httpx.get(base + "root/3.json").content == d3


def test_publish_refuses_a_draft_root_and_publishes_nothing(
    tmp_path: Path, keys: dict[str, SigningKey], server: tuple[Path, str],
    token_file: tuple[Path, Path], chain: tuple[Root, bytes, Root, bytes],
    capsys: pytest.CaptureFixture[str],
) -> None:
    _store, url = server
    r1, d1, _r2, _d2 = chain
    _r2x, d2x = rotate(r1, [keys["k2"]], 1, [keys["k2"]])  # v1's key did not sign: a draft
    pkg = tmp_path / "pkg"
    publish_root(pkg, d1, 1)
    publish_root(pkg, d2x, 2)
    write_package(pkg, [keys["k2"]], version=1)
    assert cli_main(["publish", str(pkg), url, "--token-file", str(token_file[1])]) == 3
    assert "root/2.json" in capsys.readouterr().err
    base = f"{url}/packages/site"
    assert httpx.get(f"{base}/files/root/1.json").status_code == 404  # not even root v1
    assert httpx.get(f"{base}/{MANIFEST_NAME}").status_code == 404


def test_publish_refuses_another_root_at_the_same_version(
    tmp_path: Path, keys: dict[str, SigningKey], server: tuple[Path, str],
    token_file: tuple[Path, Path], chain: tuple[Root, bytes, Root, bytes],
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, url = server
    _r1, d1, _r2, _d2 = chain
    install_root(store, d1, "site")
    _other, d1x = root_v1([keys["k2"]], 1)  # a different root v1 (a fork)
    pkg = tmp_path / "pkg"
    publish_root(pkg, d1x, 1)
    write_package(pkg, [keys["k2"]], version=1)
    assert cli_main(["publish", str(pkg), url, "--token-file", str(token_file[1])]) == 3
    assert "another root v1" in capsys.readouterr().err
    base = f"{url}/packages/site"
    assert httpx.get(f"{base}/files/root/1.json").status_code in (404, 200)
    assert (store / ".freshness" / "site" / "root" / "1.json").read_bytes() == d1
    assert httpx.get(f"{base}/{MANIFEST_NAME}").status_code == 404


def test_manifest_only_publish_uploads_the_root_beside_it(
    tmp_path: Path, keys: dict[str, SigningKey], server: tuple[Path, str],
    token_file: tuple[Path, Path], chain: tuple[Root, bytes, Root, bytes],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """After a rotation only the manifest is re-signed: the new root beside
    it goes up with it (the `resign` then `publish MANIFEST` workflow)."""
    _store, url = server
    _r1, d1, _r2, d2 = chain
    pkg = tmp_path / "pkg"
    publish_root(pkg, d1, 1)
    write_package(pkg, [keys["k2"]], version=1)
    assert _publish(pkg, url, token_file[1], capsys)[0] == 0
    publish_root(pkg, d2, 2)
    write_package(pkg, [keys["k2"]], version=2)  # same files, a new manifest
    rc, doc = _publish(pkg / MANIFEST_NAME, url, token_file[1], capsys)
    assert rc == 0 and doc["status"] == "published" and doc["version"] == 2
    assert doc["roots"] == [{"version": 1, "status": "unchanged"},
                            {"version": 2, "status": "uploaded"}]
    assert httpx.get(f"{url}/packages/site/files/root/2.json").content == d2
