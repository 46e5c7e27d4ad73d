"""`auraseal serve --witness-url` gets each checkpoint cosigned by a real `auraseal
witness serve`, and `auraseal fetch --require-witnessed-log` installs only a version
whose publish is proven in that witnessed log (docs/LEDGER.md §1.11)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from _servers import free_port, stop_process, wait_listening

from auraseal.cli import build_parser
from auraseal.cli._serve import _serve_options
from auraseal.errors import TrustError
from auraseal.ledger import open_ledger
from auraseal.ledger.checkpoint import open_checkpoint_note
from auraseal.ledger.note import (
    CosignatureSigner,
    Ed25519NoteSigner,
    NoteVerifier,
    parse_verifier_key,
)
from auraseal.manifest import MANIFEST_NAME, manifest_digest, read_manifest_file
from auraseal.sealing import seal_tree
from auraseal.signing import SigningKey, generate_keypair
from auraseal.witness.client import cosign

from .conftest import EXAMPLE, copy_tree, zip_dir

SERVER_KEY_NAME = "auraseal-server"


@dataclass
class Setup:
    url: str
    root: Path
    log_vkey: str
    log_key: SigningKey
    witness_url: str
    witness_vkey: str
    origin: str
    pub: Path


def _start(cmd: list[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_listening(port, 30, proc)
    return proc


@pytest.fixture
def setup(root: Path, tmp_path: Path, serve: Callable[..., str],
          publisher_key: SigningKey) -> Iterator[Setup]:
    """ROOT's ledger and checkpoint key made first (so the witness knows the log),
    a real `auraseal witness serve` subprocess, the real server submitting to it."""
    state = root / ".auraseal"
    state.mkdir()
    log_key = generate_keypair(state / "checkpoint.key")
    led = open_ledger(f"sqlite://{(state / 'ledger.sqlite3').resolve()}", None, secret=None)
    origin = led.origin
    led.close()
    log_vkey = Ed25519NoteSigner(SERVER_KEY_NAME, log_key).verifier().vkey()
    wkey = generate_keypair(tmp_path / "witness.key")
    witness_vkey = CosignatureSigner("test-witness", wkey).verifier().vkey()
    port = free_port()
    proc = _start([sys.executable, "-m", "auraseal", "witness", "serve",
                   "--key", str(tmp_path / "witness.key"), "--name", "test-witness",
                   "--log", f"{origin}={log_vkey}", "--state", str(tmp_path / "w.db"),
                   "--port", str(port)], port)
    pub = tmp_path / "publisher.pub"
    pub.write_bytes(publisher_key.public.pem())
    try:
        wurl = f"http://127.0.0.1:{port}"
        url = serve(root, witness_urls=(wurl,))
        yield Setup(url, root, log_vkey, log_key, wurl, witness_vkey, origin, pub)
    finally:
        stop_process(proc)


def _publish(s: Setup, body: bytes, token: str, name: str = "site") -> str:
    r = httpx.put(f"{s.url}/packages/{name}", content=body,
                  headers={"authorization": f"Bearer {token}"}, timeout=60)
    assert r.status_code == 201, r.text
    return str(r.json()["ledger_entry"])


def _witnesses(*vkeys: str) -> list[NoteVerifier]:
    return [parse_verifier_key(v) for v in vkeys]


def _wait_cosigned(s: Setup, path: str, min_size: int) -> str:
    deadline = time.monotonic() + 20
    note = ""
    while time.monotonic() < deadline:
        r = httpx.get(f"{s.url}{path}")
        if r.status_code == 200:
            note = r.text
            try:
                cp = open_checkpoint_note(note, parse_verifier_key(s.log_vkey),
                                          witnesses=_witnesses(s.witness_vkey),
                                          witness_threshold=1)
            except TrustError:
                cp = None
            if cp is not None and cp.size >= min_size:
                return note
        time.sleep(0.1)
    raise AssertionError(f"{path} never cosigned: {note!r}")


def _fetch(s: Setup, url: str, dest: Path, *witness: str, threshold: int | None = None
           ) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "auraseal", "fetch", url, "-o", str(dest), "--no-cache",
           "--trusted-key", str(s.pub), "--require-witnessed-log", s.log_vkey]
    for w in witness:
        cmd += ["--witness", w]
    if threshold is not None:
        cmd += ["--witness-threshold", str(threshold)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_serve_publishes_checkpoint_cosigned_by_witness(
    setup: Setup, site_zip: Callable[[int], bytes], token: tuple[str, Path]
) -> None:
    entry = _publish(setup, site_zip(2), token[0])
    # the server's block timer commits the publish and submits the checkpoint by itself
    deadline = time.monotonic() + 20
    while not (inc := httpx.get(f"{setup.url}/ledger/entries/{entry}").json()["inclusion"]):
        assert time.monotonic() < deadline, "never committed"
        time.sleep(0.1)
    for path in ("/ledger/log/checkpoint", "/ledger/checkpoint"):
        note = _wait_cosigned(setup, path, inc["leaf_index"] + 1)
        assert "— test-witness " in note
    proof = httpx.get(f"{setup.url}/packages/site/files/ledger-proof.json", timeout=60)
    assert proof.status_code == 200, proof.text
    bundle = proof.json()
    assert bundle["entry"]["entry_id"] == entry
    # at the latest cosigned checkpoint (the same note, unless the tree grew since)
    cp = open_checkpoint_note(bundle["checkpoint"], parse_verifier_key(setup.log_vkey),
                              witnesses=_witnesses(setup.witness_vkey), witness_threshold=1)
    assert cp.size == bundle["tree_size"] > inc["leaf_index"]
    # not part of the package: the manifest lists no such file
    m = httpx.get(f"{setup.url}/packages/site/integrity-manifest.json").text
    assert "ledger-proof.json" not in m


def test_fetch_requires_witnessed_publish_and_installs(
    setup: Setup, site_zip: Callable[[int], bytes], token: tuple[str, Path], tmp_path: Path
) -> None:
    _publish(setup, site_zip(2), token[0])
    dest = tmp_path / "out"
    r = _fetch(setup, f"{setup.url}/packages/site", dest, setup.witness_vkey)
    assert r.returncode == 0, r.stderr
    assert "witnessed ledger" in r.stdout
    assert (dest / "index.html").exists()


def test_fetch_refuses_when_listed_witness_did_not_cosign(
    setup: Setup, site_zip: Callable[[int], bytes], token: tuple[str, Path], tmp_path: Path
) -> None:
    _publish(setup, site_zip(2), token[0])
    other = CosignatureSigner("other-witness", SigningKey.generate()).verifier().vkey()
    dest = tmp_path / "out"
    r = _fetch(setup, f"{setup.url}/packages/site", dest, other)
    assert r.returncode == 3, r.stderr
    assert "witness cosignatures" in r.stderr
    assert not dest.exists()
    # 1 of 2 listed witnesses is not enough when both are required
    r = _fetch(setup, f"{setup.url}/packages/site", dest, setup.witness_vkey, other)
    assert r.returncode == 3, r.stderr
    assert not dest.exists()


def test_fetch_refuses_bundle_for_another_version(
    setup: Setup, site_zip: Callable[[int], bytes], token: tuple[str, Path], tmp_path: Path
) -> None:
    """A server replays the (genuine, witnessed) proof of the v2 publish for v3."""
    e2 = _publish(setup, site_zip(2), token[0])
    _publish(setup, site_zip(3), token[0])
    record = setup.root / ".auraseal" / "publish-entries" / "site.json"
    record.write_text(json.dumps({"version": 3, "entry_id": e2}))
    dest = tmp_path / "out"
    r = _fetch(setup, f"{setup.url}/packages/site", dest, setup.witness_vkey)
    assert r.returncode == 3, r.stderr
    assert "version 2" in r.stderr and "not 3" in r.stderr
    assert not dest.exists()


def test_fetch_refuses_bundle_for_another_package(
    setup: Setup, site_zip: Callable[[int], bytes], token: tuple[str, Path], tmp_path: Path,
    sealed_versions: dict[int, Path], publisher_key: SigningKey,
) -> None:
    """A server serves, for 'other', the proof of a publish of 'site'."""
    e2 = _publish(setup, site_zip(2), token[0])
    seal_tree(EXAMPLE, tmp_path / "other", keys=[publisher_key], name="other", version=2)
    _publish(setup, zip_dir(tmp_path / "other"), token[0], name="other")
    record = setup.root / ".auraseal" / "publish-entries" / "other.json"
    record.write_text(json.dumps({"version": 2, "entry_id": e2}))
    dest = tmp_path / "out"
    r = _fetch(setup, f"{setup.url}/packages/other", dest, setup.witness_vkey)
    assert r.returncode == 3, r.stderr
    assert "package 'site'" in r.stderr
    assert not dest.exists()


def _static(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = _start([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port),
                   "--directory", str(directory)], port)
    return proc, f"http://127.0.0.1:{port}"


def test_fetch_refuses_forked_checkpoint(
    setup: Setup, site_zip: Callable[[int], bytes], token: tuple[str, Path], tmp_path: Path,
    sealed_versions: dict[int, Path],
) -> None:
    """The log key holder shows a victim another history (a fork) holding the
    publish it serves: the witness, which saw the real log, refuses to cosign it,
    so the fork carries the log signature only (or cosignatures copied from the
    real checkpoint, which do not verify over the fork) — refused either way."""
    _publish(setup, site_zip(2), token[0])
    genuine = httpx.get(f"{setup.url}/packages/site/files/ledger-proof.json", timeout=60).json()
    real = _wait_cosigned(setup, "/ledger/log/checkpoint", genuine["tree_size"])
    # a static host with v2 and its genuine proof installs: the control
    site = tmp_path / "static" / "site"
    copy_tree(sealed_versions[2], site)
    (site / "ledger-proof.json").write_text(json.dumps(genuine))
    proc, static = _static(tmp_path / "static")
    try:
        ok = _fetch(setup, f"{static}/site/", tmp_path / "ok", setup.witness_vkey)
        assert ok.returncode == 0, ok.stderr
        # the fork: same origin and log key, another tree of a larger size
        fork_db = tmp_path / "fork.db"
        led = open_ledger(f"sqlite://{fork_db}", None, secret=None)
        led.close()
        with sqlite3.connect(fork_db) as db:
            db.execute("UPDATE meta SET value=? WHERE key='origin'", (setup.origin,))
        led = open_ledger(f"sqlite://{fork_db}", None, secret=None)
        m2 = read_manifest_file(sealed_versions[2] / MANIFEST_NAME)
        meta = {"package": "site", "version": 2, "files": len(m2.files), "bytes": 1,
                "manifest_sha256": manifest_digest(m2), "manifest_only": False}
        led.record_many([("server.other", {"i": i}, None)
                         for i in range(genuine["tree_size"] + 3)], with_signature=False)
        res = led.record("server.publish", meta, meta, with_signature=False)
        led.commit()
        bundle = led.proof_bundle(res.entry_id, SERVER_KEY_NAME, setup.log_key)
        fork_note = bundle["checkpoint"]

        def proof(a: int, b: int) -> list[bytes]:
            return list(led.consistency(a, b)[0])

        with pytest.raises(TrustError):  # the witness refuses the fork
            cosign(fork_note, [setup.witness_url], proof)
        led.close()
        for variant in ("log-signed only", "with the real cosignatures"):
            if variant != "log-signed only":
                lines = real[real.index("\n\n") + 2:].splitlines(keepends=True)
                bundle["checkpoint"] = fork_note + "".join(
                    ln for ln in lines if ln.startswith("— test-witness "))
            (site / "ledger-proof.json").write_text(json.dumps(bundle))
            dest = tmp_path / "forked"
            r = _fetch(setup, f"{static}/site/", dest, setup.witness_vkey)
            assert r.returncode == 3, (variant, r.stderr)
            assert ("0 of the required 1" if variant == "log-signed only"
                    else "invalid cosignature by witness") in r.stderr
            assert not dest.exists()
    finally:
        stop_process(proc)
    shutil.rmtree(tmp_path / "static", ignore_errors=True)


def test_witness_url_from_config_file_and_command_line(tmp_path: Path) -> None:
    cfg = tmp_path / "serve.toml"
    cfg.write_text('witness-url = ["http://127.0.0.1:1", "http://127.0.0.1:2"]\n')
    opts = _serve_options(build_parser().parse_args(["serve", "--config", str(cfg)]))
    assert opts.witness_url == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    opts = _serve_options(build_parser().parse_args(
        ["serve", "--config", str(cfg), "--witness-url", "http://127.0.0.1:3"]))
    assert opts.witness_url == ["http://127.0.0.1:3"]
    assert _serve_options(build_parser().parse_args(["serve"])).witness_url == []


@pytest.mark.parametrize("extra", [[], ["--witness-threshold", "0"]])
def test_fetch_witnessed_log_without_a_witness_is_a_usage_error(
    tmp_path: Path, extra: list[str]
) -> None:
    """A "witnessed" policy that requires no cosignature would check nothing more
    than the log's own signature: refused before anything is fetched."""
    w = CosignatureSigner("w", SigningKey.generate()).verifier().vkey()
    log = Ed25519NoteSigner(SERVER_KEY_NAME, SigningKey.generate()).verifier().vkey()
    argv = [sys.executable, "-m", "auraseal", "fetch", "http://127.0.0.1:9/packages/site",
            "-o", str(tmp_path / "out"), "--allow-unsigned", "--no-cache",
            "--require-witnessed-log", log, *(["--witness", w] if extra else []), *extra]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "needs at least one --witness" in r.stderr and not (tmp_path / "out").exists()


