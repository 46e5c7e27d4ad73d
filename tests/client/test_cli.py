"""`auraseal fetch` / `auraseal rollback` from the command line, a plain
static host (`python -m http.server`), BlockHub index.json, offline mode,
the transport seam and a real ledger."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from _servers import free_port

from auraseal._time import utcnow
from auraseal.cli import main as cli_main
from auraseal.client import fetch_package
from auraseal.errors import StorageError, ThresholdError
from auraseal.ledger import open_ledger
from auraseal.signing import SigningKey, TrustPolicy

from .conftest import Client
from .faultserver import FaultServer, fault_server
from .helpers import FAST, FILES_V1, files_v2, snapshot, write_package


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main(list(argv))
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture
def pub(tmp_path: Path, key: SigningKey) -> Path:
    p = tmp_path / "key.pub"
    p.write_bytes(key.public.pem())
    return p


def test_cli_fetch_json_report_and_rollback(
    primary: FaultServer, pkg: Path, key: SigningKey, pub: Path, tmp_path: Path
) -> None:
    dest, cache = tmp_path / "site", tmp_path / "cache"
    args = ["fetch", primary.url, "-o", str(dest), "--trusted-key", str(pub),
            "--cache", str(cache), "--json"]
    rc, out, _ = run_cli(*args)
    assert rc == 0
    rep = json.loads(out)
    assert rep["ok"] and rep["version"] == 1 and rep["sources"] == {"primary": 3}
    assert rep["report_version"] == 1
    write_package(pkg, files_v2(), [key], version=2)
    rc, out, _ = run_cli(*args, "--manifest-ttl", "0")
    rep = json.loads(out)
    assert rc == 0 and rep["version"] == 2 and rep["previous_version"] == 1
    assert rep["sources"] == {"primary": 2, "cache": 1}
    assert snapshot(dest) == files_v2()
    rc, out, _ = run_cli("rollback", str(dest), "--json")
    assert rc == 0 and json.loads(out)["current"]["version"] == 1
    assert snapshot(dest) == FILES_V1
    rc, out, _ = run_cli("rollback", str(dest))
    assert rc == 0 and "v2" in out
    assert snapshot(dest) == files_v2()


def test_cli_exit_codes_and_json_errors(
    primary: FaultServer, pub: Path, tmp_path: Path, pkg: Path, other_key: SigningKey
) -> None:
    dest = tmp_path / "site"
    write_package(pkg, FILES_V1, [other_key])
    rc, out, err = run_cli("fetch", primary.url, "-o", str(dest), "--trusted-key", str(pub),
                           "--no-cache", "--json")
    assert rc == 3
    assert json.loads(out)["error"]["type"] == "UnknownKeyError"
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not dest.exists()
    rc, _, err = run_cli("rollback", str(dest))
    assert rc == 2 and "no such file or directory" in err
    rc, _, err = run_cli("fetch", "ftp://x/", "-o", str(dest))
    assert rc == 2
    rc, _, _ = run_cli("fetch", primary.url, "-o", str(dest), "--threshold", "2", "--no-cache")
    assert rc == 2
    primary.fault("data/blob.bin", "status", status=404)
    rc, _, err = run_cli("fetch", primary.url, "-o", str(dest), "--no-cache", "--allow-unsigned")
    assert rc == 5 and "HTTP 404" in err
    assert not dest.exists()


def test_cli_fetch_package_flag_refuses_another_package_exit_3(
    primary: FaultServer, pub: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "site"
    rc, out, err = run_cli("fetch", primary.url, "-o", str(dest), "--trusted-key", str(pub),
                           "--no-cache", "--package", "app", "--json")
    assert rc == 3
    assert json.loads(out)["error"]["type"] == "PackageMismatchError"
    assert "'site'" in err and "'app'" in err and len(err.strip().splitlines()) == 1
    assert not dest.exists()
    rc, _, _ = run_cli("fetch", primary.url, "-o", str(dest), "--trusted-key", str(pub),
                       "--no-cache", "--package", "site")
    assert rc == 0 and snapshot(dest) == FILES_V1


def test_unsigned_package_without_keys_and_refused_with_keys(
    client: Client, primary: FaultServer, pkg: Path
) -> None:
    write_package(pkg, FILES_V1, [])
    r = client(primary.url, policy=None)
    assert r.version == 1
    assert r.trust["mode"] == "unsigned" and r.to_dict()["trust"]["verified"] is False
    assert "UNSIGNED" in r.summary()
    with pytest.raises(ThresholdError):
        client(primary.url, manifest_ttl=timedelta(0))


@pytest.fixture
def static_host(pkg: Path) -> Iterator[str]:
    """`python -m http.server` serving the package directory: a plain static host."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(pkg)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(10)


def test_python_http_server_as_plain_static_host(
    client: Client, static_host: str, pkg: Path, key: SigningKey
) -> None:
    r = client(static_host)
    assert snapshot(client.dest) == FILES_V1
    assert r.sources() == {"primary": 3}
    # no ETag there: the manifest is fetched again (If-Modified-Since is not
    # trusted: a manifest replaced within the same second would look unchanged)
    r = client(static_host, manifest_ttl=timedelta(0))
    assert r.manifest_source == "primary"
    write_package(pkg, files_v2(), [key], version=2)
    r = client(static_host, manifest_ttl=timedelta(0))
    assert r.version == 2 and snapshot(client.dest) == files_v2()


