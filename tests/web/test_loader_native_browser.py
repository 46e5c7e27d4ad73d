"""Issue 12 item 5 in real Chromium: the loader detects native signature-based
SRI and defers to the browser where it is enforced; where it is not, it
fetches and verifies the signature headers itself before running anything.

Measured in Debian Chromium 156 (this module's first test pins it): a Blob
URL or data: URL script carrying ``integrity="ed25519-<key>"`` and no
signature headers is blocked ("The resource at … was not signed, but
integrity checks are required"), while the same script with a matching
``sha256-`` token runs. Chromium 156 has no switch that turns the check off,
so a browser *without* support is simulated by an init script that makes
the page's script elements drop ``ed25519-`` tokens, exactly what a browser
that does not know the algorithm does (an unknown token is skipped and,
with none left, the script runs unverified). The simulation is real: a
tampered script behind a native ``ed25519-`` tag runs there.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from typing import Any

import pytest

from auraseal._time import utcnow
from auraseal.httpsig import digest_field, sign_digest
from auraseal.signing import SigningKey

from .conftest import Origin
from .webpages import blank_page, call, events, ran, script, serve_loader, sri

pytestmark = pytest.mark.browser

GOOD = script("good")
EVIL = script("evil")
EXPOSE = {"Access-Control-Expose-Headers": "Unencoded-Digest, Signature-Input, Signature"}

#: A browser without signature-based SRI: ed25519- tokens are unknown, so skipped.
WITHOUT_NATIVE = """(() => {
  const strip = (v) => String(v).split(/[\\t\\n\\v\\f\\r ]+/)
    .filter((t) => t && !t.startsWith("ed25519-")).join(" ");
  const d = Object.getOwnPropertyDescriptor(HTMLScriptElement.prototype, "integrity");
  Object.defineProperty(HTMLScriptElement.prototype, "integrity", {
    configurable: true,
    get() { return d.get.call(this); },
    set(v) { d.set.call(this, strip(v)); },
  });
  const setAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function (name, value) {
    if (this instanceof HTMLScriptElement && String(name).toLowerCase() === "integrity") {
      value = strip(value);
    }
    return setAttribute.call(this, name, value);
  };
})();"""

INITIATOR = "(u) => performance.getEntriesByName(u).map((e) => e.initiatorType)"


def b64key(key: SigningKey) -> str:
    return base64.b64encode(key.public.raw).decode()


def headers(data: bytes, key: SigningKey, expired: bool = False) -> dict[str, str]:
    now = utcnow()
    created, expires = ((now - timedelta(days=40), now - timedelta(days=10)) if expired
                        else (now, now + timedelta(days=30)))
    sigs = sign_digest(sri(data), [key], created, expires)
    assert sigs is not None
    return {**dict(sigs.headers()), **EXPOSE}


def put_cases(cdn: Origin, key: SigningKey, other: SigningKey) -> dict[str, str]:
    """The copies every test loads: good; tampered (body changed, its own
    Unencoded-Digest, the signature dropped); stale (body changed, its own
    digest, the old signature: Chromium 156's network layer already refuses
    such a response, even to fetch()); signed by another key; expired."""
    evil_digest = digest_field("sha512", hashlib.sha512(EVIL).digest())
    stale = headers(GOOD, key)
    stale["Unencoded-Digest"] = evil_digest
    return {
        "good": cdn.put("/good.js", GOOD, **headers(GOOD, key)),
        "tampered": cdn.put("/tampered.js", EVIL, **{"Unencoded-Digest": evil_digest},
                            **EXPOSE),
        "stale": cdn.put("/stale.js", EVIL, **stale),
        "other-key": cdn.put("/other.js", script("other"), **headers(script("other"), other)),
        "expired": cdn.put("/expired.js", script("expired"),
                           **headers(script("expired"), key, expired=True)),
    }


def open_page(page: Any, site: Origin, head: str = "") -> None:
    serve_loader(site)
    page.goto(site.put("/index.html", blank_page(head=head)))


def initiators(page: Any, url: str) -> list[str]:
    return list(page.evaluate(INITIATOR, url))


def detect(page: Any) -> bool:
    return bool(page.evaluate(
        "async () => (await import('/auraseal-loader.js')).detectNativeSignatureSRI()"))


def test_probe_scripts_behave_as_measured_in_chromium(page: Any, site: Origin) -> None:
    """The facts detection rests on: blob: and data: scripts with an ed25519
    token and no headers are blocked, with a matching sha256 token they run."""
    open_page(page, site)
    got = page.evaluate("""async () => {
      const code = 'window.__n = (window.__n || 0) + 1;';
      const h = 'sha256-' + btoa(String.fromCharCode(...new Uint8Array(
        await crypto.subtle.digest('SHA-256', new TextEncoder().encode(code)))));
      const out = {};
      for (const kind of ['blob', 'data']) {
        for (const [name, integ] of [['hash', h], ['ed25519', 'ed25519-' + 'A'.repeat(43) + '=']]) {
          window.__n = 0;
          const el = document.createElement('script');
          el.crossOrigin = 'anonymous';
          el.integrity = integ;
          el.src = kind === 'blob'
            ? URL.createObjectURL(new Blob([code], {type: 'text/javascript'}))
            : 'data:text/javascript,' + encodeURIComponent(code);
          const r = await new Promise((res) => {
            el.onload = () => res('load'); el.onerror = () => res('error');
            document.head.appendChild(el);
          });
          out[kind + ' ' + name] = [r, window.__n];
        }
      }
      return out;
    }""")
    assert got == {"blob hash": ["load", 1], "blob ed25519": ["error", 0],
                   "data hash": ["load", 1], "data ed25519": ["error", 0]}


def test_loader_defers_to_native_signature_sri(page: Any, site: Origin, cdn: Origin) -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    urls = put_cases(cdn, key, other)
    k = f"ed25519-{b64key(key)}"
    open_page(page, site)
    assert detect(page) is True
    good = call(page, "loadScript", urls["good"], k, {})
    assert good["ok"] is True, good
    # the browser fetched it as a <script> with the integrity attribute; the
    # loader did not fetch it itself
    assert initiators(page, urls["good"]) == ["script"]
    el = page.evaluate("""(u) => { const e = document.querySelector('script[data-auraseal-native]');
      return e && [e.src, e.getAttribute('integrity'), e.crossOrigin]; }""", urls["good"])
    assert el == [urls["good"], k, "anonymous"]
    verified = events(page, "verified")
    assert [(e["url"], e["native"], e["algorithm"]) for e in verified] == [
        (urls["good"], True, "ed25519")]
    for case in ("tampered", "stale", "other-key", "expired"):
        res = call(page, "loadScript", urls[case], k, {})
        assert res["ok"] is False and res["name"] == "BlockedError", (case, res)
        assert res["attempts"][0]["reason"] == "native-error", (case, res)
        assert initiators(page, urls[case]) == ["script"], case
    assert ran(page) == ["good"]
    assert all(cdn.hits[p] == 1 for p in ("/good.js", "/tampered.js", "/stale.js",
                                          "/other.js", "/expired.js")), cdn.hits
    # a native failure falls back to the next URL, natively too
    res = call(page, "loadScript", urls["tampered"] + "?again", k,
               {"fallbackUrls": [urls["good"] + "?again"]})
    assert res["ok"] is True and res["url"] == urls["good"] + "?again"
    assert ran(page) == ["good", "good"]


def test_loader_forced_to_verify_itself_with_native_support(
    page: Any, site: Origin, cdn: Origin
) -> None:
    """`nativeSignatures: "loader"` (or data-auraseal-signatures="loader" on the
    loader's tag) keeps the loader's own WebCrypto check."""
    key, other = SigningKey.generate(), SigningKey.generate()
    urls = put_cases(cdn, key, other)
    k = f"ed25519-{b64key(key)}"
    open_page(page, site, head='<script type="module" src="/auraseal-loader.js" '
              'data-auraseal-loader data-auraseal-signatures="loader"></script>')
    assert call(page, "loadScript", urls["good"], k, {})["ok"] is True
    assert initiators(page, urls["good"]) == ["fetch"]
    res = call(page, "loadScript", urls["other-key"], k, {"nativeSignatures": "loader"})
    assert res["ok"] is False and "other key" in res["attempts"][0]["message"]


def test_loader_without_native_signature_sri_verifies_itself(
    page: Any, site: Origin, cdn: Origin
) -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    urls = put_cases(cdn, key, other)
    k = f"ed25519-{b64key(key)}"
    page.add_init_script(WITHOUT_NATIVE)
    open_page(page, site)
    assert detect(page) is False
    good = call(page, "loadScript", urls["good"], k, {})
    assert good["ok"] is True, good
    assert initiators(page, urls["good"]) == ["fetch"]  # fetched and verified here
    assert [e["native"] for e in events(page, "verified")] == [False]
    # the loader's own check (Chromium's fetch() delivers these responses)
    for case, why in {"tampered": "no signatures", "other-key": "other key"}.items():
        res = call(page, "loadScript", urls[case], k, {})
        assert res["ok"] is False and res["name"] == "BlockedError", (case, res)
        assert res["attempts"][0]["reason"] == "mismatch", (case, res)
        assert why in res["attempts"][0]["message"], (case, res)
    # Chromium 156's network layer refuses these even to fetch(): still blocked
    for case in ("stale", "expired"):
        res = call(page, "loadScript", urls[case], k, {})
        assert res["ok"] is False and res["attempts"][0]["reason"] == "network", (case, res)
    assert ran(page) == ["good"]
    # the hazard the loader avoids: in this browser a native ed25519-only tag
    # runs the tampered copy
    page.evaluate("""([u, k]) => new Promise((res) => { const e = document.createElement('script');
      e.crossOrigin = 'anonymous'; e.integrity = k; e.onload = e.onerror = res;
      e.src = u + '?native'; document.head.appendChild(e); })""", [urls["tampered"], k])
    assert ran(page) == ["good", "evil"]


def test_signature_only_tag_without_native_support_is_reported_unverified(
    page: Any, site: Origin, cdn: Origin
) -> None:
    key = SigningKey.generate()
    url = cdn.put("/good.js", GOOD, **headers(GOOD, key))
    tag = (f'<script src="{url}" integrity="ed25519-{b64key(key)}" crossorigin="anonymous">'
           '</script><script type="module" src="/auraseal-loader.js"></script>')
    serve_loader(site)
    page_url = site.put("/tags.html", blank_page(body=tag))

    def unverified(p: Any) -> list[dict[str, Any]]:
        p.evaluate("""async () => {
          await (await import('/auraseal-loader.js')).detectNativeSignatureSRI();
          await new Promise((r) => setTimeout(r, 50));
        }""")
        return events(p, "unverified")

    page.goto(page_url)
    assert unverified(page) == []  # Chromium checked the signature itself
    ctx = page.context.browser.new_context()
    try:
        without = ctx.new_page()
        without.add_init_script(WITHOUT_NATIVE)
        without.goto(page_url)
        got = unverified(without)
        assert [(e["url"], e["reason"]) for e in got] == [(url, "no-native-signature-sri")]
    finally:
        ctx.close()


def test_loader_without_native_support_refuses_signature_expired_by_its_clock(
    browser: Any, site: Origin, cdn: Origin
) -> None:
    """The loader's own expiry check: the page's clock is 60 days ahead, so the
    good copy's signature (valid for 30 days) has expired for the loader, while
    Chromium's network layer (real clock) still delivers the response."""
    key, other = SigningKey.generate(), SigningKey.generate()
    urls = put_cases(cdn, key, other)
    ctx = browser.new_context()
    try:
        pg = ctx.new_page()
        pg.add_init_script(WITHOUT_NATIVE)
        pg.add_init_script("""(() => { const now = Date.now;
          Date.now = () => now() + 60 * 86400 * 1000; })();""")
        open_page(pg, site)
        res = call(pg, "loadScript", urls["good"], f"ed25519-{b64key(key)}", {})
        assert res["ok"] is False and res["attempts"][0]["reason"] == "mismatch", res
        assert "expired" in res["attempts"][0]["message"].split("/good.js", 1)[1]
        assert ran(pg) == []
    finally:
        ctx.close()