def test_fetch_refuses_when_the_witness_is_down(
    root: Path, serve: Callable[..., str], site_zip: Callable[[int], bytes],
    token: tuple[str, Path], tmp_path: Path, publisher_key: SigningKey,
) -> None:
    """No witness answers: the server keeps serving its plain checkpoint, has no
    witnessed proof to give (404 naming the failure), and the fetch refuses."""
    dead = f"http://127.0.0.1:{free_port()}"
    url = serve(root, witness_urls=(dead,))
    vkey = httpx.get(f"{url}/ledger/verifier-key").text.strip()
    r = httpx.put(f"{url}/packages/site", content=site_zip(2),
                  headers={"authorization": f"Bearer {token[0]}"}, timeout=60)
    assert r.status_code == 201, r.text
    proof = httpx.get(f"{url}/packages/site/files/ledger-proof.json", timeout=60)
    assert proof.status_code == 404 and "witness" in proof.text
    note = httpx.get(f"{url}/ledger/checkpoint").text
    assert open_checkpoint_note(note, parse_verifier_key(vkey)).size > 0
    pub = tmp_path / "publisher.pub"
    pub.write_bytes(publisher_key.public.pem())
    w = CosignatureSigner("w", SigningKey.generate()).verifier().vkey()
    dest = tmp_path / "out"
    f = subprocess.run(
        [sys.executable, "-m", "auraseal", "fetch", f"{url}/packages/site", "-o", str(dest),
         "--no-cache", "--trusted-key", str(pub), "--require-witnessed-log", vkey,
         "--witness", w], capture_output=True, text=True, timeout=120)
    assert f.returncode == 3, f.stderr
    assert "no ledger proof served" in f.stderr and not dest.exists()


def test_serve_refuses_a_witness_url_that_is_not_http(root: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "auraseal", "serve", str(root), "--port", "9",
                        "--witness-url", "witness.example:7380"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "witness URL must be http" in r.stderr
