"""Static responses of the real server on loopback: content, ETag/304, Range/416,
HEAD, gzip, CORS, Cache-Control, the seed's part URL, versions, the archive."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auraseal.ledger import open_ledger
from auraseal.manifest import MANIFEST_NAME, load_manifest
from auraseal.sealing import open_package, scrub
from auraseal.server.static import RangeNotSatisfiable, parse_range


def test_list_packages(base_url: str, root: Path) -> None:
    r = httpx.get(f"{base_url}/packages")
    assert r.status_code == 200
    pkgs = r.json()["packages"]
    assert [p["name"] for p in pkgs] == ["site"]
    p = pkgs[0]
    assert p["version"] == 1
    on_disk = sum(f.stat().st_size for f in (root / "site").rglob("*") if f.is_file())
    assert p["size"] == on_disk
    assert p["files"] == 5


def test_files_and_parts_match_disk(base_url: str, root: Path) -> None:
    m = load_manifest((root / "site" / MANIFEST_NAME).read_bytes())
    with httpx.Client(base_url=base_url) as c:
        for f in m.files:
            r = c.get(f"/packages/site/files/{f.path}", headers={"accept-encoding": "identity"})
            assert r.status_code == 200, f.path
            assert r.content == (root / "site" / f.path).read_bytes()
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["access-control-allow-origin"] == "*"
            assert r.headers["cache-control"] == "public, no-cache"
            assert r.headers["etag"].startswith('"sha512-')
            assert f.recovery is not None
            for n in range(len(f.recovery.parts)):
                rel = f"{f.path}.part.{n}"
                rp = c.get(f"/packages/site/files/{rel}")
                assert rp.status_code == 200
                assert rp.content == (root / "site" / rel).read_bytes()
                assert rp.headers["content-type"] == "application/octet-stream"
                assert rp.headers["etag"].startswith('"sha256-')


def test_manifest_routes_are_the_same(base_url: str, root: Path) -> None:
    want = (root / "site" / MANIFEST_NAME).read_bytes()
    a = httpx.get(f"{base_url}/packages/site/integrity-manifest.json",
                  headers={"accept-encoding": "identity"})
    b = httpx.get(f"{base_url}/packages/site/files/integrity-manifest.json",
                  headers={"accept-encoding": "identity"})
    assert a.content == b.content == want
    assert a.headers["cache-control"] == "public, max-age=3600"
    assert a.headers["content-type"] == "application/json"
    assert a.headers["etag"] == b.headers["etag"]


def test_content_types(base_url: str) -> None:
    want = {
        "index.html": "text/html; charset=utf-8",
        "css/site.css": "text/css; charset=utf-8",
        "js/app.js": "application/javascript",
        "data/notes.txt": "text/plain; charset=utf-8",
        "data/blob.bin": "application/octet-stream",
    }
    for path, ctype in want.items():
        r = httpx.head(f"{base_url}/packages/site/files/{path}")
        assert r.headers["content-type"] == ctype, path


def test_etag_304_and_if_modified_since(base_url: str) -> None:
    url = f"{base_url}/packages/site/files/data/blob.bin"
    r = httpx.get(url)
    etag = r.headers["etag"]
    r2 = httpx.get(url, headers={"if-none-match": etag})
    assert r2.status_code == 304
    assert r2.content == b""
    assert r2.headers["etag"] == etag
    assert r2.headers["cache-control"] == "public, no-cache"
    assert httpx.get(url, headers={"if-none-match": f'"x", W/{etag}'}).status_code == 304
    assert httpx.get(url, headers={"if-none-match": "*"}).status_code == 304
    assert httpx.get(url, headers={"if-none-match": '"other"'}).status_code == 200
    lm = r.headers["last-modified"]
    assert httpx.get(url, headers={"if-modified-since": lm}).status_code == 304
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert httpx.get(url, headers={"if-modified-since": old}).status_code == 200


def test_etag_is_content_digest(base_url: str, root: Path) -> None:
    data = (root / "site" / "data" / "blob.bin").read_bytes()
    etag = httpx.get(f"{base_url}/packages/site/files/data/blob.bin").headers["etag"]
    assert etag == f'"sha512-{hashlib.sha512(data).hexdigest()[:40]}"'


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [("bytes=0-9", 0, 9), ("bytes=100-", 100, 39999), ("bytes=-500", 39500, 39999),
     ("bytes=39990-50000", 39990, 39999), ("bytes=-99999", 0, 39999), ("bytes=5-5", 5, 5)],
)
def test_ranges(base_url: str, root: Path, header: str, first: int, last: int) -> None:
    data = (root / "site" / "data" / "blob.bin").read_bytes()
    assert len(data) == 40000
    r = httpx.get(f"{base_url}/packages/site/files/data/blob.bin", headers={"range": header})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {first}-{last}/40000"
    assert r.content == data[first : last + 1]
    assert int(r.headers["content-length"]) == last - first + 1


@pytest.mark.parametrize(
    "header", ["bytes=40000-", "bytes=50000-60000", "bytes=-0", "bytes=10-5", "bytes=abc",
               "bytes=1-2-3", "bytes=-", "bytes=0-1,"]
)
def test_unsatisfiable_ranges_are_416(base_url: str, header: str) -> None:
    r = httpx.get(f"{base_url}/packages/site/files/data/blob.bin", headers={"range": header})
    assert r.status_code == 416
    assert r.headers["content-range"] == "bytes */40000"
    assert r.content == b""


def test_ignored_ranges_give_200(base_url: str, root: Path) -> None:
    url = f"{base_url}/packages/site/files/data/blob.bin"
    data = (root / "site" / "data" / "blob.bin").read_bytes()
    for h in ("items=0-5", "bytes=0-1,5-9"):
        r = httpx.get(url, headers={"range": h})
        assert r.status_code == 200 and r.content == data
    etag = httpx.head(url).headers["etag"]
    r = httpx.get(url, headers={"range": "bytes=0-9", "if-range": etag})
    assert r.status_code == 206
    r = httpx.get(url, headers={"range": "bytes=0-9", "if-range": '"stale"'})
    assert r.status_code == 200 and len(r.content) == 40000


def test_head_has_headers_no_body(base_url: str) -> None:
    url = f"{base_url}/packages/site/files/data/blob.bin"
    g = httpx.get(url)
    h = httpx.head(url)
    assert h.status_code == 200
    assert h.content == b""
    for k in ("etag", "content-length", "content-type", "cache-control", "accept-ranges"):
        assert h.headers[k] == g.headers[k], k


def test_gzip_when_asked(base_url: str, root: Path) -> None:
    url = f"{base_url}/packages/site/files/data/notes.txt"
    raw = (root / "site" / "data" / "notes.txt").read_bytes()
    with httpx.Client() as c:
        r = c.get(url, headers={"accept-encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip"
        assert r.headers["vary"] == "Accept-Encoding"
        assert r.content == raw  # httpx decodes
        assert int(r.headers["content-length"]) < len(raw)
        assert r.headers["etag"].endswith('-gzip"')
        plain = c.get(url, headers={"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert plain.headers["etag"] != r.headers["etag"]
        no = c.get(url, headers={"accept-encoding": "gzip;q=0"})
        assert "content-encoding" not in no.headers
        # binary parts are never gzipped
        part = c.get(f"{base_url}/packages/site/files/data/blob.bin.part.0",
                     headers={"accept-encoding": "gzip"})
        assert "content-encoding" not in part.headers
    with httpx.stream("GET", url, headers={"accept-encoding": "gzip"}) as s:
        body = b"".join(s.iter_raw())
    assert gzip.decompress(body) == raw


def test_cors_preflight(base_url: str) -> None:
    r = httpx.options(
        f"{base_url}/packages/site/files/index.html",
        headers={"origin": "https://example.org", "access-control-request-method": "GET",
                 "access-control-request-headers": "range"},
    )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "*"
    assert "GET" in r.headers["access-control-allow-methods"]
    assert "HEAD" in r.headers["access-control-allow-methods"]
    assert "range" in r.headers["access-control-allow-headers"].lower()
    assert r.headers["access-control-max-age"] == "86400"
    g = httpx.get(f"{base_url}/packages/site/files/index.html", headers={"origin": "https://x"})
    assert g.headers["access-control-allow-origin"] == "*"
    assert "ETag" in g.headers["access-control-expose-headers"]


def test_seed_parts_url(base_url: str, root: Path) -> None:
    r = httpx.get(f"{base_url}/packages/site/parts/0")
    assert r.status_code == 400  # several sealed components: ?component= needed
    r = httpx.get(f"{base_url}/packages/site/parts/3", params={"component": "data/blob.bin"})
    assert r.status_code == 200
    assert r.content == (root / "site" / "data" / "blob.bin.part.3").read_bytes()
    assert httpx.get(f"{base_url}/packages/site/parts/99",
                     params={"component": "data/blob.bin"}).status_code == 404
    assert httpx.get(f"{base_url}/packages/site/parts/256",
                     params={"component": "data/blob.bin"}).status_code == 400
    assert httpx.get(f"{base_url}/packages/site/parts/1",
                     params={"component": "nope"}).status_code == 404


def test_unknown_things_are_404(base_url: str) -> None:
    for path in ("/packages/nope", "/packages/nope/files/x", "/packages/site/files/missing.txt",
                 "/packages/site/versions/7/files/index.html",
                 "/packages/site/files/data/blob.bin.part.99",
                 "/packages/.auraseal/files/ledger.sqlite3"):
        assert httpx.get(base_url + path).status_code == 404, path


def test_versioned_url_is_immutable(base_url: str, root: Path) -> None:
    r = httpx.get(f"{base_url}/packages/site/versions/1/files/index.html")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    m = httpx.get(f"{base_url}/packages/site/versions/1/integrity-manifest.json")
    assert m.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert json.loads(m.content)["signed"]["version"] == 1


def test_archive_is_the_package(base_url: str, root: Path, tmp_path: Path) -> None:
    r = httpx.get(f"{base_url}/packages/site", timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/zip"
    z = tmp_path / "site.zip"
    z.write_bytes(r.content)
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = set(zf.namelist())
        assert (root / "site" / "data" / "blob.bin").read_bytes() == zf.read("data/blob.bin")
    on_disk = {p.relative_to(root / "site").as_posix() for p in (root / "site").rglob("*")
               if p.is_file()}
    assert names == on_disk
    with open_package(z) as pkg:
        assert all(c.state == "intact" for c in scrub(pkg).components)
    assert httpx.get(f"{base_url}/packages/site?coherence=1").status_code == 200
    for bad in ("1.5", "-0.1", "abc", "nan"):
        assert httpx.get(f"{base_url}/packages/site", params={"coherence": bad}).status_code == 400
    rr = httpx.get(f"{base_url}/packages/site", headers={"range": "bytes=0-3"})
    assert rr.status_code == 206 and rr.content == b"PK\x03\x04"


def test_archive_refused_when_component_lost(root: Path, serve) -> None:  # type: ignore[no-untyped-def]
    # lose data/blob.bin: the original and 2 of its 9 parts (k = 8)
    site = root / "site"
    (site / "data" / "blob.bin").write_bytes(b"x")
    for n in (0, 1):
        (site / f"data/blob.bin.part.{n}").unlink()
    url = serve(root, healing=False)
    r = httpx.get(f"{url}/packages/site", timeout=30)
    assert r.status_code == 503
    body = r.json()
    comp = {c["path"]: c for c in body["components"]}
    assert comp["data/blob.bin"]["state"] == "lost"
    assert comp["data/blob.bin"]["good"] == 7 and comp["data/blob.bin"]["total"] == 9
    assert comp["index.html"]["state"] == "intact"
    # the damaged file itself is never served
    assert httpx.get(f"{url}/packages/site/files/data/blob.bin").status_code == 503
    pk = httpx.get(f"{url}/packages").json()["packages"][0]
    assert pk["health"]["state"] == "lost"
    metrics = httpx.get(f"{url}/metrics").text
    assert 'auraseal_components{state="lost"} 1' in metrics


def test_damaged_file_is_repaired_on_read(root: Path, serve) -> None:  # type: ignore[no-untyped-def]
    site = root / "site"
    good = (site / "data" / "notes.txt").read_bytes()
    bad = bytearray(good)
    bad[10] ^= 0x01
    (site / "data" / "notes.txt").write_bytes(bytes(bad))
    (site / "data" / "notes.txt.part.2").write_bytes(b"garbage")
    url = serve(root, healing=False)
    r = httpx.get(f"{url}/packages/site/files/data/notes.txt",
                  headers={"accept-encoding": "identity"})
    assert r.status_code == 200
    assert r.content == good
    assert (site / "data" / "notes.txt").read_bytes() == good
    m = httpx.get(f"{url}/metrics").text
    assert "auraseal_repairs_total 1" in m
    assert "auraseal_verification_failures_total 0" not in m
    # the repair is recorded in the server's ledger
    with open_ledger(f"sqlite://{root / '.auraseal' / 'ledger.sqlite3'}") as led:
        kinds = [e.entry_type for e in [*led.store.committed_entries(), *led.pending()]]
    assert "server.repair" in kinds


def test_scrub_endpoint(root: Path, serve, token: tuple[str, Path]) -> None:  # type: ignore[no-untyped-def]
    url = serve(root, healing=False)
    (root / "site" / "css" / "site.css.part.1").unlink()
    assert httpx.post(f"{url}/packages/site/scrub").status_code == 401
    r = httpx.post(f"{url}/packages/site/scrub", headers={"authorization": f"Bearer {token[0]}"})
    assert r.status_code == 200
    assert r.json()["health"]["state"] == "intact"  # repaired during the scrub
    assert (root / "site" / "css" / "site.css.part.1").exists()


def test_background_scrub_repairs_and_reports(root: Path, serve) -> None:  # type: ignore[no-untyped-def]
    site = root / "site"
    want = (site / "data" / "blob.bin.part.4").read_bytes()
    (site / "data" / "blob.bin.part.4").unlink()
    url = serve(root)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pk = httpx.get(f"{url}/packages").json()["packages"][0]
        if pk["health"]["state"] == "intact":
            break
        time.sleep(0.2)
    assert pk["health"]["state"] == "intact"
    assert (site / "data" / "blob.bin.part.4").read_bytes() == want


def test_healthz_metrics_openapi(base_url: str) -> None:
    assert httpx.get(f"{base_url}/healthz").json()["status"] == "ok"
    httpx.get(f"{base_url}/packages/site/files/index.html")
    m = httpx.get(f"{base_url}/metrics")
    assert m.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'auraseal_http_requests_total{code="200",method="GET"}' in m.text
    assert "auraseal_http_response_bytes_total" in m.text
    doc = httpx.get(f"{base_url}/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert "/packages/{name}/files/{path}" in doc["paths"]


def test_dashboard_has_csp(base_url: str) -> None:
    r = httpx.get(f"{base_url}/")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "site" in r.text


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 10_000), a=st.integers(0, 12_000), b=st.integers(0, 12_000))
def test_parse_range_properties(size: int, a: int, b: int) -> None:
    for header in (f"bytes={a}-{b}", f"bytes={a}-", f"bytes=-{b}"):
        try:
            first, last = parse_range(header, size)  # type: ignore[misc]
        except RangeNotSatisfiable:
            if header.endswith("-"):
                assert a >= size
            elif header.startswith("bytes=-"):
                assert b == 0
            else:
                assert a >= size or a > b
            continue
        assert 0 <= first <= last < size
        if header.startswith("bytes=-"):
            assert last - first + 1 == min(b, size)
        else:
            assert first == a