def _blockhub(root: Path, base_url: str, files: dict[str, bytes]) -> bytes:
    entries = {}
    for key, (fname, data) in files.items():
        (root / "cdn" / "v1").mkdir(parents=True, exist_ok=True)
        (root / "cdn" / "v1" / fname).write_bytes(data)  # type: ignore[arg-type]
        entries[key] = {"url": f"{base_url}cdn/v1/{fname}",
                        "sha256": hashlib.sha256(data).hexdigest(),  # type: ignore[arg-type]
                        "size": len(data)}  # type: ignore[arg-type]
    doc = {"version": "1.0.0", "lastUpdated": "2025-11-24T10:00:00Z", "files": entries}
    return json.dumps(doc, indent=2).encode()


def test_blockhub_index_verify_apply_or_fall_back(client: Client, tmp_path: Path) -> None:
    root = tmp_path / "cdnroot"
    root.mkdir()
    rules = {
        "aiTerms": ("ai_terms.json", b'{"terms": ["gpt", "llm"]}\n'),
        "killList": ("kill_list.json", b'{"kill": [".ad", ".tracker"]}\n'),
    }
    with fault_server(root) as cdn:
        (root / "index.json").write_bytes(_blockhub(root, cdn.url, rules))
        r = client(cdn.url + "index.json", policy=None)
        assert snapshot(client.dest) == {k: v[1] for k, v in rules.items()}
        assert r.sources() == {"primary": 2}
        # tampered on the CDN → rejected, the extension's local fallback used
        fallback = tmp_path / "utils"
        fallback.mkdir()
        (fallback / "kill_list.json").write_bytes(rules["killList"][1])
        cdn.fault("cdn/v1/kill_list.json", "body", body=b'{"kill": []}\n')
        dest2 = tmp_path / "rules2"
        r = client(cdn.url + "index.json", policy=None, fallback_dir=fallback, dest=dest2,
                   cache_dir=tmp_path / "c2")
        assert {f.path: f.source for f in r.files} == {"aiTerms": "primary",
                                                        "killList": "fallback"}
        assert (dest2 / "killList").read_bytes() == rules["killList"][1]
        # the index cannot carry signatures: refused when keys are required
        with pytest.raises(ThresholdError):
            client(cdn.url + "index.json", cache_dir=tmp_path / "c3", dest=tmp_path / "r3")


def test_offline_uses_only_cache_and_fallback(
    client: Client, primary: FaultServer, tmp_path: Path
) -> None:
    client(primary.url)
    primary.clear()
    other = tmp_path / "elsewhere"
    r = client(primary.url, offline=True, dest=other, now=utcnow() + timedelta(days=2))
    assert sum(primary.hits.values()) == 0
    assert r.manifest_source == "cache" and r.sources() == {"cache": 3}
    assert snapshot(other) == FILES_V1
    with pytest.raises(StorageError) as info:
        client(primary.url, offline=True, cache_dir=tmp_path / "empty", dest=tmp_path / "x")
    assert info.value.exit_code == 5
    assert not (tmp_path / "x").exists()


class CountingTransport(httpx.BaseTransport):
    """The seam: any httpx transport can be injected (here: count and forward)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.urls: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_transport_seam(primary: FaultServer, tmp_path: Path, key: SigningKey) -> None:
    t = CountingTransport()
    fetch_package(primary.url, tmp_path / "d", policy=TrustPolicy([key.public]), transport=t,
                  http=FAST)
    assert sorted(u.removeprefix(primary.url) for u in t.urls) == sorted(
        ["integrity-manifest.json", *FILES_V1]
    )


def test_real_ledger_records_verifications_and_refusals(
    primary: FaultServer, pub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INTEGRITY_HMAC_SECRET", raising=False)
    db = tmp_path / "ledger.db"
    url = f"sqlite:///{db}"
    rc, _, _ = run_cli("fetch", primary.url, "-o", str(tmp_path / "d"), "--trusted-key",
                       str(pub), "--no-cache", "--ledger", url)
    assert rc == 0
    primary.fault("js/app.js", "flip")
    rc, _, _ = run_cli("fetch", primary.url, "-o", str(tmp_path / "e"), "--trusted-key",
                       str(pub), "--no-cache", "--ledger", url)
    assert rc == 1
    with open_ledger(url) as led:
        entries = [*led.store.committed_entries(), *led.pending()]
        types = [e.entry_type for e in entries]
    assert types.count("fetch.verified") >= 3 + 2
    assert "fetch.installed" in types and "fetch.refused" in types
    assert "fetch.rejected" in types


class Recorder:
    def __init__(self) -> None:
        self.total: tuple[int, int] | None = None
        self.bytes = 0
        self.files: list[tuple[str, str]] = []

    def start(self, total_bytes: int, total_files: int) -> None:
        self.total = (total_bytes, total_files)

    def advance(self, nbytes: int) -> None:
        self.bytes += nbytes

    def file_done(self, path: str, source: str) -> None:
        self.files.append((path, source))


def test_progress_counts_bytes_and_files_even_after_a_failed_attempt(
    client: Client, primary: FaultServer, mirror: FaultServer
) -> None:
    primary.fault("data/blob.bin", "flip")  # 200 kB streamed, then retracted
    rec = Recorder()
    client(primary.url, mirrors=[mirror.url], progress=rec)
    size = sum(len(v) for v in FILES_V1.values())
    assert rec.total == (size, 3)
    assert rec.bytes == size
    assert sorted(rec.files) == sorted(
        [("index.html", "primary"), ("js/app.js", "primary"), ("data/blob.bin", "mirror 1")]
    )


def test_cli_prints_only_the_result_when_not_a_terminal(
    primary: FaultServer, pub: Path, tmp_path: Path
) -> None:
    rc, out, err = run_cli("fetch", primary.url, "-o", str(tmp_path / "d"), "--trusted-key",
                           str(pub), "--no-cache")
    assert rc == 0 and err == ""
    assert out.startswith("installed site v1 into ") and out.count("\n") == 1
