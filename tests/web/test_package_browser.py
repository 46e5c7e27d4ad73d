"""loadPackage in real Chromium: Ed25519 envelopes verified with WebCrypto."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auraseal._time import utcnow
from auraseal.manifest import build_manifest, dump_signed
from auraseal.signing import SigningKey

from .conftest import PACKAGE, Origin, Served
from .webpages import blank_page, call, events, ran, script, serve_loader

pytestmark = pytest.mark.browser

A, B = script("a"), script("b")
CSS = b"#box { color: rgb(7, 8, 9); }\n"


@pytest.fixture(scope="module")
def keys() -> list[SigningKey]:
    return [SigningKey.generate() for _ in range(3)]


def publish(cdn: Origin, tmp_path: Path, signers: list[SigningKey], **kw: Any) -> str:
    src = tmp_path / "pkg"
    src.mkdir(exist_ok=True)
    (src / "a.js").write_bytes(A)
    (src / "b.js").write_bytes(B)
    (src / "style.css").write_bytes(CSS)
    manifest = build_manifest(src, name="demo", version=3, **kw)
    for name in ("a.js", "b.js", "style.css"):
        cdn.put(f"/pkg/files/{name}", (src / name).read_bytes())
    return cdn.put("/pkg/integrity-manifest.json", dump_signed(manifest, signers))


def b64key(k: SigningKey) -> str:
    return base64.b64encode(k.public.raw).decode()


def open_page(page: Any, site: Origin) -> None:
    serve_loader(site)
    page.goto(site.put("/index.html", blank_page(body='<p id="box">x</p>')))


def test_good_package_loads_in_order(page: Any, site: Origin, served: Served) -> None:
    """The real server's signed manifest, verified in the browser, files from the server."""
    page.goto(site.put("/index.html", blank_page(body='<p id="box">x</p>',
                                                 loader=served.loader_url)))
    pem = served.key.public.pem().decode()
    res = call(page, "loadPackage", served.manifest_url, {"trustedKeys": [pem], "base": "files/"})
    assert res["ok"] is True, res
    assert res["loaded"] == ["style.css", "a.js", "b.js"]
    assert res["keyids"] == [served.key.key_id]  # keyid computed in the browser = Python's
    assert ran(page) == ["a", "b"]
    color = "getComputedStyle(document.getElementById('box')).color"
    assert page.evaluate(color) == "rgb(7, 8, 9)"
    manifest_ev = [e for e in events(page, "verified") if e.get("kind") == "manifest"]
    assert manifest_ev[0]["name"] == PACKAGE and manifest_ev[0]["version"] == 1
    files_ev = [e["url"] for e in events(page, "verified") if e.get("kind") is None]
    assert files_ev == [served.url(p) for p in ("style.css", "a.js", "b.js")]


def test_bad_signature_refused(page: Any, site: Origin, cdn: Origin, tmp_path: Path,
                               keys: list[SigningKey]) -> None:
    url = publish(cdn, tmp_path, [keys[0]])
    env = json.loads(cdn.files["/pkg/integrity-manifest.json"])
    evil = script("EVIL")
    env["signed"]["files"]["b.js"]["integrity"] = (
        "sha512-" + base64.b64encode(hashlib.sha512(evil).digest()).decode()
    )
    cdn.put("/pkg/integrity-manifest.json", json.dumps(env))
    cdn.put("/pkg/files/b.js", evil)
    open_page(page, site)
    res = call(page, "loadPackage", url, {"trustedKeys": [b64key(keys[0])], "base": "files/"})
    assert res["ok"] is False and res["name"] == "BadSignatureError"
    assert ran(page) == [] and cdn.hits["/pkg/files/a.js"] == 0
    [bl] = events(page, "blocked")
    assert bl["reason"] == "bad-signature" and bl["url"] == url


def test_unknown_key_refused(page: Any, site: Origin, served: Served,
                             keys: list[SigningKey]) -> None:
    page.goto(site.put("/index.html", blank_page(loader=served.loader_url)))
    res = call(page, "loadPackage", served.manifest_url,
               {"trustedKeys": [b64key(keys[0])], "base": "files/"})
    assert res["ok"] is False and res["name"] == "UnknownKeyError"
    assert ran(page) == []
    [bl] = events(page, "blocked")
    assert bl["reason"] == "unknown-key"


def test_below_threshold_on_real_server(page: Any, site: Origin, served: Served,
                                        keys: list[SigningKey]) -> None:
    page.goto(site.put("/index.html", blank_page(loader=served.loader_url)))
    trusted = [b64key(served.key), b64key(keys[0])]
    res = call(page, "loadPackage", served.manifest_url,
               {"trustedKeys": trusted, "threshold": 2, "base": "files/"})
    assert res["ok"] is False and res["name"] == "ThresholdError"
    assert ran(page) == []


