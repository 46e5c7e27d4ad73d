"""Scale-out: two `auraseal serve` processes sharing one PostgreSQL ledger sequence
into one log (no fork, no gap), serve identical tiles, and Go checks the log read
from one server against a checkpoint taken from the other; two writers sharing a
tile directory keep it one consistent tree."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from _servers import free_port, wait_listening

from auraseal.ledger import BlockPolicy, open_ledger
from auraseal.ledger.note import Ed25519NoteSigner
from auraseal.ledger.tilelog import TileWriter
from auraseal.ledger.tiles import tiles_for_size
from auraseal.server.publish import new_token
from auraseal.signing import SigningKey

from .gotool import run_go

pytestmark = pytest.mark.postgres


@contextlib.contextmanager
def _serve(root: Path, url: str, tokens: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "auraseal", "serve", str(root), "--port", str(port),
         "--ledger", url, "--server", "uvicorn", "--publish-token-file", str(tokens),
         "--commit-interval", "1s", "--scrub-interval", "1h"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(port, 30, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr:
            proc.stderr.close()


def _size(base: str) -> int:
    r = httpx.get(f"{base}/ledger/log/checkpoint")
    return int(r.text.split("\n")[1]) if r.status_code == 200 else 0


def test_two_servers_sequence_one_log(pg_database: str, tmp_path: Path,
                                      go_checker: Path) -> None:
    token, line = new_token()
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(line + "\n")
    root1, root2 = tmp_path / "r1", tmp_path / "r2"
    root1.mkdir()
    (root2 / ".auraseal").mkdir(parents=True)
    with _serve(root1, pg_database, tokens) as s1:
        # N stateless servers share the checkpoint key (deployment: docs/LEDGER.md)
        shutil.copy(root1 / ".auraseal/checkpoint.key", root2 / ".auraseal/checkpoint.key")
        with _serve(root2, pg_database, tokens) as s2:
            auth = {"authorization": f"Bearer {token}"}
            client = httpx.Client()  # one client: building one per call costs ~0.1 s

            def post(i: int) -> str:
                base = s1 if i % 2 else s2
                r = client.post(f"{base}/ledger/entries", json={"type": "t", "data": {"i": i}},
                               headers=auth, timeout=30)
                assert r.status_code == 201, r.text
                return str(r.json()["id"])

            with ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(post, range(250)))
            deadline = time.monotonic() + 30
            while _size(s1) < 250 and time.monotonic() < deadline:
                time.sleep(0.2)
            old_note = httpx.get(f"{s1}/ledger/log/checkpoint").content
            (tmp_path / "old.note").write_bytes(old_note)
            with ThreadPoolExecutor(8) as pool:
                ids += list(pool.map(post, range(250, 600)))
            while _size(s2) < 600 and time.monotonic() < deadline + 30:
                time.sleep(0.2)
            client.close()
            assert _size(s1) == _size(s2) == 600
            # one log: byte-identical checkpoints and tiles from both servers
            c1 = httpx.get(f"{s1}/ledger/log/checkpoint").content
            assert c1 == httpx.get(f"{s2}/ledger/log/checkpoint").content
            for t in tiles_for_size(600):
                assert (httpx.get(f"{s1}/ledger/log/{t.path()}").content
                        == httpx.get(f"{s2}/ledger/log/{t.path()}").content)
            vkey = httpx.get(f"{s2}/ledger/verifier-key").text.strip()
            res = run_go(go_checker, "tiles", f"{s2}/ledger/log", vkey,
                         str(tmp_path / "old.note"), "0,255,256,599")
            assert res.returncode == 0, res.stderr.decode()
    led = open_ledger(pg_database, None)
    try:
        rep = led.verify_chain()
        assert rep.ok, rep.problems
        assert rep.entries == 600 and len(set(ids)) == 600
        blocks = list(led.blocks())
        assert [b.block_number for b in blocks] == list(range(1, len(blocks) + 1))
        assert sorted(led.entry(i).leaf_index or 0 for i in ids) == list(range(600))
    finally:
        led.close()


def test_writers_sharing_a_tile_directory_keep_one_tree(pg_database: str,
                                                        tmp_path: Path) -> None:
    signer = Ed25519NoteSigner("log", SigningKey.generate())
    out = tmp_path / "tiles"
    a = open_ledger(pg_database, None, policy=BlockPolicy(max_entries=50), secret=None,
                    tiles=TileWriter(out, signer))
    b = open_ledger(pg_database, None, policy=BlockPolicy(max_entries=50), secret=None,
                    tiles=TileWriter(out, signer))
    try:
        for k in range(6):
            (a if k % 2 else b).record_many([("t", {"k": k, "i": i}, None) for i in range(130)],
                                            with_signature=False)
        a.commit()
        size = a.checkpoint().size
        assert size == 780
        assert (out / "checkpoint").read_text() == a.signed_checkpoint("log", signer.key)
        for t in tiles_for_size(size):
            assert (out / t.path()).read_bytes() == b.tile(t)
    finally:
        a.close()
        b.close()
