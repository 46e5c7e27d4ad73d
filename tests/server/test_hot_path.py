"""The replayed hot path of the real server (``EdgeMiddleware.try_fast``): a plain
GET/HEAD of a small file answered before is sent again from memory after one
``stat`` of the manifest. These tests check that a replay is the same answer as a
freshly built one, that it never outlives the version it came from (a publish
or link swap by another process), and that the hot path serves nothing the
manifest does not list (temp files, unlisted files, symlinks out of ROOT)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from auraseal._fs import temp_name
from auraseal.sealing import seal_tree
from auraseal.server.store import PackageStore
from auraseal.signing import SigningKey

from .conftest import EXAMPLE

PART = "data/notes.txt.part.2"
#: what only the request and the moment change
VOLATILE = {"date", "server"}


def _headers(r: httpx.Response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in r.headers.multi_items() if k not in VOLATILE]


def _hot(c: httpx.Client, rel: str) -> httpx.Response:
    """GET ``rel`` until its answer is kept for replay (load, build, replay)."""
    r = c.get(f"/packages/site/files/{rel}")
    for _ in range(3):
        r = c.get(f"/packages/site/files/{rel}")
    return r


def _client(url: str) -> httpx.Client:
    # httpx sends Accept-Encoding by default: a part is not compressible, so
    # it still takes the replayed path; compressible files are tested apart.
    return httpx.Client(base_url=url)


def test_replayed_part_has_the_same_bytes_and_headers_as_a_built_one(
    root: Path, serve: Callable[..., str]
) -> None:
    url = serve(root, healing=False)
    want = (root / "site" / PART).read_bytes()
    with _client(url) as c:
        first = c.get(f"/packages/site/files/{PART}")  # general path: load and verify
        built = c.get(f"/packages/site/files/{PART}")  # hot path, built and kept
        replayed = [c.get(f"/packages/site/files/{PART}") for _ in range(3)]
        head_built = c.head(f"/packages/site/files/{PART}")
        head_replayed = c.head(f"/packages/site/files/{PART}")
    for r in (first, built, *replayed):
        assert r.status_code == 200
        assert r.content == want
        assert r.headers["repr-digest"].startswith("sha-256=:")
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["access-control-allow-origin"] == "*"
    assert sorted(_headers(first)) == sorted(_headers(built))
    for r in replayed:
        assert _headers(r) == _headers(built)
    assert head_replayed.content == b""
    assert _headers(head_replayed) == _headers(head_built) == _headers(built)


def test_replay_does_not_answer_conditional_range_or_gzip_requests(
    root: Path, serve: Callable[..., str]
) -> None:
    url = serve(root, healing=False)
    text = "data/notes.txt"
    plain = (root / "site" / text).read_bytes()
    with _client(url) as c:
        part = _hot(c, PART)
        etag = part.headers["etag"]
        assert c.get(f"/packages/site/files/{PART}",
                     headers={"if-none-match": etag}).status_code == 304
        r = c.get(f"/packages/site/files/{PART}", headers={"range": "bytes=0-9"})
        assert r.status_code == 206
        assert r.content == part.content[:10]
        # a compressible file kept from an identity request is not replayed to gzip clients
        ident = {"accept-encoding": "identity"}
        for _ in range(4):
            r = c.get(f"/packages/site/files/{text}", headers=ident)
        assert r.content == plain
        raw = httpx.get(f"{url}/packages/site/files/{text}")  # httpx asks for gzip
        assert raw.headers.get("content-encoding") == "gzip"
        assert raw.content == plain  # httpx decoded it
        # and one kept without any encoding header is not replayed either
        with httpx.Client(base_url=url) as bare:
            del bare.headers["accept-encoding"]
            for _ in range(4):
                r = bare.get(f"/packages/site/files/{text}")
            assert "content-encoding" not in r.headers
        gz = c.get(f"/packages/site/files/{text}", headers={"accept-encoding": "gzip"})
        assert gz.headers["content-encoding"] == "gzip"
        assert gz.content == plain  # decoded by httpx


def test_replay_stops_when_another_process_swaps_in_a_new_version(
    root: Path, serve: Callable[..., str], tmp_path: Path, publisher_key: SigningKey
) -> None:
    """Another worker's publish swaps ROOT/site to a new version directory: the
    next request must be answered from the new version, not from memory."""
    url = serve(root, healing=False)
    with _client(url) as c:
        old = _hot(c, PART)
        assert old.headers["x-auraseal-version"] == "1"
        # version 2 with different notes: every part of it differs
        src = tmp_path / "v2src"
        shutil.copytree(EXAMPLE, src)
        notes = src / "data" / "notes.txt"
        notes.write_bytes(notes.read_bytes() + b"\nversion two\n" * 50)
        sealed = tmp_path / "v2"
        seal_tree(src, sealed, keys=[publisher_key], name="site", version=2)
        store = PackageStore(root)  # as another process would
        staging = store.staging_dir("site")
        for p in sealed.iterdir():
            shutil.move(str(p), staging / p.name)
        store.install("site", staging, 2)
        new = c.get(f"/packages/site/files/{PART}")
        assert new.status_code == 200
        assert new.headers["x-auraseal-version"] == "2"
        assert new.content == (root / "site" / PART).read_bytes()
        assert new.content != old.content
        again = _hot(c, PART)
        assert again.content == new.content
        assert again.headers["x-auraseal-version"] == "2"


def test_replay_stops_after_a_publish(
    root: Path, serve: Callable[..., str], site_zip: Callable[[int], bytes],
    token: tuple[str, Path],
) -> None:
    url = serve(root, healing=False)
    with _client(url) as c:
        assert _hot(c, PART).headers["x-auraseal-version"] == "1"
        r = c.put("/packages/site", content=site_zip(2),
                  headers={"authorization": f"Bearer {token[0]}"}, timeout=60)
        assert r.status_code == 201, r.text
        after = c.get(f"/packages/site/files/{PART}")
        assert after.headers["x-auraseal-version"] == "2"
        assert after.content == (root / "site" / PART).read_bytes()


def test_hot_path_serves_no_temp_or_unlisted_file(
    root: Path, serve: Callable[..., str]
) -> None:
    url = serve(root, healing=False)
    site = root / "site"  # a link to the version directory once the server adopted it
    body = (site / PART).read_bytes()
    tmp_part = site / "data" / temp_name("notes.txt.part.2", "repair")
    tmp_part.write_bytes(body)
    (site / "data" / "notes.txt.part.9").write_bytes(body)  # not in the manifest
    (site / "data" / "extra.txt").write_bytes(b"unlisted")
    with _client(url) as c:
        _hot(c, PART)
        for rel in (f"data/{tmp_part.name}", "data/notes.txt.part.9", "data/extra.txt"):
            for _ in range(3):
                r = c.get(f"/packages/site/files/{rel}")
                assert r.status_code == 404, rel
                assert r.content != body


def test_hot_path_does_not_follow_a_symlink_out_of_root(
    root: Path, serve: Callable[..., str], tmp_path: Path
) -> None:
    outside = tmp_path / "outside.bin"
    url = serve(root, healing=False)
    site = root / "site"
    other = "data/blob.bin.part.4"
    want = (site / PART).read_bytes()
    outside.write_bytes(b"secret outside ROOT")
    with _client(url) as c:
        _hot(c, PART)
        # a part swapped for a symlink before it was ever served: never followed
        os.unlink(site / other)
        os.symlink(outside, site / other)
        for _ in range(3):
            r = c.get(f"/packages/site/files/{other}")
            assert r.content != outside.read_bytes()
            assert r.status_code in (404, 503)
        # and one swapped after it was kept: the kept, verified bytes are served
        os.unlink(site / PART)
        os.symlink(outside, site / PART)
        for _ in range(3):
            r = c.get(f"/packages/site/files/{PART}")
            assert r.status_code == 200
            assert r.content == want


def test_damaged_hot_part_is_repaired_and_served_right(
    root: Path, serve: Callable[..., str], token: tuple[str, Path]
) -> None:
    url = serve(root, healing=False)
    site = root / "site"
    want = (site / PART).read_bytes()
    with _client(url) as c:
        _hot(c, PART)
        (site / PART).write_bytes(b"garbage" * 10)
        assert c.get(f"/packages/site/files/{PART}").content == want
        r = c.post("/packages/site/scrub", headers={"authorization": f"Bearer {token[0]}"})
        assert r.status_code == 200
        assert (site / PART).read_bytes() == want
        for _ in range(3):
            assert c.get(f"/packages/site/files/{PART}").content == want


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_replay_is_not_used_for_a_removed_package(
    root: Path, serve: Callable[..., str], method: str
) -> None:
    url = serve(root, healing=False)
    with _client(url) as c:
        for _ in range(4):
            c.request(method, f"/packages/site/files/{PART}")
        os.unlink(root / "site")  # the link: the package is no longer served
        assert c.request(method, f"/packages/site/files/{PART}").status_code == 404
