"""Hostile input against the real server: every answer is 4xx, nothing is
written, and nothing outside ROOT is read."""

from __future__ import annotations

import contextlib
import http.client
import io
import shutil
import socket
import stat
import threading
import time
import zipfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from auraseal.sealing import seal_tree
from auraseal.signing import SigningKey

from .conftest import EXAMPLE, tree_snapshot, uploads_empty, zip_dir


def raw_get(base_url: str, path: str) -> tuple[int, bytes]:
    """GET with the path sent exactly as given (no client-side normalisation)."""
    u = urlsplit(base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


SECRET = b"outside-root-secret-bytes"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret.txt").write_bytes(SECRET)
    return d


TRAVERSALS = [
    "/packages/site/files/../../../outside/secret.txt",
    "/packages/site/files/..%2f..%2f..%2foutside%2fsecret.txt",
    "/packages/site/files/%2e%2e/%2e%2e/%2e%2e/outside/secret.txt",
    "/packages/site/files/%2e%2e%2f%2e%2e%2f%2e%2e%2foutside%2fsecret.txt",
    "/packages/site/files/%252e%252e%252f%252e%252e%252foutside%252fsecret.txt",
    "/packages/site/files/..%5c..%5coutside%5csecret.txt",
    "/packages/site/files//etc/passwd",
    "/packages/site/files/%2fetc%2fpasswd",
    "/packages/..%2f..%2foutside/files/secret.txt",
    "/packages/%2e%2e/files/secret.txt",
    "/packages/site/versions/1/files/../../../../outside/secret.txt",
    "/packages/site/files/index.html%00.txt",
    "/packages/site/files/" + "a" * 300,
    "/packages/site/files/" + "/".join(["abcdefgh"] * 600),
    "/packages/" + "n" * 300 + "/files/index.html",
    "/packages/.versions/files/secret.txt",
    "/packages/site/files/.auraseal/ledger.sqlite3",
    "/packages/site/parts/1?component=../../outside/secret.txt",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_is_4xx(root: Path, base_url: str, outside: Path, path: str) -> None:
    before = tree_snapshot(root)
    status, body = raw_get(base_url, path)
    assert 400 <= status < 500, (path, status)
    assert SECRET not in body
    assert b"root:" not in body
    assert tree_snapshot(root) == before


def test_symlinked_package_out_of_root(root: Path, outside: Path, serve) -> None:  # type: ignore[no-untyped-def]
    shutil.copytree(root / "site", outside / "evil")
    (root / "evil").symlink_to(outside / "evil")
    url = serve(root, healing=False)
    names = [p["name"] for p in httpx.get(f"{url}/packages").json()["packages"]]
    assert names == ["site"]
    for path in ("/packages/evil/files/index.html", "/packages/evil/integrity-manifest.json",
                 "/packages/evil"):
        status, _ = raw_get(url, path)
        assert 400 <= status < 500, path


def test_symlinked_file_out_of_root_is_not_read(root: Path, outside: Path, serve) -> None:  # type: ignore[no-untyped-def]
    # The outside file has exactly the right bytes, so only the symlink check stops it.
    target = outside / "index.html"
    shutil.copy(root / "site" / "index.html", target)
    (root / "site" / "index.html").unlink()
    (root / "site" / "index.html").symlink_to(target)
    target.chmod(0)  # any read attempt by a non-root reader would fail; root reads anyway
    url = serve(root, healing=False)
    status, body = raw_get(url, "/packages/site/files/index.html")
    assert status == 404
    target.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert body.startswith(b"{")


# --- publish ----------------------------------------------------------------------


def put(url: str, body: bytes, token: str | None, name: str = "site",
        headers: dict[str, str] | None = None) -> httpx.Response:
    h = dict(headers or {})
    if token is not None:
        h["authorization"] = f"Bearer {token}"
    return httpx.put(f"{url}/packages/{name}", content=body, headers=h, timeout=60)


def assert_untouched(root: Path, before: dict[str, tuple[int, int]], url: str) -> None:
    assert tree_snapshot(root) == before
    assert uploads_empty(root)
    assert httpx.get(f"{url}/packages").json()["packages"][0]["version"] == 1


@pytest.mark.parametrize(
    "auth", [None, "Bearer", "Bearer  x", "Bearer wrong-token", "Basic dXNlcjpwYXNz", "bearer x y",
             "Bearer " + "A" * 2000]
)
def test_bad_or_missing_token(root: Path, base_url: str, site_zip: Callable[[int], bytes],
                              auth: str | None) -> None:
    before = tree_snapshot(root)
    headers = {} if auth is None else {"authorization": auth}
    r = httpx.put(f"{base_url}/packages/site", content=site_zip(2), headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert_untouched(root, before, base_url)
    r = httpx.post(f"{base_url}/ledger/entries", json={"type": "x"}, headers=headers)
    assert r.status_code == 401


def test_oversized_upload(root: Path, serve, token: tuple[str, Path],  # type: ignore[no-untyped-def]
                          site_zip: Callable[[int], bytes]) -> None:
    url = serve(root, max_upload_bytes=50_000, healing=False)
    before = tree_snapshot(root)
    body = site_zip(2)
    assert len(body) > 50_000
    r = put(url, body, token[0])
    assert r.status_code == 413
    assert_untouched(root, before, url)

    def chunks():  # type: ignore[no-untyped-def]  # no Content-Length: chunked
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    r = httpx.put(f"{url}/packages/site", content=chunks(),
                  headers={"authorization": f"Bearer {token[0]}"})
    assert r.status_code == 413
    assert_untouched(root, before, url)


def test_upload_that_stops_half_way(root: Path, base_url: str, token: tuple[str, Path],
                                    site_zip: Callable[[int], bytes]) -> None:
    before = tree_snapshot(root)
    body = site_zip(2)
    u = urlsplit(base_url)
    s = socket.create_connection((u.hostname, u.port))
    head = (f"PUT /packages/site HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token[0]}\r\n"
            f"Content-Type: application/zip\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    s.sendall(head + body[: len(body) // 2])
    time.sleep(0.3)
    s.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not uploads_empty(root):
        time.sleep(0.05)
    time.sleep(0.3)
    assert_untouched(root, before, base_url)
    # a body shorter than its Content-Length sent with a half-close is refused as well
    s = socket.create_connection((u.hostname, u.port))
    s.sendall(head + body[:1000])
    s.shutdown(socket.SHUT_WR)
    s.settimeout(10)
    reply = b""
    try:
        while chunk := s.recv(65536):
            reply += chunk
    except OSError:
        pass
    s.close()
    assert not reply.startswith(b"HTTP/1.1 2")
    time.sleep(0.3)
    assert_untouched(root, before, base_url)


def zip_with(entries: list[tuple[zipfile.ZipInfo | str, bytes]],
             compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return buf.getvalue()


def hostile_zips(good: Path) -> dict[str, bytes]:
    files = [(p.relative_to(good).as_posix(), p.read_bytes())
             for p in sorted(good.rglob("*")) if p.is_file()]
    link = zipfile.ZipInfo("data/link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    return {
        "not a zip": b"this is not a zip at all" * 100,
        "dotdot": zip_with([*files, ("../../escape.txt", b"x")]),
        "absolute": zip_with([*files, ("/tmp/escape.txt", b"x")]),
        "backslash": zip_with([*files, ("..\\..\\escape.txt", b"x")]),
        "symlink": zip_with([*files, (link, b"/etc/passwd")]),
        "duplicate": zip_with([*files, (files[0][0], files[0][1])]),
        "file and dir": zip_with([*files, ("index.html/inner", b"x")]),
        "overlong name": zip_with([*files, ("a" * 300, b"x")]),
        "bomb": zip_with([*files, ("bomb.bin", b"\0" * (64 << 20))], zipfile.ZIP_DEFLATED),
        "no manifest": zip_with([f for f in files if f[0] != "integrity-manifest.json"]),
        "extra file": zip_with([*files, ("extra.txt", b"unlisted")]),
        "empty": b"",
    }


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize(
    "case", ["not a zip", "dotdot", "absolute", "backslash", "symlink", "duplicate",
             "file and dir", "overlong name", "bomb", "no manifest", "extra file", "empty"]
)
def test_hostile_zip(root: Path, base_url: str, token: tuple[str, Path],
                     sealed_versions: dict[int, Path], tmp_path: Path, case: str) -> None:
    body = hostile_zips(sealed_versions[2])[case]
    before = tree_snapshot(root)
    r = put(base_url, body, token[0])
    assert 400 <= r.status_code < 500, (case, r.status_code, r.text)
    if case == "bomb":
        assert r.status_code == 413
    assert_untouched(root, before, base_url)
    assert not (tmp_path / "escape.txt").exists()
    assert not Path("/tmp/escape.txt").exists()


def test_signed_by_unknown_key(root: Path, base_url: str, token: tuple[str, Path],
                               tmp_path: Path) -> None:
    stranger = SigningKey.generate()
    d = tmp_path / "stranger"
    seal_tree(EXAMPLE, d, keys=[stranger], name="site", version=5)
    before = tree_snapshot(root)
    r = put(base_url, zip_dir(d), token[0])
    assert r.status_code == 403
    assert r.json()["error"]["type"] in ("UnknownKeyError", "ThresholdError")
    assert_untouched(root, before, base_url)
    unsigned = tmp_path / "unsigned"
    seal_tree(EXAMPLE, unsigned, keys=[], name="site", version=5)
    assert put(base_url, zip_dir(unsigned), token[0]).status_code == 403
    assert_untouched(root, before, base_url)


def test_expired_manifest(root: Path, base_url: str, token: tuple[str, Path],
                          publisher_key: SigningKey, tmp_path: Path) -> None:
    d = tmp_path / "expired"
    seal_tree(EXAMPLE, d, keys=[publisher_key], name="site", version=5,
              expires=timedelta(seconds=-1))
    before = tree_snapshot(root)
    r = put(base_url, zip_dir(d), token[0])
    assert r.status_code == 403
    assert r.json()["error"]["type"] == "ExpiredError"
    assert_untouched(root, before, base_url)


def test_rolled_back_version(root: Path, base_url: str, token: tuple[str, Path],
                             site_zip: Callable[[int], bytes]) -> None:
    assert put(base_url, site_zip(3), token[0]).status_code == 201
    before = tree_snapshot(root)
    for v in (2, 3, 1):
        r = put(base_url, site_zip(v), token[0])
        assert r.status_code == 409, v
        assert r.json()["error"]["type"] == "RollbackError"
    assert tree_snapshot(root) == before
    assert uploads_empty(root)
    assert httpx.get(f"{base_url}/packages").json()["packages"][0]["version"] == 3


def test_wrong_name_and_damaged_package(root: Path, base_url: str, token: tuple[str, Path],
                                        sealed_versions: dict[int, Path], tmp_path: Path,
                                        site_zip: Callable[[int], bytes]) -> None:
    before = tree_snapshot(root)
    r = put(base_url, site_zip(2), token[0], name="other")
    assert r.status_code == 400
    assert not (root / "other").exists()
    for bad_name in ("..", ".hidden", "a" * 200):
        assert 400 <= put(base_url, site_zip(2), token[0], name=bad_name).status_code < 500
    damaged = tmp_path / "damaged"
    shutil.copytree(sealed_versions[2], damaged)
    p = damaged / "data" / "blob.bin.part.1"
    b = bytearray(p.read_bytes())
    b[200] ^= 0x40
    p.write_bytes(bytes(b))
    r = put(base_url, zip_dir(damaged), token[0])
    assert r.status_code == 422
    assert_untouched(root, before, base_url)


def test_oversized_ledger_entry_and_odd_methods(root: Path, base_url: str,
                                                token: tuple[str, Path]) -> None:
    auth = {"authorization": f"Bearer {token[0]}"}
    big = b'{"type": "x", "data": {"a": "' + b"y" * (2 << 20) + b'"}}'
    r = httpx.post(f"{base_url}/ledger/entries", content=big, headers=auth)
    assert r.status_code == 413
    for m in ("DELETE", "PATCH", "BREW", "PROPFIND"):
        r = httpx.request(m, f"{base_url}/packages/site")
        assert r.status_code in (400, 405), m
    metrics = httpx.get(f"{base_url}/metrics").text
    assert 'method="OTHER"' in metrics
    assert "BREW" not in metrics and "PROPFIND" not in metrics


def _staged_bytes(root: Path) -> int:
    vr = root / ".versions"
    total = 0
    for p in vr.rglob("*") if vr.exists() else []:
        with contextlib.suppress(OSError):
            staged = ".staging-" in p.as_posix() or "auraseal-tmp-staging" in p.as_posix()
            if staged and p.is_file():
                total += p.stat().st_size
    return total


def test_zip_bomb_of_many_small_entries_is_refused_before_writing(
    root: Path, base_url: str, token: tuple[str, Path]
) -> None:
    """Replays the bomb that skipped the ratio check: 2000 entries of exactly
    64 KiB of zeros (each below the per-entry ratio check) = 125 MiB from a
    ~0.4 MB upload. The total is bounded by the ratio times the upload size."""
    entries: list[tuple[zipfile.ZipInfo | str, bytes]] = [
        (f"b/{i:05d}.bin", b"\0" * (64 << 10)) for i in range(2000)
    ]
    body = zip_with(entries, zipfile.ZIP_DEFLATED)
    assert len(body) < 1 << 20
    before = tree_snapshot(root)
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _staged_bytes(root))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        r = put(base_url, body, token[0])
    finally:
        done.set()
        watcher.join()
    assert r.status_code == 413, r.text
    assert "zip bomb" in r.json()["error"]["message"]
    assert peak == 0  # refused from the declared sizes, before writing anything
    assert_untouched(root, before, base_url)


def test_deeply_nested_ledger_json_is_400_not_500(
    root: Path, base_url: str, token: tuple[str, Path]
) -> None:
    auth = {"authorization": f"Bearer {token[0]}"}
    for depth in (100_000, 65):
        body = b'{"type": "x", "data": {"a": ' + b"[" * depth + b"]" * depth + b"}}"
        r = httpx.post(f"{base_url}/ledger/entries", content=body, headers=auth)
        assert r.status_code == 400, (depth, r.status_code, r.text[:200])
        err = r.json()["error"]
        assert err["type"] == "InputError" and "nested deeper" in err["message"]
        assert "\n" not in r.text and "Traceback" not in r.text
    # brackets inside strings do not count, and ordinary nesting still works
    ok = b'{"type": "x", "data": {"s": "' + b"[" * 1000 + b'", "a": [[[1]]]}}'
    assert httpx.post(f"{base_url}/ledger/entries", content=ok, headers=auth).status_code == 201


def test_deeply_nested_manifest_in_an_upload_is_4xx(
    root: Path, base_url: str, token: tuple[str, Path]
) -> None:
    """The other JSON the server accepts: a published manifest (parsed by
    auraseal.manifest, which bounds recursion itself)."""
    deep = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    before = tree_snapshot(root)
    r = put(base_url, zip_with([("integrity-manifest.json", deep)]), token[0])
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:200])
    assert "\n" not in r.text
    assert_untouched(root, before, base_url)
