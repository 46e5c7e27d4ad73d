"""The loader in real headless Chromium: verification, fallbacks, events, blocking."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import PACKAGE_FILES, Origin, Served
from .webpages import auraseal, blank_page, call, events, ran, script, serve_loader, sri

pytestmark = pytest.mark.browser

GOOD = PACKAGE_FILES["a.js"]  # served by the real `auraseal serve` as a.js
EVIL = script("EVIL")


def open_page(page: Any, site: Origin, head: str = "", body: str = "") -> None:
    serve_loader(site)
    page.goto(site.put("/index.html", blank_page(head, body)))


def open_served(page: Any, site: Origin, served: Served, body: str = "") -> None:
    """A page on `site` importing the loader from the real server."""
    page.goto(site.put("/index.html", blank_page(body=body, loader=served.loader_url)))


def test_verified_script_runs_once(page: Any, site: Origin, cdn: Origin) -> None:
    url = cdn.put("/lib.js", GOOD)
    open_page(page, site)
    res = call(page, "loadScript", url, auraseal(GOOD), {})
    assert res == {"ok": True, "url": url, "loaded": None, "keyids": None}
    assert ran(page) == ["a"]
    [ev] = events(page, "verified")
    assert ev["url"] == url and ev["fallback"] is False and ev["algorithm"] == "sha512"
    assert events(page, "fallback") == [] and events(page, "blocked") == []
    assert cdn.hits["/lib.js"] == 1  # run from the verified bytes: no second fetch


def test_verified_script_from_real_server(page: Any, site: Origin, served: Served) -> None:
    open_served(page, site, served)
    url = served.url("a.js")
    res = call(page, "loadScript", url, auraseal(GOOD), {})
    assert res["ok"] is True and res["url"] == url
    assert ran(page) == ["a"]
    [ev] = events(page, "verified")
    assert ev["url"] == url and ev["fallback"] is False


def test_tampered_primary_runs_good_fallback(page: Any, site: Origin, cdn: Origin,
                                             served: Served) -> None:
    primary = cdn.put("/lib.js", EVIL)  # a CDN copy that was tampered with
    backup = served.url("a.js")  # the real server's copy
    open_served(page, site, served)
    res = call(page, "loadScript", primary, auraseal(GOOD), {"fallbackUrls": [backup]})
    assert res["ok"] is True and res["url"] == backup
    assert ran(page) == ["a"]
    [fb] = events(page, "fallback")
    assert fb["url"] == primary and fb["next"] == backup and fb["reason"] == "mismatch"
    [ok] = events(page, "verified")
    assert ok["url"] == backup and ok["fallback"] is True
    assert cdn.hits["/lib.js"] == 1


def test_both_tampered_nothing_runs_and_blocked(page: Any, site: Origin, cdn: Origin,
                                                mirror: Origin) -> None:
    primary = cdn.put("/lib.js", EVIL)
    backup = mirror.put("/lib.js", script("EVIL2"))
    open_page(page, site)
    res = call(page, "loadScript", primary, auraseal(GOOD), {"fallbackUrls": [backup]})
    assert cdn.hits["/lib.js"] == 1 and mirror.hits["/lib.js"] == 1
    assert res["ok"] is False and res["name"] == "BlockedError"
    assert [a["url"] for a in res["attempts"]] == [primary, backup]
    assert [a["reason"] for a in res["attempts"]] == ["mismatch", "mismatch"]
    assert ran(page) == []
    [bl] = events(page, "blocked")
    assert bl["url"] == primary and bl["reason"] == "mismatch" and len(bl["attempts"]) == 2
    assert events(page, "verified") == []
    assert page.evaluate("document.querySelectorAll('script[data-auraseal-verified]').length") == 0


def test_network_error_and_http_error_fall_back(page: Any, site: Origin, cdn: Origin,
                                                mirror: Origin) -> None:
    dead = "http://127.0.0.1:9/lib.js"  # discard port: connection refused
    missing = cdn.url("/missing.js")
    backup = mirror.put("/lib.js", GOOD)
    open_page(page, site)
    res = call(page, "loadScript", dead, auraseal(GOOD), {"fallbackUrls": [missing, backup]})
    assert res["ok"] is True and res["url"] == backup
    assert [e["reason"] for e in events(page, "fallback")] == ["network", "http-status"]
    assert ran(page) == ["a"]


def test_cdn_without_cors_is_a_failure_not_an_opaque_pass(page: Any, site: Origin,
                                                          _origins: list[Origin]) -> None:
    nocors = _origins[1]
    nocors.reset()
    nocors.cors = False
    try:
        url = nocors.put("/lib.js", GOOD)
        open_page(page, site)
        res = call(page, "loadScript", url, auraseal(GOOD), {})
        assert res["ok"] is False and res["attempts"][0]["reason"] == "network"
        assert ran(page) == []
    finally:
        nocors.cors = True


def test_dual_string_accepts_either_digest(page: Any, site: Origin, cdn: Origin) -> None:
    recovery = script("recovery")
    url = cdn.put("/lib.js", recovery)
    open_page(page, site)
    res = call(page, "loadScript", url, auraseal(GOOD, recovery), {})
    assert res["ok"] is True and ran(page) == ["recovery"]
    # and the same dual string refuses a third content
    url2 = cdn.put("/other.js", EVIL)
    res = call(page, "loadScript", url2, auraseal(GOOD, recovery), {})
    assert res["ok"] is False and ran(page) == ["recovery"]


def test_sri_strongest_algorithm_wins(page: Any, site: Origin, cdn: Origin) -> None:
    url = cdn.put("/lib.js", GOOD)
    open_page(page, site)
    # a correct sha256 token does not help when the (stronger) sha512 one is wrong
    res = call(page, "loadScript", url, f"{sri(GOOD, 'sha256')} {sri(EVIL)}", {})
    assert res["ok"] is False
    res = call(page, "loadScript", url, f"{sri(EVIL, 'sha256')} {sri(GOOD, 'sha384')} md5-xyz",
               {})
    assert res["ok"] is True and ran(page) == ["a"]


def test_malformed_integrity_is_refused(page: Any, site: Origin, cdn: Origin) -> None:
    url = cdn.put("/lib.js", GOOD)
    open_page(page, site)
    for bad in ["", "md5-AAAA", "auraseal-sha512-vHdv5RGg9H0VuqOXZMLgrNt4WJiQ7cQyR0=",
                "auraseal-sha1-AAAA", "sha512-not*base64"]:
        res = call(page, "loadScript", url, bad, {})
        assert res["ok"] is False and res["name"] == "MalformedIntegrityError", bad
    assert ran(page) == [] and cdn.hits["/lib.js"] == 0


def test_load_style_verified_and_tampered(page: Any, site: Origin, cdn: Origin) -> None:
    good_css = b"#box { color: rgb(1, 2, 3); }\n"
    evil_css = b"#box { color: rgb(255, 0, 0); }\n"
    url = cdn.put("/s.css", good_css)
    evil = cdn.put("/evil.css", evil_css)
    open_page(page, site, body='<p id="box">x</p>')
    color = "getComputedStyle(document.getElementById('box')).color"
    res = call(page, "loadStyle", evil, auraseal(good_css), {})
    assert res["ok"] is False and page.evaluate(color) == "rgb(0, 0, 0)"
    res = call(page, "loadStyle", url, auraseal(good_css), {})
    assert res["ok"] is True and page.evaluate(color) == "rgb(1, 2, 3)"
    # constructable stylesheets need nothing in style-src, even 'none'
    csp = f"default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'none'; " \
          f"connect-src {cdn.base}"
    page.goto(site.put("/strict.html", blank_page(body='<p id="box">x</p>'),
                       **{"Content-Security-Policy": csp}))
    res = call(page, "loadStyle", url, auraseal(good_css), {})
    assert res["ok"] is True and page.evaluate(color) == "rgb(1, 2, 3)"


def test_oversized_response_is_refused(page: Any, site: Origin, cdn: Origin) -> None:
    big = b"//" + b"x" * 5000 + b"\n"
    url = cdn.put("/big.js", big)
    open_page(page, site)
    res = call(page, "loadScript", url, auraseal(big), {"maxBytes": 1000})
    assert res["ok"] is False and res["attempts"][0]["reason"] == "too-large"
    # without a Content-Length the streamed body is cut off at the limit too...
    cdn.unsized.add("/big.js")
    res = call(page, "loadScript", url, auraseal(big), {"maxBytes": 1000})
    assert res["ok"] is False and res["attempts"][0]["reason"] == "too-large"
    # ...and read whole when it fits
    res = call(page, "loadScript", url, auraseal(big), {"maxBytes": 10000})
    assert res["ok"] is True


def test_strict_csp_blob_and_nonce(page: Any, site: Origin, cdn: Origin) -> None:
    url = cdn.put("/lib.js", GOOD)
    serve_loader(site)
    # script-src without blob: and without a nonce: verified bytes are refused to run
    csp = f"script-src 'self' 'unsafe-inline' {cdn.base}; connect-src {cdn.base}"
    page.goto(site.put("/strict.html", blank_page(),
                       **{"Content-Security-Policy": csp}))
    res = call(page, "loadScript", url, auraseal(GOOD), {})
    assert res["ok"] is False and res["name"] == "ExecutionError" and res["reason"] == "csp"
    assert ran(page) == []
    # with blob: allowed, the same call works
    csp2 = f"script-src 'self' 'unsafe-inline' blob:; connect-src {cdn.base}"
    page.goto(site.put("/blob.html", blank_page(), **{"Content-Security-Policy": csp2}))
    assert call(page, "loadScript", url, auraseal(GOOD), {})["ok"] is True
    assert ran(page) == ["a"]
    # a nonce CSP with no 'unsafe-inline' and no blob:: the nonce option runs it inline
    csp3 = f"script-src 'self' 'nonce-abc123'; connect-src {cdn.base}"
    html = blank_page().replace("<script>", '<script nonce="abc123">', 1)
    page.goto(site.put("/nonce.html", html, **{"Content-Security-Policy": csp3}))
    res = call(page, "loadScript", url, auraseal(GOOD), {"nonce": "abc123"})
    assert res["ok"] is True and ran(page) == ["a"]


def test_upgrade_inert_seed_style_tag(page: Any, site: Origin, cdn: Origin,
                                      mirror: Origin) -> None:
    primary = cdn.put("/d.js", EVIL)
    backup = mirror.put("/d.js", GOOD)
    open_page(page, site, body='<div id="slot"></div>')
    res = page.evaluate(
        """async ([src, integ, fb]) => {
          const m = await import("/auraseal-loader.js");
          const slot = document.getElementById("slot");
          // markup inserted with innerHTML: the browser never runs such a script
          slot.innerHTML = `<script src="${src}" integrity="${integ}"
                             data-fallback-url="${fb}"></` + `script>`;
          await m.upgrade(slot);
          return slot.firstElementChild.dataset.aurasealState;
        }""",
        [primary, auraseal(GOOD), backup],
    )
    assert res == "verified"
    assert ran(page) == ["a"]
    assert [e["reason"] for e in events(page, "fallback")] == ["mismatch"]


def test_module_script_and_seed_section4_element(page: Any, site: Origin, cdn: Origin,
                                                 mirror: Origin) -> None:
    mod = b'window.__ran.push("module:" + typeof import.meta.url);\n'
    url = cdn.put("/m.mjs", mod)
    open_page(page, site)
    res = call(page, "loadScript", url, auraseal(mod), {"type": "module"})
    assert res["ok"] is True and ran(page) == ["module:string"]
    # seed 000 section 4 builds a <script> with an auraseal- integrity by hand;
    # upgradeElement verifies it (with its fallback) instead of appending it raw
    primary = cdn.put("/core.js", EVIL)
    backup = mirror.put("/core.js", GOOD)
    state = page.evaluate(
        """async ([src, integ, fb]) => {
          const m = await import("/auraseal-loader.js");
          const s = document.createElement("script");
          s.src = src; s.integrity = integ; s.crossOrigin = "anonymous";
          s.dataset.fallbackUrl = fb;
          await m.upgradeElement(s);
          return s.dataset.aurasealState;
        }""",
        [primary, auraseal(GOOD), backup],
    )
    assert state == "verified" and ran(page) == ["module:string", "a"]