def test_below_threshold_refused(page: Any, site: Origin, cdn: Origin, tmp_path: Path,
                                 keys: list[SigningKey]) -> None:
    trusted = [keys[0].public.raw.hex(), b64key(keys[1]), b64key(keys[2])]
    url = publish(cdn, tmp_path, [keys[0]])
    # one trusted signature listed twice still counts once
    env = json.loads(cdn.files["/pkg/integrity-manifest.json"])
    env["signatures"].append(dict(env["signatures"][0]))
    cdn.put("/pkg/integrity-manifest.json", json.dumps(env))
    open_page(page, site)
    opts = {"trustedKeys": trusted, "threshold": 2, "base": "files/"}
    res = call(page, "loadPackage", url, opts)
    assert res["ok"] is False and res["name"] == "ThresholdError", res
    assert ran(page) == []
    # two distinct trusted signers meet the same threshold
    url = publish(cdn, tmp_path, [keys[0], keys[2]])
    res = call(page, "loadPackage", url, opts)
    assert res["ok"] is True and ran(page) == ["a", "b"]
    assert sorted(res["keyids"]) == sorted([keys[0].key_id, keys[2].key_id])


def test_expired_and_tampered_file(page: Any, site: Origin, cdn: Origin, tmp_path: Path,
                                   keys: list[SigningKey]) -> None:
    old = utcnow() - timedelta(days=10)
    url = publish(cdn, tmp_path, [keys[0]], now=old, expires=timedelta(days=1))
    open_page(page, site)
    opts = {"trustedKeys": [b64key(keys[0])], "base": "files/"}
    res = call(page, "loadPackage", url, opts)
    assert res["ok"] is False and res["name"] == "ExpiredError"
    # a valid manifest whose second script was tampered on the CDN: a runs, b never
    url = publish(cdn, tmp_path, [keys[0]])
    cdn.put("/pkg/files/b.js", script("EVIL"))
    res = call(page, "loadPackage", url, opts)
    assert res["ok"] is False and res["name"] == "BlockedError"
    assert ran(page) == ["a"]


def test_threshold_above_trusted_keys_is_a_config_error(page: Any, site: Origin, cdn: Origin,
                                                        tmp_path: Path,
                                                        keys: list[SigningKey]) -> None:
    url = publish(cdn, tmp_path, [keys[0]])
    open_page(page, site)
    res = call(page, "loadPackage", url, {"trustedKeys": [b64key(keys[0])], "threshold": 2})
    assert res["ok"] is False and res["name"] == "ConfigError"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=5),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def jcs_page(browser: Any, _origins: list[Origin]) -> Any:
    site = _origins[0]
    serve_loader(site)
    site.put("/jcs.html", blank_page())
    ctx = browser.new_context()
    pg = ctx.new_page()
    pg.goto(site.url("/jcs.html"))
    pg.evaluate("async () => { window.__m = await import('/auraseal-loader.js'); }")
    yield pg
    ctx.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_canonical_json_matches_rfc8785(jcs_page: Any, value: dict[str, Any]) -> None:
    text = json.dumps(value)  # st.text() has no lone surrogates: I-JSON, as RFC 8785 needs
    got = jcs_page.evaluate("(t) => window.__m.canonicalJSON(JSON.parse(t))", text)
    assert got.encode("utf-8") == rfc8785.dumps(value)


def test_mirror_serves_files_the_cdn_tampered(page: Any, site: Origin, cdn: Origin,
                                              served: Served) -> None:
    """Manifest and files on a tampered CDN; the real server as the mirror."""
    cdn.put("/pkg/integrity-manifest.json", httpx.get(served.manifest_url).content)
    for name, data in served.files.items():
        cdn.put(f"/pkg/files/{name}", data)
    cdn.put("/pkg/files/b.js", script("EVIL"))
    page.goto(site.put("/index.html", blank_page(loader=served.loader_url)))
    mirror_base = served.url("")
    res = call(page, "loadPackage", cdn.url("/pkg/integrity-manifest.json"), {
        "trustedKeys": [b64key(served.key)], "base": "files/", "mirrors": [mirror_base],
    })
    assert res["ok"] is True, res
    assert ran(page) == ["a", "b"]
    [fb] = events(page, "fallback")
    assert fb["url"] == cdn.url("/pkg/files/b.js") and fb["next"] == served.url("b.js")
