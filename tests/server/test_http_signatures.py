"""Issue 12, server side: HTTP signatures recorded at seal time, served by
`auraseal serve` (Unencoded-Digest, Signature-Input, Signature, Repr-Digest,
Content-Digest, Want-Repr-Digest), refreshed by resign, Integrity-Policy on
HTML and the /reports endpoint feeding the ledger."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auraseal.cli import main as cli_main
from auraseal.manifest import (
    MANIFEST_NAME,
    Manifest,
    load_manifest,
    resign_manifest,
    sign_http,
)
from auraseal.sealing import seal_tree
from auraseal.signing import SigningKey, TrustPolicy, load_public_key, load_signing_key

FILES = {
    "app.js": b'window.__ran = (window.__ran || []).concat(["app"]);\n' * 20,
    "index.html": b"<!doctype html><title>t</title><p>hello</p>\n" * 10,
    "blob.bin": bytes(range(256)) * 40,
}


def independent_verify(headers: httpx.Headers, body: bytes, public_raw: bytes) -> None:
    """Recompute the RFC 9421 signature base from the received headers and
    verify it with `cryptography` alone (not AuraSeal's code)."""
    ud = headers["unencoded-digest"]
    alg, _, b64 = ud.partition("=")
    assert alg == "sha-512"
    assert base64.b64decode(b64.strip(":")) == hashlib.sha512(body).digest()
    label, _, params = headers["signature-input"].partition("=")
    assert f'keyid="{base64.b64encode(public_raw).decode()}"' in params
    assert 'tag="ed25519-integrity"' in params
    m = re.fullmatch(rf"{re.escape(label)}=:([A-Za-z0-9+/=]+):", headers["signature"])
    assert m is not None
    base = f'"unencoded-digest";sf: {ud}\n"@signature-params": {params}'.encode()
    Ed25519PublicKey.from_public_bytes(public_raw).verify(base64.b64decode(m.group(1)), base)


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory, key: SigningKey) -> Path:
    src = tmp_path_factory.mktemp("src")
    for rel, data in FILES.items():
        (src / rel).write_bytes(data)
    out = tmp_path_factory.mktemp("pkg") / "web"
    seal_tree(src, out, keys=[key], name="web")
    return out


