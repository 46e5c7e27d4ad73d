"""The client's on-disk formats (docs/CLIENT.md) read from checked-in fixtures,
and property round trips, so a format change is never silent."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auraseal.client.blockhub import make_source
from auraseal.client.cache import Cache, ManifestMeta, url_key
from auraseal.client.install import Installed, InstallRecord, Pending, read_record, record_path
from auraseal.errors import StorageError
from auraseal.signing import TrustState

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "client"


def test_trust_state_fixture_is_what_the_cache_reads(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    shutil.copy(FIX / "trust.json", cache.root / "trust.json")
    assert cache.trust_state.get("site") == (
        7,
        "3f0c5d0b1e8a2c6f4b7d9e1a3c5f7b9d2e4a6c8f0b1d3e5a7c9f1b3d5e7a9c1f",
    )
    assert isinstance(cache.trust_state, TrustState)


def test_manifest_meta_fixture(tmp_path: Path) -> None:
    doc = json.loads((FIX / "manifest.meta.json").read_text())
    meta = ManifestMeta.from_dict(doc, "fixture")
    assert meta.fetched_at == datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
    assert meta.etag == '"sha256-b5bb9d8014a0f9b1d61e21e796d78dcc"'
    assert meta.to_dict() == doc
    cache = Cache(tmp_path / "c")
    key = url_key(meta.url)
    shutil.copy(FIX / "manifest.meta.json", cache.root / "manifests" / f"{key}.meta.json")
    body = cache.root / "manifests" / f"{key}.json"
    shutil.copy(FIX / "manifest.body.json", body)
    got = cache.manifest(meta.url)
    assert got is not None and got[0] == b"foo\n"
    body.write_bytes(b"fob\n")  # cached bytes altered on disk: ignored
    assert cache.manifest(meta.url) is None


def test_manifest_meta_other_version_is_ignored(tmp_path: Path) -> None:
    doc = json.loads((FIX / "manifest.meta.json").read_text())
    doc["version"] = 2
    cache = Cache(tmp_path / "c")
    key = url_key(doc["url"])
    (cache.root / "manifests" / f"{key}.meta.json").write_text(json.dumps(doc))
    shutil.copy(FIX / "manifest.body.json", cache.root / "manifests" / f"{key}.json")
    assert cache.manifest(doc["url"]) is None


def test_install_record_fixture(tmp_path: Path) -> None:
    dest = tmp_path / "site"
    shutil.copy(FIX / "install.json", record_path(dest))
    rec = read_record(dest)
    assert rec is not None and rec.current is not None and rec.previous is not None
    assert (rec.current.version, rec.previous.version) == (2, 1)
    assert rec.to_dict() == json.loads((FIX / "install.json").read_text())


_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


@settings(max_examples=60, deadline=None)
@given(
    cur=st.none() | st.builds(Installed, _text, st.integers(0, 2**53), _text, _text, _text),
    prev=st.none() | st.builds(Installed, _text, st.integers(0, 2**53), _text, _text, _text),
)
def test_install_record_round_trip(cur: Installed | None, prev: Installed | None) -> None:
    rec = InstallRecord(cur, prev)
    back = InstallRecord.from_dict(json.loads(json.dumps(rec.to_dict())), "x")
    assert back == rec


@settings(max_examples=60, deadline=None)
@given(
    url=st.from_regex(r"https?://[a-z]{1,10}(:[0-9]{2,5})?/[a-z0-9/]{0,20}", fullmatch=True),
    secs=st.integers(0, 4_000_000_000),
    etag=st.none() | _text,
)
def test_manifest_meta_round_trip(url: str, secs: int, etag: str | None) -> None:
    meta = ManifestMeta(url, datetime.fromtimestamp(secs, UTC), "ab" * 32, etag, None)
    assert ManifestMeta.from_dict(json.loads(json.dumps(meta.to_dict())), "x") == meta


def test_install_record_with_journal_round_trip() -> None:
    cur = Installed("site", 3, "ab" * 32, "http://127.0.0.1/", "2026-11-22T03:00:00Z", "cd" * 32)
    prev = Installed("site", 2, "ef" * 32, "http://127.0.0.1/", "2026-11-22T02:00:00Z")
    pend = Pending("install", ".site.auraseal-tmp-fetch-12-ab12cd34ef56",
                   ".site.auraseal-tmp-fetch-12-ab12cd34ef56.swap", 11, 7, True, cur, prev)
    rec = InstallRecord(prev, None, {"site": (3, "ab" * 32), "other": (9, "00" * 32)}, pend)
    doc = json.loads(json.dumps(rec.to_dict()))
    assert doc["version"] == 1 and doc["pending"]["old_to_prev"] is True
    assert InstallRecord.from_dict(doc, "x") == rec
    doc["pending"]["source"] = "../elsewhere"
    with pytest.raises(StorageError):
        InstallRecord.from_dict(doc, "x")


@settings(max_examples=80, deadline=None)
@given(path=st.from_regex(r"/[A-Za-z0-9._/-]{0,30}", fullmatch=True))
def test_sources_always_have_a_base_and_manifest_url(path: str) -> None:
    s = make_source("http://127.0.0.1:1" + path, "primary")
    assert s.base.endswith("/")
    assert s.manifest_url.startswith(s.base)
    assert s.manifest_url.endswith(".json")
