"""The CLI (serve as a real process, nginx-conf, publish-token), the token file
format against its checked-in fixture, and property tests of the small parsers."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import httpx
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auraseal.cli import main as cli_main
from auraseal.errors import ConfigError, InputError, StorageError
from auraseal.server.publish import TokenSet, hash_token, safe_extract
from auraseal.server.static import _accepts_gzip, _etag_list, content_type_for
from auraseal.server.testing import free_port

FIXTURES = Path(__file__).parent.parent / "fixtures" / "server"
FIXTURE_TOKEN = "aspub_fixture-token-do-not-use"


def test_token_file_fixture() -> None:
    tokens = TokenSet.load(FIXTURES / "tokens.txt")
    assert len(tokens.hashes) == 2
    assert tokens.check(f"Bearer {FIXTURE_TOKEN}")
    assert tokens.check("bearer other")
    for bad in (None, "", f"Basic {FIXTURE_TOKEN}", f"Bearer {FIXTURE_TOKEN}x", "Bearer"):
        assert not tokens.check(bad)
    # the stored form is the hex SHA-256 of the token, as sha256sum prints it
    out = subprocess.run(["sha256sum"], input=FIXTURE_TOKEN.encode(), capture_output=True,
                         check=True).stdout.split()[0].decode()
    assert hash_token(FIXTURE_TOKEN) == f"sha256:{out}"


@pytest.mark.parametrize("line", ["plain-token", "sha256:zz", "sha256:abcd", "md5:" + "0" * 32])
def test_token_file_refuses_bad_lines(tmp_path: Path, line: str) -> None:
    f = tmp_path / "t.txt"
    f.write_text(line + "\n")
    with pytest.raises(ConfigError):
        TokenSet.load(f)


@settings(max_examples=200, deadline=None)
@given(token=st.text(min_size=1, max_size=80).filter(lambda t: t.strip() == t and " " not in t),
       other=st.text(min_size=1, max_size=80))
def test_token_check_property(token: str, other: str) -> None:
    h = bytes.fromhex(hash_token(token).split(":")[1])
    ts = TokenSet((h,))
    assert ts.check(f"Bearer {token}")
    if other.strip() != token:
        assert not ts.check(f"Bearer {other}")


@settings(max_examples=200, deadline=None)
@given(tags=st.lists(st.from_regex(r'"[a-z0-9-]{1,20}"', fullmatch=True), min_size=1,
                     max_size=5), weak=st.booleans())
def test_etag_list_property(tags: list[str], weak: bool) -> None:
    header = ", ".join(("W/" + t) if weak else t for t in tags)
    assert _etag_list(header) == tags


@pytest.mark.parametrize(
    ("header", "want"),
    [("gzip", True), ("gzip, deflate, br", True), ("br;q=1, gzip;q=0.5", True),
     ("gzip;q=0", False), ("identity", False), ("*", True), ("", False), ("gzip;q=x", False)],
)
def test_accepts_gzip(header: str, want: bool) -> None:
    assert _accepts_gzip(header) is want


def test_content_types() -> None:
    assert content_type_for("a/b/index.html") == "text/html"
    assert content_type_for("x.js.part.3") == "application/octet-stream"
    assert content_type_for("README") == "application/octet-stream"
    assert content_type_for("photo.JPG") == "image/jpeg"


def test_nginx_conf_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["nginx-conf", str(tmp_path), "--server-name", "example.org",
                     "--listen", "8080", "--upstream", "http://127.0.0.1:8000"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("server {")
    assert "server_name example.org;" in out and "listen 8080;" in out
    assert f'alias "{tmp_path.resolve()}/$1/$2";' in out
    assert "proxy_pass http://127.0.0.1:8000;" in out
    assert "add_header X-Content-Type-Options nosniff always;" in out
    assert cli_main(["nginx-conf", str(tmp_path), "--server-name", "a;b"]) == 2
    if Path("/usr/sbin/nginx").exists():
        d = tmp_path / "ng"
        d.mkdir()
        conf = d / "nginx.conf"
        assert cli_main(["nginx-conf", str(tmp_path), "--listen", "127.0.0.1:1",
                         "--standalone", str(d), "-o", str(conf)]) == 0
        r = subprocess.run(["/usr/sbin/nginx", "-t", "-p", str(d), "-c", str(conf)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_publish_token_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "tokens.txt"
    assert cli_main(["publish-token", str(f), "--json"]) == 0
    assert cli_main(["publish-token", str(f)]) == 0
    first = json.loads(capsys.readouterr().out.split("\n}\n")[0] + "}")["token"]
    lines = f.read_text().splitlines()
    assert len(lines) == 2
    assert lines[0] == "sha256:" + hashlib.sha256(first.encode()).hexdigest()
    assert first not in f.read_text()
    assert oct(f.stat().st_mode & 0o777) == "0o600"
    assert TokenSet.load(f).check(f"Bearer {first}")


@pytest.mark.parametrize("server", ["granian", "uvicorn"])
def test_serve_process_with_defaults(tmp_path: Path, server: str) -> None:
    """`auraseal serve` with no ROOT, as scripts/run starts it: a real process,
    the example sealed on first start into the user data dir, SQLite ledger."""
    port = free_port()
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    exe = Path(sys.executable).parent / "auraseal"
    proc = subprocess.Popen([str(exe), "serve", "--port", str(port), "--server", server],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/packages", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert [p["name"] for p in r.json()["packages"]] == ["site"]
        root = tmp_path / "data" / "auraseal" / "serve"
        assert (root / ".auraseal" / "publisher.key").exists()
        page = httpx.get(f"http://127.0.0.1:{port}/packages/site/files/index.html")
        assert page.status_code == 200 and b"<html" in page.content.lower()
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["ledger"] is True
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert (tmp_path / "data" / "auraseal" / "serve" / ".auraseal" / "ledger.sqlite3").exists()


@pytest.mark.postgres
def test_server_on_postgresql_ledger(  # type: ignore[no-untyped-def]
    root: Path, serve, token: tuple[str, Path], pg_database: str, site_zip
) -> None:
    url = serve(root, ledger_url=pg_database)
    r = httpx.put(f"{url}/packages/site", content=site_zip(2),
                  headers={"authorization": f"Bearer {token[0]}"}, timeout=60)
    assert r.status_code == 201
    entry_id = r.json()["ledger_entry"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        e = httpx.get(f"{url}/ledger/entries/{entry_id}").json()
        if e.get("inclusion"):
            break
        time.sleep(0.1)
    assert e["entry_type"] == "server.publish"
    assert e["inclusion"]["tree_size"] >= 1
    with psycopg.connect(pg_database) as conn:
        n = conn.execute("SELECT count(*) FROM ledger.entries").fetchone()
    assert n is not None and n[0] >= 1


_SEGMENTS = st.sampled_from(["..", ".", "", "a", "b.txt", "c d", "\\..", "..\\x", "\x00", "é",
                             "/", "x" * 300, "C:", "%2e%2e"])


@settings(max_examples=150, deadline=None)
@given(names=st.lists(st.lists(_SEGMENTS, min_size=1, max_size=4).map("/".join),
                      min_size=1, max_size=5))
def test_safe_extract_never_writes_outside(tmp_path_factory: pytest.TempPathFactory,
                                           names: list[str]) -> None:
    base = tmp_path_factory.mktemp("zx")
    dest = base / "a" / "dest"
    dest.mkdir(parents=True)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(buf, "w") as zf:
            for n in names:
                zf.writestr(zipfile.ZipInfo(n), b"data")
    z = base / "u.zip"
    z.write_bytes(buf.getvalue())
    with contextlib.suppress(InputError, StorageError):
        safe_extract(z, dest, max_total=1 << 20, max_entries=100, max_ratio=200)
    written = {p.resolve() for p in base.rglob("*") if p.is_file()} - {z.resolve()}
    assert all(dest.resolve() in p.parents for p in written), written