@pytest.fixture
def root(tmp_path: Path, sealed: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    shutil.copytree(sealed, r / "web")
    return r


def test_seal_records_http_signature_per_file(sealed: Path, key: SigningKey) -> None:
    m = load_manifest((sealed / MANIFEST_NAME).read_bytes())
    assert m.spec_version == 2
    for f in m.files:
        sigs = f.http
        assert sigs is not None
        digest = hashlib.sha512(FILES[f.path]).digest()
        assert sigs.unencoded_digest == f"sha-512=:{base64.b64encode(digest).decode()}:"
        [sig] = sigs.signatures
        assert assert_params(sig.params, key, m)
        headers = httpx.Headers(dict(sigs.headers()))
        independent_verify(headers, FILES[f.path], key.public.raw)


def assert_params(params: str, key: SigningKey, m: Manifest) -> bool:
    assert m.expires is not None
    created, expires = int(m.created.timestamp()), int(m.expires.timestamp())
    keyid = base64.b64encode(key.public.raw).decode()
    want = (f'("unencoded-digest";sf);keyid="{keyid}";tag="ed25519-integrity";'
            f"created={created};expires={expires}")
    assert params == want
    return True


def test_unsigned_seal_stays_spec_version_1(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.js").write_bytes(b"1;")
    m = seal_tree(tmp_path / "src", tmp_path / "out", name="x")
    assert m.spec_version == 1 and m.files[0].http is None


def test_served_file_carries_verifiable_signature(
    root: Path, serve: Callable[..., str], key: SigningKey
) -> None:
    base = serve(root, trusted_keys=(key.public,))
    for method in ("GET", "HEAD"):
        r = httpx.request(method, f"{base}/packages/web/files/app.js",
                          headers={"accept-encoding": "identity"})
        assert r.status_code == 200
        independent_verify(r.headers, FILES["app.js"], key.public.raw)
        want = "sha-512=:" + base64.b64encode(hashlib.sha512(FILES["app.js"]).digest()).decode()
        assert r.headers["repr-digest"] == want + ":"
    exposed = r.headers["access-control-expose-headers"]
    for h in ("Unencoded-Digest", "Signature-Input", "Signature", "Repr-Digest"):
        assert h in exposed


def test_repr_digest_on_range_parts_and_gzip(
    root: Path, serve: Callable[..., str], key: SigningKey
) -> None:
    base = serve(root, trusted_keys=(key.public,))
    m = load_manifest((root / "web" / MANIFEST_NAME).read_bytes())
    full = hashlib.sha512(FILES["blob.bin"]).digest()
    with httpx.Client(base_url=base) as c:
        r = c.get("/packages/web/files/blob.bin", headers={"range": "bytes=10-99"})
        assert r.status_code == 206
        assert r.headers["repr-digest"] == f"sha-512=:{base64.b64encode(full).decode()}:"
        assert "content-digest" not in r.headers
        entry = m.entry("blob.bin")
        assert entry.recovery is not None
        part = entry.recovery.parts[0]
        rp = c.get("/packages/web/files/blob.bin.part.0")
        assert rp.headers["repr-digest"] == "sha-256=:" + part.integrity[len("sha256-"):] + ":"
        assert "signature" not in rp.headers  # parts are not signed for browsers
        rp = c.head("/packages/web/files/blob.bin.part.0")
        assert rp.headers["repr-digest"].startswith("sha-256=:")
        # a content coding: Repr-Digest and Content-Digest name the gzip bytes,
        # Unencoded-Digest still names the file
    with httpx.Client(base_url=base) as c, c.stream(
        "GET", "/packages/web/files/app.js", headers={"accept-encoding": "gzip"}
    ) as rs:
        wire = b"".join(rs.iter_raw())
        sha = base64.b64encode(hashlib.sha256(wire).digest()).decode()
        assert rs.headers["content-digest"] == f"sha-256=:{sha}:"
        assert rs.headers["repr-digest"] == f"sha-256=:{sha}:"
        assert gzip.decompress(wire) == FILES["app.js"]
        independent_verify(rs.headers, FILES["app.js"], key.public.raw)


def test_want_repr_digest_is_honoured(
    root: Path, serve: Callable[..., str], key: SigningKey
) -> None:
    base = serve(root, trusted_keys=(key.public,))
    url = f"{base}/packages/web/files/blob.bin"
    r = httpx.get(url, headers={"want-repr-digest": "sha-256=9, sha-512=1"})
    # only sha-512 is recorded for originals: we send it rather than re-hash
    assert r.headers["repr-digest"].startswith("sha-512=:")
    r = httpx.get(url + ".part.0", headers={"want-repr-digest": "sha-256=3"})
    assert r.headers["repr-digest"].startswith("sha-256=:")


def test_resign_refreshes_http_signatures(sealed: Path, key: SigningKey) -> None:
    data = (sealed / MANIFEST_NAME).read_bytes()
    old = load_manifest(data)
    new, blob = resign_manifest(data, [key], expires=timedelta(days=90))
    again = load_manifest(blob)
    for f_old, f_new in zip(old.files, again.files, strict=True):
        assert f_old.http is not None and f_new.http is not None
        assert f_new.http.unencoded_digest == f_old.http.unencoded_digest
        assert f_new.http.signatures[0].params != f_old.http.signatures[0].params
        assert again.expires is not None
        assert f";expires={int(again.expires.timestamp())}" in f_new.http.signatures[0].params
        independent_verify(httpx.Headers(dict(f_new.http.headers())), FILES[f_new.path],
                           key.public.raw)
    assert new.version == old.version + 1


@pytest.mark.parametrize("mode", ["enforce", "report-only"])
def test_integrity_policy_on_html_only(
    root: Path, serve: Callable[..., str], key: SigningKey, mode: str
) -> None:
    base = serve(root, trusted_keys=(key.public,), integrity_policy=mode)
    name = "integrity-policy" if mode == "enforce" else "integrity-policy-report-only"
    with httpx.Client(base_url=base) as c:
        for _ in range(2):  # the second answer comes from the memoised fast path
            r = c.get("/packages/web/files/index.html")
            assert r.headers[name] == (
                "blocked-destinations=(script style), endpoints=(auraseal)"
            )
            assert r.headers["reporting-endpoints"] == 'auraseal="/reports"'
        assert name not in c.get("/packages/web/files/app.js").headers


def test_no_integrity_policy_by_default(root: Path, serve: Callable[..., str],
                                        key: SigningKey) -> None:
    base = serve(root, trusted_keys=(key.public,))
    r = httpx.get(f"{base}/packages/web/files/index.html")
    assert "integrity-policy" not in r.headers


REPORT = {
    "type": "integrity-violation",
    "age": 0,
    "url": "http://127.0.0.1/page.html",
    "user_agent": "Chromium",
    "body": {"documentURL": "http://127.0.0.1/page.html",
             "blockedURL": "http://127.0.0.1/evil.js", "destination": "script",
             "reportOnly": False},
}


def test_reports_become_ledger_events(root: Path, serve: Callable[..., str],
                                      key: SigningKey) -> None:
    base = serve(root, trusted_keys=(key.public,))
    with httpx.Client(base_url=base) as c:
        other = {**REPORT, "type": "csp-violation"}
        r = c.post("/reports", content=json.dumps([REPORT, other]),
                   headers={"content-type": "application/reports+json"})
        assert r.status_code == 200
        [eid] = r.json()["recorded"]
        e = c.get(f"/ledger/entries/{eid}").json()
        assert e["entry_type"] == "server.browser.integrity-violation"
        assert e["metadata"]["blocked"] == "http://127.0.0.1/evil.js"
        assert e["metadata"]["page"] == "http://127.0.0.1/page.html"
        assert e["metadata"]["destination"] == "script"


def test_reports_are_bounded_and_rate_limited(root: Path, serve: Callable[..., str],
                                              key: SigningKey) -> None:
    base = serve(root, trusted_keys=(key.public,))
    with httpx.Client(base_url=base) as c:
        big = json.dumps([REPORT] * 1000)
        assert len(big) > 64 << 10
        assert c.post("/reports", content=big).status_code == 413
        long = {**REPORT, "body": {**REPORT["body"], "blockedURL": "x" * 1000}}  # type: ignore[dict-item]
        r = c.post("/reports", content=json.dumps([long] * 30))
        assert len(r.json()["recorded"]) == 20  # at most 20 per POST
        eid = r.json()["recorded"][0]
        assert len(c.get(f"/ledger/entries/{eid}").json()["metadata"]["blocked"]) == 512
        got = 20
        for _ in range(6):
            r = c.post("/reports", content=json.dumps([REPORT] * 20))
            if r.status_code == 429:
                break
            got += len(r.json()["recorded"])
        assert got == 120 and r.status_code == 429


FIX = Path(__file__).resolve().parents[1] / "fixtures" / "manifest"


def test_format_fixture_v2_http_signatures() -> None:
    """docs/FORMAT.md §9 fixture: spec_version 2, each file's `http` verifies
    independently against the file's bytes, and signing again reproduces it."""
    data = (FIX / "native-v2-http.json").read_bytes()
    pub = load_public_key(FIX / "test-key.pub")
    m = load_manifest(data, policy=TrustPolicy([pub]))
    assert m.spec_version == 2
    for f in m.files:
        assert f.http is not None
        body = (FIX / "tree" / f.path).read_bytes()
        independent_verify(httpx.Headers(dict(f.http.headers())), body, pub.raw)
    v1 = load_manifest((FIX / "native.json").read_bytes())
    again = sign_http(v1, [load_signing_key(FIX / "test-key")])
    assert [f.extra["http"] for f in again.files] == [f.extra["http"] for f in m.files]


def test_check_cli_gives_browser_verdict_with_signature_headers(
    root: Path, serve: Callable[..., str], key: SigningKey, tmp_path: Path
) -> None:
    base = serve(root, trusted_keys=(key.public,))
    r = httpx.get(f"{base}/packages/web/files/app.js", headers={"accept-encoding": "identity"})
    hdr = tmp_path / "headers.txt"
    hdr.write_text("HTTP/1.1 200 OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in r.headers.items()))
    good, evil = tmp_path / "app.js", tmp_path / "evil.js"
    good.write_bytes(r.content)
    evil.write_bytes(r.content + b"//")
    ed = "ed25519-" + base64.b64encode(key.public.raw).decode()
    other = "ed25519-" + base64.b64encode(SigningKey.generate().public.raw).decode()
    sha = "sha512-" + base64.b64encode(hashlib.sha512(r.content).digest()).decode()
    wrong = "sha512-" + base64.b64encode(hashlib.sha512(b"x").digest()).decode()
    cases = [
        ([str(good), ed, "--signature-headers", str(hdr)], 0),
        ([str(good), f"{sha} {ed}", "--signature-headers", str(hdr)], 0),
        ([str(good), f"{wrong} {ed}", "--signature-headers", str(hdr)], 1),
        ([str(good), other, "--signature-headers", str(hdr)], 1),
        ([str(evil), ed, "--signature-headers", str(hdr)], 1),
        ([str(good), f"{sha} {ed}"], 1),  # never on the hash alone
        ([str(good), f"md5-x {sha}"], 0),  # unknown neighbour skipped
        ([str(good), "md5-x SHA512-y"], 2),  # nothing usable: we refuse
    ]
    for argv, want in cases:
        assert cli_main(["check", *argv]) == want, argv
