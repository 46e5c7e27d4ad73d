"""Roots and timestamp.json served by the real server and by nginx; the
server's TimestampKeeper keeps timestamps current across a new version."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from _servers import free_port, run_nginx, run_server

from auraseal.cli import main as cli_main
from auraseal.client import HttpConfig, fetch_package
from auraseal.client.roots import RootTrust, pinned_root
from auraseal.errors import RollbackError, ThresholdError
from auraseal.root import parse_root
from auraseal.server.freshness import FRESHNESS_DIR, TimestampKeeper, install_root
from auraseal.server.publish import new_token
from auraseal.signing import SigningKey

from .helpers import FILES, root_v1, rotate, write_package

FAST = HttpConfig(timeout=5.0, trust_env=False)


@pytest.fixture
def store(tmp_path: Path, keys: dict[str, SigningKey]) -> tuple[Path, bytes]:
    """ROOT with package 'site' signed by k2, roots v1 (k1) -> v2 (k2), timestamps by t1."""
    k1, k2, t1 = keys["k1"], keys["k2"], keys["t1"]
    root = tmp_path / "ROOT"
    write_package(root / "site", [k2], version=4)
    r1, d1 = root_v1([k1], 1, timestamp=[t1])
    _r2, d2 = rotate(r1, [k2], 1, [k1, k2])
    install_root(root, d1)
    install_root(root, d2, "site")
    assert TimestampKeeper(root, [t1]).refresh() == ["site"]
    return root, d1


def _fetch(url: str, tmp: Path, anchor: bytes | None, **kw: object) -> object:
    return fetch_package(url, tmp / "out", cache_dir=tmp / "cache", http=FAST,
                         root=RootTrust(anchor, "--root", tmp / "cache"), **kw)  # type: ignore[arg-type]


def test_serve_serves_roots_and_timestamp_and_keeps_it_fresh(
    store: tuple[Path, bytes], tmp_path: Path, keys: dict[str, SigningKey]
) -> None:
    root, d1 = store
    with run_server(root, healing=False) as url:
        base = f"{url}/packages/site/files/"
        assert httpx.get(base + "root/1.json").content == d1
        assert httpx.get(base + "root/3.json").status_code == 404
        assert httpx.get(base + "timestamp.json").headers["cache-control"] == "no-cache"
        assert httpx.get(f"{url}/packages/nosuch/files/root/1.json").status_code == 404
        report = _fetch(f"{url}/packages/site", tmp_path, d1)
        assert report.version == 4  # type: ignore[attr-defined]
        assert pinned_root(tmp_path / "cache", "site").version == 2  # type: ignore[union-attr]
    # a new version appears (a new package dir, adopted at the next start); until
    # the keeper runs, the timestamp still names v4, so v5 is refused as stale/mixed
    assert (root / "site").is_symlink()
    (root / "site").unlink()
    write_package(root / "site", [keys["k2"]], version=5, files={**FILES, "index.html": b"v5\n"})
    with run_server(root, healing=False) as url:
        with pytest.raises(RollbackError, match="timestamp names manifest v4"):
            _fetch(f"{url}/packages/site", tmp_path, d1, manifest_ttl=timedelta(0))
        assert TimestampKeeper(root, [keys["t1"]]).refresh() == ["site"]
        assert _fetch(f"{url}/packages/site", tmp_path, d1,
                      manifest_ttl=timedelta(0)).version == 5  # type: ignore[attr-defined]


def test_install_root_refuses_a_draft(
    tmp_path: Path, keys: dict[str, SigningKey]
) -> None:
    k1, k2, k3 = keys["k1"], keys["k2"], keys["k3"]
    r1, d1 = root_v1([k1, k2], 2)
    _r2, d2 = rotate(r1, [k3], 1, [k1, k3])  # one of v1's two keys
    install_root(tmp_path, d1, "site")
    with pytest.raises(ThresholdError):
        install_root(tmp_path, d2, "site")
    assert not (tmp_path / FRESHNESS_DIR / "site" / "root" / "2.json").exists()


@pytest.mark.nginx
def test_nginx_serves_roots_and_timestamp(
    store: tuple[Path, bytes], tmp_path: Path
) -> None:
    root, d1 = store
    with run_server(root, healing=False):
        pass  # adopts ROOT/site into .versions (as `auraseal serve` does at start)
    port = free_port()
    d = tmp_path / "nginx"
    d.mkdir()
    conf = d / "nginx.conf"
    assert cli_main(["nginx-conf", str(root), "--listen", f"127.0.0.1:{port}",
                     "--standalone", str(d), "-o", str(conf)]) == 0
    with run_nginx(conf, port) as url:
        base = f"{url}/packages/site/files/"
        assert httpx.get(base + "root/1.json").content == d1  # shared root
        assert httpx.get(base + "root/2.json").status_code == 200  # the package's own
        assert httpx.get(base + "root/3.json").status_code == 404
        assert _fetch(f"{url}/packages/site", tmp_path, d1).version == 4  # type: ignore[attr-defined]


def test_root_uploaded_to_server_with_token(
    store: tuple[Path, bytes], tmp_path: Path, keys: dict[str, SigningKey],
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, _d1 = store
    tok, line = new_token()
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(line + "  release\n")
    token_file = tmp_path / "token"
    token_file.write_text(tok + "\n")
    r2 = parse_root((root / FRESHNESS_DIR / "site" / "root" / "2.json").read_bytes())[0]
    _r3, d3 = rotate(r2, [keys["k3"]], 1, [keys["k2"], keys["k3"]])
    _r3x, d3x = rotate(r2, [keys["k3"]], 1, [keys["k3"]])  # a draft: v2's key did not sign
    f3, f3x = tmp_path / "3.json", tmp_path / "3x.json"
    f3.write_bytes(d3)
    f3x.write_bytes(d3x)
    with run_server(root, healing=False, publish_token_file=tokens) as url:
        base = ["root", "install", "--to", url, "--package", "site"]
        assert cli_main([*base, str(f3x), "--token-file", str(token_file)]) == 3
        wrong = tmp_path / "wrong"
        wrong.write_text("nope\n")
        assert cli_main([*base, str(f3), "--token-file", str(wrong)]) == 3
        assert httpx.get(f"{url}/packages/site/files/root/3.json").status_code == 404
        capsys.readouterr()
        assert cli_main([*base, str(f3), "--token-file", str(token_file), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["version"] == 3
        assert httpx.get(f"{url}/packages/site/files/root/3.json").content == d3
