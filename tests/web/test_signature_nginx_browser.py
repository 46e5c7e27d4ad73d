"""Issue 12 with Debian's nginx and the config `auraseal nginx-conf` generates:
the signature headers come from generated maps (signed once, at seal time), and
Chromium enforces them natively (no loader on the page)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from _servers import free_port, run_nginx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auraseal._time import utcnow
from auraseal.cli import main as cli_main
from auraseal.manifest import MANIFEST_NAME, dump_signed, load_manifest, sign_http
from auraseal.sealing import seal_tree
from auraseal.signing import SigningKey

from .webpages import script, sri

pytestmark = [pytest.mark.browser, pytest.mark.nginx]

GOOD = script("good")
BOTH = script("both")
RECORD = "<script>window.__ran = [];</script>"


def page(body: str) -> bytes:
    return f"<!DOCTYPE html><html><head>{RECORD}</head><body>{body}</body></html>".encode()


@pytest.fixture(scope="module")
def nginx_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, SigningKey]]:
    base = tmp_path_factory.mktemp("nginxsig")
    key, other = SigningKey.generate(), SigningKey.generate()
    k = base64.b64encode(key.public.raw).decode()
    sig = f'integrity="ed25519-{k}" crossorigin="anonymous"'
    files = {
        "good.js": GOOD, "both.js": BOTH, "tampered.js": GOOD, "plain.js": script("plain"),
        "sig.html": page(f'<script src="good.js" {sig}></script>'),
        "both.html": page(f'<script src="both.js" integrity="{sri(BOTH)} ed25519-{k}" '
                          'crossorigin="anonymous"></script>'),
        "tampered.html": page(f'<script src="tampered.js" {sig}></script>'
                              f'<script src="good.js" {sig}></script>'),
        "other.html": page(f'<script src="/packages/other/files/good.js" {sig}></script>'
                           f'<script src="/packages/old/files/good.js" {sig}></script>'
                           f'<script src="good.js" {sig}></script>'),
        "policy.html": page(f'<script src="good.js" {sig}></script>'
                            '<script src="plain.js" crossorigin="anonymous"></script>'),
    }
    root = base / "root"
    root.mkdir()
    for name, pkg, signer in (("sig", files, key), ("other", {"good.js": GOOD}, other),
                              ("old", {"good.js": GOOD}, key)):
        src = base / f"src-{name}"
        src.mkdir()
        for rel, data in pkg.items():
            (src / rel).write_bytes(data)
        seal_tree(src, root / name, keys=[signer], name=name)
    # "old": its signatures expired (a manifest signed 40 days ago for 30 days)
    mpath = root / "old" / MANIFEST_NAME
    m = load_manifest(mpath.read_bytes())
    past = utcnow() - timedelta(days=40)
    old = sign_http(replace(m, created=past, expires=past + timedelta(days=30)), [key])
    mpath.write_bytes(dump_signed(old, [key]))
    port = free_port()
    d = base / "nginx"
    d.mkdir()
    conf = d / "nginx.conf"
    assert cli_main(["nginx-conf", str(root), "--listen", f"127.0.0.1:{port}",
                     "--standalone", str(d), "--integrity-policy", "enforce",
                     "-o", str(conf)]) == 0
    # the static host's copy is tampered with after the config was generated
    tampered = root / "sig" / "tampered.js"
    tampered.write_bytes(GOOD.replace(b"good", b"evil"))
    with run_nginx(conf, port) as url:
        yield url, key


def ran_after_load(page: Any, url: str) -> list[str]:
    page.goto(url)
    page.wait_for_load_state("load")
    return list(page.evaluate("window.__ran"))


def test_nginx_headers_verify_independently(nginx_site: tuple[str, SigningKey]) -> None:
    url, key = nginx_site
    for method in ("GET", "HEAD"):
        r = httpx.request(method, f"{url}/packages/sig/files/good.js",
                          headers={"accept-encoding": "identity"})
        assert r.status_code == 200
        ud = r.headers["unencoded-digest"]
        assert ud == f"sha-512=:{base64.b64encode(hashlib.sha512(GOOD).digest()).decode()}:"
        label, _, params = r.headers["signature-input"].partition("=")
        sig = r.headers["signature"].removeprefix(f"{label}=:").removesuffix(":")
        msg = f'"unencoded-digest";sf: {ud}\n"@signature-params": {params}'.encode()
        Ed25519PublicKey.from_public_bytes(key.public.raw).verify(base64.b64decode(sig), msg)
    part = httpx.get(f"{url}/packages/sig/files/good.js.part.0")
    assert part.headers["repr-digest"].startswith("sha-256=:")
    assert "signature" not in part.headers
    html = httpx.get(f"{url}/packages/sig/files/sig.html")
    assert html.headers["integrity-policy"].startswith("blocked-destinations=(script")
    assert "integrity-policy" not in httpx.get(f"{url}/packages/sig/files/good.js").headers


def test_nginx_signature_only_and_both_run(page: Any, nginx_site: tuple[str, SigningKey]) -> None:
    url, _ = nginx_site
    assert ran_after_load(page, f"{url}/packages/sig/files/sig.html") == ["good"]
    assert ran_after_load(page, f"{url}/packages/sig/files/both.html") == ["both"]


def test_nginx_tampered_other_key_and_expired_are_blocked(
    page: Any, nginx_site: tuple[str, SigningKey]
) -> None:
    url, _ = nginx_site
    assert ran_after_load(page, f"{url}/packages/sig/files/tampered.html") == ["good"]
    # other.html: another key's copy and an expired signature are blocked
    assert ran_after_load(page, f"{url}/packages/sig/files/other.html") == ["good"]


def test_nginx_integrity_policy_blocks_script_without_integrity(
    page: Any, nginx_site: tuple[str, SigningKey]
) -> None:
    url, _ = nginx_site
    assert ran_after_load(page, f"{url}/packages/sig/files/policy.html") == ["good"]
