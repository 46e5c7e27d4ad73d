"""Issue 12 in real Chromium: signature-based SRI and Integrity-Policy, natively
(no loader on the page), against the real `auraseal serve`.

Chromium (Debian 156) checks `integrity="ed25519-<key>"` against the
response's Unencoded-Digest and RFC 9421 Signature, which AuraSeal signs at
seal time and serves from the manifest. A tampered body, a body signed by
another key and an expired signature must each be blocked by the browser
itself; Integrity-Policy must block a script without integrity and its
report must reach the ledger.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from _servers import run_server
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from auraseal._time import utcnow
from auraseal.httpsig import sign_digest
from auraseal.manifest import MANIFEST_NAME, load_manifest, sign_http
from auraseal.sealing import seal_tree
from auraseal.signing import SigningKey
from auraseal.web.html import rewrite_html

from .conftest import CHROMIUM_FLAGS, Origin, chromium_path
from .webpages import blank_page, call, script, sri

pytestmark = pytest.mark.browser

GOOD = script("good")
BOTH = script("both")
PLAIN = script("plain")
RECORD = "<script>window.__ran = [];</script>"


def self_signed(d: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (Chromium delivers reports only over HTTPS)."""
    k = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(k.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(
            ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(k, hashes.SHA256())
    )
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(k.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return d / "cert.pem", d / "key.pem"


def b64key(key: SigningKey) -> str:
    return base64.b64encode(key.public.raw).decode()


def page(body: str) -> bytes:
    return f"<!DOCTYPE html><html><head>{RECORD}</head><body>{body}</body></html>".encode()


@dataclass
class Site:
    base: str
    key: SigningKey
    other: SigningKey
    jsonl: Path

    def url(self, pkg: str, rel: str) -> str:
        return f"{self.base}/packages/{pkg}/files/{rel}"


@pytest.fixture(scope="module")
def sigsite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("sigsite")
    key, other = SigningKey.generate(), SigningKey.generate()
    k = b64key(key)
    sig = f'integrity="ed25519-{k}" crossorigin="anonymous"'
    files = {
        "good.js": GOOD,
        "both.js": BOTH,
        "plain.js": PLAIN,
        "sig.html": page(f'<script src="good.js" {sig}></script>'),
        "both.html": page(
            f'<script src="both.js" integrity="{sri(BOTH)} ed25519-{k}"'
            ' crossorigin="anonymous"></script>'
        ),
        "other.html": page(
            f'<script src="/packages/other/files/good.js" {sig}></script>'
            f'<script src="good.js" {sig}></script>'
        ),
        # Integrity-Policy also blocks no-cors loads: every tag needs crossorigin
        "policy.html": page(
            f'<script src="good.js" {sig}></script>'
            '<script src="plain.js"></script>'
        ),
    }
    root = base / "root"
    root.mkdir()
    for name, pkg_files, signer in (("sig", files, key), ("other", {"good.js": GOOD}, other)):
        src = base / f"src-{name}"
        src.mkdir()
        for rel, data in pkg_files.items():
            (src / rel).write_bytes(data)
        seal_tree(src, root / name, keys=[signer], name=name)
    jsonl = base / "ledger.jsonl"
    with run_server(root, trusted_keys=(key.public, other.public), healing=False,
                    integrity_policy="enforce", ledger_jsonl=jsonl,
                    tls=self_signed(base)) as url:
        yield Site(url, key, other, jsonl)


@pytest.fixture(scope="module")
def reporting_browser(browser: Any) -> Iterator[Any]:
    """A second Chromium (from the session's Playwright: one sync Playwright per
    process) with reports delivered at once (--short-reporting-delay), trusting
    the test server's self-signed certificate."""
    b = browser.browser_type.launch(
        executable_path=chromium_path(),
        args=[*CHROMIUM_FLAGS, "--short-reporting-delay", "--ignore-certificate-errors"],
        headless=True,
    )
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def tab(reporting_browser: Any) -> Iterator[Any]:
    ctx = reporting_browser.new_context()
    pg = ctx.new_page()
    pg.set_default_timeout(15_000)
    msgs: list[str] = []
    pg.on("console", lambda m: msgs.append(m.text))
    pg.msgs = msgs
    try:
        yield pg
    finally:
        ctx.close()


def ran_after_load(tab: Any, url: str) -> list[str]:
    tab.goto(url)
    tab.wait_for_load_state("load")
    return list(tab.evaluate("window.__ran"))


def test_signature_only_page_runs_good_script(tab: Any, sigsite: Site) -> None:
    assert ran_after_load(tab, sigsite.url("sig", "sig.html")) == ["good"], tab.msgs


def test_hash_and_signature_page_runs_good_script(tab: Any, sigsite: Site) -> None:
    assert ran_after_load(tab, sigsite.url("sig", "both.html")) == ["both"]


def test_body_signed_by_other_key_is_blocked_natively(tab: Any, sigsite: Site) -> None:
    # the same bytes, correctly signed -- by a key the page did not name
    assert ran_after_load(tab, sigsite.url("sig", "other.html")) == ["good"]
    assert any("SRIMessageSignatureMismatch" in m or "signature" in m.lower()
               for m in tab.msgs), tab.msgs


def served_headers(sigsite: Site) -> dict[str, str]:
    r = httpx.get(sigsite.url("sig", "good.js"), headers={"accept-encoding": "identity"},
                  verify=False)
    assert r.status_code == 200
    return {h: r.headers[h] for h in ("Unencoded-Digest", "Signature-Input", "Signature")}


def mirror_page(site: Origin, cdn: Origin, key: SigningKey, body: bytes,
                headers: dict[str, str], extra_integrity: str = "") -> str:
    url = cdn.put("/lib.js", body, **headers)
    integ = f"{extra_integrity} ed25519-{b64key(key)}".strip()
    return site.put("/index.html", page(
        f'<script src="{url}" integrity="{integ}" crossorigin="anonymous"></script>'
        '<script>window.__ran.push("after");</script>'
    ))


def test_mirror_with_real_headers_runs(tab: Any, sigsite: Site, site: Origin,
                                       cdn: Origin) -> None:
    # control for the two tests below: a static mirror sending the served headers works
    url = mirror_page(site, cdn, sigsite.key, GOOD, served_headers(sigsite))
    assert ran_after_load(tab, url) == ["good", "after"]


def test_tampered_body_is_blocked_natively(tab: Any, sigsite: Site, site: Origin,
                                           cdn: Origin) -> None:
    evil = GOOD.replace(b"good", b"evil")
    url = mirror_page(site, cdn, sigsite.key, evil, served_headers(sigsite))
    assert ran_after_load(tab, url) == ["after"]


def test_expired_signature_is_blocked_natively(tab: Any, sigsite: Site, site: Origin,
                                               cdn: Origin, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "good.js").write_bytes(GOOD)
    m = seal_tree(tmp_path / "src", tmp_path / "pkg", keys=[sigsite.key], name="old")
    past = utcnow() - timedelta(days=40)
    old = sign_http(replace(m, created=past, expires=past + timedelta(days=30)),
                    [sigsite.key])
    sigs = old.files[0].http
    assert sigs is not None
    url = mirror_page(site, cdn, sigsite.key, GOOD, dict(sigs.headers()))
    assert ran_after_load(tab, url) == ["after"]
    # the same signature made now runs (only the expiry differs)
    fresh = load_manifest((tmp_path / "pkg" / MANIFEST_NAME).read_bytes()).files[0].http
    assert fresh is not None
    url = mirror_page(site, cdn, sigsite.key, GOOD, dict(fresh.headers()))
    assert ran_after_load(tab, url) == ["good", "after"]


def test_integrity_policy_blocks_script_without_integrity_and_reports(
    tab: Any, sigsite: Site
) -> None:
    page_url = sigsite.url("sig", "policy.html")
    assert ran_after_load(tab, page_url) == ["good"]  # plain.js (no integrity) blocked
    blocked = sigsite.url("sig", "plain.js")
    deadline = time.monotonic() + 20
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not found:
        if sigsite.jsonl.exists():
            for line in sigsite.jsonl.read_text().splitlines():
                rec = json.loads(line)
                if rec.get("entry_type") == "server.browser.integrity-violation":
                    found.append(rec)
        time.sleep(0.2)
    assert found, "no integrity-violation report reached the ledger"
    meta = found[0]["metadata"]
    assert meta["blocked"] == blocked and meta["page"] == page_url
    assert meta["destination"] == "script" and meta["report_only"] is False


def test_page_rewritten_in_signature_mode_runs_only_publisher_signed(
    tab: Any, sigsite: Site, site: Origin, tmp_path: Path
) -> None:
    good = sigsite.url("sig", "good.js")
    other = sigsite.url("other", "good.js")  # same bytes, signed by another key
    html = rewrite_html(
        f'<script src="{good}"></script><script src="{other}"></script>',
        root=tmp_path, mode="signature", sign_keys=[sigsite.key.public.raw],
    ).html
    assert html.count(f'integrity="ed25519-{b64key(sigsite.key)}"') == 2
    url = site.put("/rewritten.html", f"<!DOCTYPE html>{RECORD}{html}")
    assert ran_after_load(tab, url) == ["good"]  # the other key's copy is blocked


def test_loader_verifies_signature_headers_with_webcrypto(
    tab: Any, sigsite: Site, site: Origin, cdn: Origin
) -> None:
    """loadScript() with an ed25519- token checks the same headers itself (forced
    here: with native support it defers to the browser, test_loader_native_browser)."""
    tab.goto(site.put("/loader.html", blank_page(
        loader=f"{sigsite.base}/auraseal-loader.js",
        head=f'<script type="module" src="{sigsite.base}/auraseal-loader.js" '
             'crossorigin="anonymous" data-auraseal-loader data-auraseal-signatures="loader">'
             '</script>')))
    k = f"ed25519-{b64key(sigsite.key)}"
    good = sigsite.url("sig", "good.js")
    assert call(tab, "loadScript", good, k, {})["ok"] is True
    other = call(tab, "loadScript", sigsite.url("other", "good.js"), k, {})
    assert other["ok"] is False and other["name"] == "BlockedError"
    assert "other key" in other["attempts"][0]["message"]  # the loader's own check
    evil = cdn.put("/evil.js", GOOD.replace(b"good", b"evil"), **served_headers(sigsite),
                   **{"Access-Control-Expose-Headers": "Unencoded-Digest, Signature-Input, "
                      "Signature"})
    tampered = call(tab, "loadScript", evil, k, {})
    assert tampered["ok"] is False  # (Chromium's fetch already refuses the mismatch)
    # a hash token next to the key: both must hold, never the hash alone
    wrong_hash = call(tab, "loadScript", good, f"{sri(BOTH)} {k}", {})
    assert wrong_hash["ok"] is False
    hash_only_ok = call(tab, "loadScript", sigsite.url("other", "good.js"),
                        f"{sri(GOOD)} {k}", {})
    assert hash_only_ok["ok"] is False  # right hash, wrong signer: blocked
    assert list(tab.evaluate("window.__ran")) == ["good"]


def test_package_signed_by_two_keys_runs_under_either(
    tab: Any, sigsite: Site, site: Origin, cdn: Origin
) -> None:
    sigs = sign_digest(sri(GOOD), [sigsite.key, sigsite.other])  # seal --key A --key B
    assert sigs is not None and len(sigs.signatures) == 2
    url = cdn.put("/two.js", GOOD, **dict(sigs.headers()))
    tags = "".join(
        f'<script src="{url}?{i}" integrity="ed25519-{b64key(k)}" crossorigin="anonymous">'
        "</script>" for i, k in enumerate((sigsite.key, sigsite.other))
    )
    assert ran_after_load(tab, site.put("/two.html", page(tags))) == ["good", "good"]
