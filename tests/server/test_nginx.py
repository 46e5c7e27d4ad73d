"""Debian's real nginx serving ROOT with `auraseal nginx-conf`, compared with the
Python server on the same tree: status, headers, ranges and bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from _servers import free_port, run_nginx

from auraseal.cli import main as cli_main
from auraseal.errors import NetworkError

pytestmark = pytest.mark.nginx



@pytest.fixture
def published(root: Path, serve, token: tuple[str, Path],  # type: ignore[no-untyped-def]
              site_zip: Callable[[int], bytes]) -> tuple[Path, str]:
    """ROOT after publishing v2 through the server (so v1 is a kept version)."""
    url = serve(root, healing=False)
    r = httpx.put(f"{url}/packages/site", content=site_zip(2),
                  headers={"authorization": f"Bearer {token[0]}"}, timeout=60)
    assert r.status_code == 201
    return root, url


@pytest.fixture
def nginx_url(published: tuple[Path, str], tmp_path: Path) -> Iterator[str]:
    root, _ = published
    port = free_port()
    d = tmp_path / "nginx"
    d.mkdir()
    conf = d / "nginx.conf"
    rc = cli_main(["nginx-conf", str(root), "--listen", f"127.0.0.1:{port}",
                   "--standalone", str(d), "-o", str(conf)])
    assert rc == 0
    with run_nginx(conf, port) as url:
        yield url


SAME = ("content-type", "cache-control", "access-control-allow-origin",
        "x-content-type-options", "accept-ranges", "content-range", "content-encoding")

PATHS = [
    "/packages/site/integrity-manifest.json",
    "/packages/site/files/integrity-manifest.json",
    "/packages/site/files/index.html",
    "/packages/site/files/js/app.js",
    "/packages/site/files/css/site.css",
    "/packages/site/files/data/notes.txt",
    "/packages/site/files/data/blob.bin",
    "/packages/site/files/data/blob.bin.part.3",
    "/packages/site/versions/1/files/data/blob.bin",
    "/packages/site/versions/1/integrity-manifest.json",
]
REQUESTS = [
    ("GET", {"accept-encoding": "identity"}),
    ("HEAD", {"accept-encoding": "identity"}),
    ("GET", {"accept-encoding": "gzip"}),
    ("GET", {"range": "bytes=0-99", "accept-encoding": "identity"}),
    ("GET", {"range": "bytes=-100", "accept-encoding": "identity"}),
    ("GET", {"range": "bytes=150-", "accept-encoding": "identity"}),
    ("GET", {"range": "bytes=99999999-", "accept-encoding": "identity"}),
    ("GET", {"range": "bytes=abc", "accept-encoding": "identity"}),
    ("GET", {"range": "bytes=20-10", "accept-encoding": "identity"}),
]


def _fetch(c: httpx.Client, method: str, url: str, headers: dict[str, str]) -> httpx.Response:
    r = c.request(method, url, headers=headers)
    r.read()
    return r


@pytest.mark.parametrize("path", PATHS)
def test_nginx_matches_python(published: tuple[Path, str], nginx_url: str, path: str) -> None:
    _, py_url = published
    with httpx.Client() as c:
        for method, headers in REQUESTS:
            a = _fetch(c, method, py_url + path, headers)
            b = _fetch(c, method, nginx_url + path, headers)
            what = f"{method} {path} {headers}"
            assert a.status_code == b.status_code, what
            for h in SAME:
                va, vb = a.headers.get(h), b.headers.get(h)
                if h == "content-range" and a.status_code == 416:
                    assert va == vb, what
                elif h == "accept-ranges" and (
                    b.headers.get("content-encoding") == "gzip" or a.status_code == 206
                ):
                    # nginx sends Accept-Ranges only on identity 200s; we send it always
                    assert va == "bytes"
                elif a.status_code != 416:
                    assert va == vb, (what, h, va, vb)
            if a.status_code in (200, 206):
                assert a.content == b.content, what
                assert a.headers.get("etag") and b.headers.get("etag")
            # each server's own ETag revalidates to 304
            if method == "GET" and a.status_code == 200:
                for url, r in ((py_url, a), (nginx_url, b)):
                    again = c.get(url + path, headers={**headers,
                                                       "if-none-match": r.headers["etag"]})
                    assert again.status_code == 304, (what, url)


def test_nginx_preflight_and_refusals(published: tuple[Path, str], nginx_url: str) -> None:
    _, py_url = published
    pre = {"origin": "https://example.org", "access-control-request-method": "GET"}
    for url in (py_url, nginx_url):
        r = httpx.options(url + "/packages/site/files/index.html", headers=pre)
        assert r.status_code == 204, url
        assert r.headers["access-control-allow-origin"] == "*"
        assert "GET" in r.headers["access-control-allow-methods"]
        assert "Range" in r.headers["access-control-allow-headers"]
        assert r.headers["access-control-max-age"] == "86400"
        for bad in ("/packages/site/files/nope.txt", "/packages/.versions/files/x",
                    "/packages/site/files/..%2f..%2f.auraseal/ledger.sqlite3",
                    "/packages/../.auraseal/ledger.sqlite3"):
            st = httpx.get(url + bad).status_code
            assert 400 <= st < 500, (url, bad, st)


def test_nginx_in_front_with_upstream(published: tuple[Path, str], tmp_path: Path,
                                      token: tuple[str, Path],
                                      site_zip: Callable[[int], bytes]) -> None:
    """nginx serves the static tree and proxies publish, archive, ledger to Python."""
    root, py_url = published
    port = free_port()
    d = tmp_path / "nginx-up"
    d.mkdir()
    conf = d / "nginx.conf"
    assert cli_main(["nginx-conf", str(root), "--listen", f"127.0.0.1:{port}",
                     "--upstream", py_url, "--standalone", str(d), "-o", str(conf)]) == 0
    with run_nginx(conf, port) as ng:
        assert httpx.get(f"{ng}/packages").json()["packages"][0]["version"] == 2
        r = httpx.put(f"{ng}/packages/site", content=site_zip(3),
                      headers={"authorization": f"Bearer {token[0]}"}, timeout=60)
        assert r.status_code == 201, r.text
        m = httpx.get(f"{ng}/packages/site/integrity-manifest.json")
        assert m.status_code == 200 and b'"version": 3' in m.content
        assert m.headers["server"] == "nginx"  # served statically, not proxied
        z = httpx.get(f"{ng}/packages/site", timeout=30)
        assert z.status_code == 200 and z.content[:4] == b"PK\x03\x04"
        assert httpx.put(f"{ng}/packages/site", content=b"x").status_code == 401


def test_run_nginx_reports_a_bad_config(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text("this is not nginx syntax\n")
    with pytest.raises(NetworkError, match="nginx exited"), run_nginx(conf, free_port()):
        pass


def test_nginx_and_python_refuse_the_same_hostile_tree(
    root: Path, serve, token: tuple[str, Path], tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """Unlisted files and symlinks out of the package (to /etc/hostname): the
    Python server never served them, nginx did. Both must refuse them, both
    when they were in the folder at start and when planted into the served
    version afterwards."""
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"outside-root-secret-bytes\n")
    hostname = Path("/etc/hostname")
    target = hostname if hostname.is_file() and hostname.stat().st_size > 0 else outside
    secrets_ = {target.read_bytes(), outside.read_bytes()}
    site = root / "site"
    (site / "secret.txt").write_bytes(b"not in the manifest\n")
    (site / "data" / "host").symlink_to(target)
    (site / "data" / "notes.txt").unlink()
    (site / "data" / "notes.txt").symlink_to(target)  # a listed name, pointing out
    url = serve(root, healing=False)
    port = free_port()
    d = tmp_path / "nginx"
    d.mkdir()
    conf = d / "nginx.conf"
    assert cli_main(["nginx-conf", str(root), "--listen", f"127.0.0.1:{port}",
                     "--standalone", str(d), "-o", str(conf)]) == 0
    served = root / ".versions" / "site" / "1"

    def refused(paths: list[str]) -> None:
        for base in (url, ng):
            for p in paths:
                r = httpx.get(base + p, headers={"accept-encoding": "identity"})
                assert 400 <= r.status_code < 500, (base, p, r.status_code)
                assert r.content not in secrets_ and b"outside-root-secret" not in r.content

    with run_nginx(conf, port) as ng:
        refused(["/packages/site/files/secret.txt", "/packages/site/files/data/host",
                 "/packages/site/files/data/notes.txt"])
        assert not (served / "secret.txt").exists()  # moved aside when adopted
        # planted into the served version after start
        (served / "planted.txt").write_bytes(b"planted later\n")
        (served / "css" / "site.css").unlink()
        (served / "css" / "site.css").symlink_to(target)
        (served / "js" / "link.js").symlink_to(outside)
        (served / ".data.auraseal-tmp-write-1-abc").write_bytes(b"half-written")
        refused(["/packages/site/files/css/site.css", "/packages/site/files/js/link.js",
                 "/packages/site/files/.data.auraseal-tmp-write-1-abc"])
        # the next scrub moves what is unlisted aside and repairs the listed file
        r = httpx.post(f"{url}/packages/site/scrub",
                       headers={"authorization": f"Bearer {token[0]}"}, timeout=60)
        assert r.status_code == 200
        refused(["/packages/site/files/planted.txt", "/packages/site/files/js/link.js"])
        for base in (url, ng):
            css = httpx.get(base + "/packages/site/files/css/site.css",
                            headers={"accept-encoding": "identity"})
            assert css.status_code == 200, (base, css.text[:300])
            assert css.content not in secrets_
        unlisted = root / ".auraseal" / "unlisted" / "site" / "1"
        assert (unlisted / "secret.txt").is_file() and (unlisted / "planted.txt").is_file()
    assert "disable_symlinks on" in conf.read_text()
    assert "disable_symlinks off" not in conf.read_text()
