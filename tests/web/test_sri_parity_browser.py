"""SRI parity (issue 12): for every integrity value in the table, the verdict
Chromium gives, recorded in tests/fixtures/web/sri_verdicts.json, is what real
Chromium gives now AND what our Python (auraseal.httpsig.browser_verdict) and
JS (auraseal-loader.js browserVerdict) readers give.

Each value is tried on four responses: the good body with valid signature
headers (`good`), another body with those headers (`tampered`: Chromium
blocks it on the Unencoded-Digest alone), another body without headers
(`plain_bad`: tells "verified" from "ran unchecked") and the good body
without headers (`nosig`).

Re-record (only when Chromium changes): AURASEAL_RECORD_SRI=1 pytest this file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from auraseal._time import utcnow
from auraseal.httpsig import FAIL, browser_verdict, sign_digest
from auraseal.integrity import parse_sri, sri_token
from auraseal.signing import SigningKey

from .conftest import Origin
from .webpages import serve_loader

pytestmark = pytest.mark.browser

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "web" / "sri_verdicts.json"
GOOD = b"window.__x = 1;\n"
BAD = b"window.__x = 2;\n"
BODIES = ("good", "tampered", "plain_bad", "nosig")

#: Templates: {sha256} etc. are the good body's digests, {ed} the signing key,
#: {other} a key that signed nothing; ...url are base64url, ...np unpadded.
VALUES = [
    "sha512-{sha512}",
    "sha256-{sha256}",
    "sha384-{sha384}",
    "sha512-{sha512url}",
    "sha256-{sha256url}",
    "sha256-{sha256np}",
    "sha512-{sha512np}",
    "sha512-{sha512}==",
    "SHA512-{sha512}",
    "sha512-",
    "sha512-!!!!",
    "sha512-AAAA",
    "sha512-{sha512}?foo=bar",
    "sha512-{sha512}?",
    "sha512-{sha512}?a?b",
    "md5-AAAA",
    "md5-AAAA sha512-{sha512}",
    "blake3-xyz sha256-{sha256}",
    "",
    "   ",
    "sha512-!!!! sha512-{sha512}",
    "sha512-{sha512} sha512-AAAA",
    "sha256-{sha256} sha512-AAAA",
    "sha256-AAAA sha512-{sha512}",
    "sha384-{sha384} sha256-AAAA",
    "sha256-{sha256}\tsha512-{sha512}",
    " \n sha512-{sha512} \r\n",
    "sha512-{sha512}\fsha256-AAAA",
    "sha512-{sha512}\vsha256-AAAA",
    "sha512-{sha512}\u00a0",
    "sha512-{sha512}\u00a0sha256-AAAA",
    "sha512-{sha512}\u3000sha256-AAAA",
    "sha512-{sha512}\u2003",
    "sha512-{sha512},sha256-{sha256}",
    "sha512-{sha512}-{sha512}",
    "auraseal-sha512-{sha512}",
    "ed25519-{ed}",
    "ed25519-{edurl}",
    "ed25519-{ednp}",
    "ed25519-{ed}==",
    "ed25519-{ed}?x",
    "ed25519-{other}",
    "ed25519-AAAA",
    "ed25519-AAAA sha512-{sha512}",
    "ed25519-{ed} sha512-{sha512}",
    "sha512-{sha512} ed25519-{ed}",
    "ed25519-{ed} sha512-AAAA",
    "ed25519-{ed} md5-AAAA",
    "ed25519-{other} ed25519-{ed}",
    "Ed25519-{ed}",
]


def expand(template: str, key: SigningKey, other: SigningKey) -> str:
    v: dict[str, str] = {}
    for alg in ("sha256", "sha384", "sha512"):
        d = hashlib.new(alg, GOOD).digest()
        v[alg] = base64.b64encode(d).decode()
        v[alg + "url"] = base64.urlsafe_b64encode(d).decode()
        v[alg + "np"] = v[alg].rstrip("=")
    v["ed"] = base64.b64encode(key.public.raw).decode()
    v["edurl"] = base64.urlsafe_b64encode(key.public.raw).decode()
    v["ednp"] = v["ed"].rstrip("=")
    v["other"] = base64.b64encode(other.public.raw).decode()
    out = template
    for name in sorted(v, key=len, reverse=True):
        out = out.replace("{" + name + "}", v[name])
    return out


def responses(key: SigningKey) -> dict[str, tuple[bytes, dict[str, str]]]:
    sigs = sign_digest(sri_token("sha512", hashlib.sha512(GOOD).digest()), [key])
    assert sigs is not None
    headers = dict(sigs.headers())
    return {"good": (GOOD, headers), "tampered": (BAD, headers),
            "plain_bad": (BAD, {}), "nosig": (GOOD, {})}


RUN_ALL = """async ([base, cases]) => {
  const m = await import(base + "/auraseal-loader.js");
  const out = [];
  for (const [integ, body, headers] of cases) {
    const native = await new Promise((res) => {
      const s = document.createElement("script");
      s.crossOrigin = "anonymous"; s.integrity = integ;
      s.onload = () => res("run"); s.onerror = () => res("blocked");
      s.src = base + "/" + body + ".js?" + Math.random();
      document.head.appendChild(s);
    });
    const bytes = new TextEncoder().encode(body === "good" || body === "nosig"
      ? "window.__x = 1;\\n" : "window.__x = 2;\\n");
    const js = await m.browserVerdict(integ, bytes, Object.keys(headers).length ? headers : null);
    out.push([native, js.verdict]);
  }
  return out;
}"""


def browser_word(verdict: str) -> str:
    return "blocked" if verdict == FAIL else "run"


def test_sri_table_matches_chromium_python_and_js(page: Any, cdn: Origin) -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    resp = responses(key)
    for name, (body, headers) in resp.items():
        cdn.put(f"/{name}.js", body, **headers)
    serve_loader(cdn)
    page.goto(cdn.put("/index.html", "<!DOCTYPE html><title>sri</title>"))
    cases = [(expand(t, key, other), b, resp[b][1]) for t in VALUES for b in BODIES]
    assert len(VALUES) >= 30
    got = page.evaluate(RUN_ALL, [cdn.base, cases])
    now = utcnow()
    rows = []
    for (integ, body, headers), (native, js), (template, _) in zip(
        cases, got, [(t, b) for t in VALUES for b in BODIES], strict=True
    ):
        py, why = browser_verdict(integ, resp[body][0], headers or None, now)
        rows.append({"integrity": template, "body": body, "chromium": native,
                     "python": py, "js": js, "why": why})
    if os.environ.get("AURASEAL_RECORD_SRI"):
        FIXTURE.write_text(json.dumps(
            [{"integrity": r["integrity"], "body": r["body"], "chromium": r["chromium"]}
             for r in rows], indent=1, ensure_ascii=False) + "\n")
    recorded = {(r["integrity"], r["body"]): r["chromium"]
                for r in json.loads(FIXTURE.read_text())}
    assert len(recorded) == len(rows)
    bad = []
    for r in rows:
        want = recorded[(r["integrity"], r["body"])]
        if not (r["chromium"] == want == browser_word(r["python"]) == browser_word(r["js"])
                and r["python"] == r["js"]):
            bad.append(r)
    assert not bad, json.dumps(bad, indent=1, ensure_ascii=False)
    # "unverified" exactly where Chromium ran a body it could not have verified
    for t in VALUES:
        by = {r["body"]: r for r in rows if r["integrity"] == t}
        unchecked = by["plain_bad"]["chromium"] == "run"
        assert (by["good"]["python"] == "unverified") == unchecked, t


SEPARATOR_CANDIDATES = [chr(c) for c in range(0x100)] + [
    "\u1680", "\u2000", "\u2003", "\u200a", "\u200b", "\u2028", "\u2029", "\u202f", "\u205f",
    "\u3000", "\ufeff",
]


def test_python_and_js_agree_on_every_separator(page: Any, cdn: Origin) -> None:
    """Every character between two tokens, and around one: the Python and JS
    readers split, skip and decode identically (the Chromium table above pins
    what the browser does for the interesting ones)."""
    serve_loader(cdn)
    page.goto(cdn.put("/index.html", "<!DOCTYPE html><title>sep</title>"))
    a = base64.b64encode(hashlib.sha256(GOOD).digest()).decode()
    b = base64.urlsafe_b64encode(hashlib.sha512(GOOD).digest()).decode().rstrip("=")
    texts = []
    for c in SEPARATOR_CANDIDATES:
        texts += [f"sha256-{a}{c}sha512-{b}", f"{c}sha256-{a}{c}", f"sha256-{a[:10]}{c}{a[10:]}",
                  f"ed25519-{a}?x{c}md5-y"]
    js = page.evaluate(
        """async ([base, texts]) => {
          const m = await import(base + "/auraseal-loader.js");
          const b64 = (u) => btoa(String.fromCharCode(...u));
          return texts.map((t) => {
            const r = m.parseSRI(t);
            return [r.tokens.map((k) => [k.algorithm, b64(k.digest)]),
                    r.keys.map(b64), r.unknown];
          });
        }""",
        [cdn.base, texts],
    )
    for text, (tokens, keys, unknown) in zip(texts, js, strict=True):
        py = parse_sri(text)
        assert [[t.algorithm, base64.b64encode(t.digest).decode()] for t in py.tokens] == tokens, (
            repr(text))
        assert [base64.b64encode(k).decode() for k in py.signatures] == keys, repr(text)
        assert list(py.unknown) == unknown, repr(text)
