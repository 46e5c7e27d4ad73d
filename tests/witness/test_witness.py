"""The tlog-witness: cosigns consistent checkpoints, refuses forks (409/422), and a
client with a witness threshold refuses a forked checkpoint."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _servers import free_port, run_app, wait_listening

from auraseal.errors import ThresholdError
from auraseal.ledger import BlockPolicy, Checkpoint, Ledger, open_ledger
from auraseal.ledger.checkpoint import open_checkpoint_note
from auraseal.ledger.note import (
    CosignatureSigner,
    Ed25519NoteSigner,
    parse_note,
    sign_note,
    signer_key_string,
    verified_witnesses,
)
from auraseal.signing import SigningKey, generate_keypair
from auraseal.witness.client import cosign, ledger_cosigner
from auraseal.witness.protocol import build_add_checkpoint
from auraseal.witness.server import Witness, witness_app

LOG = Ed25519NoteSigner("example.com/log", SigningKey.generate())
WIT = CosignatureSigner("example.com/witness", SigningKey.generate())


def _ledger(tmp: Path, name: str, n: int) -> Ledger:
    led = open_ledger(f"sqlite://{tmp / name}", None, policy=BlockPolicy(max_entries=5),
                      secret=None)
    _grow(led, n, name)
    return led


def _grow(led: Ledger, n: int, tag: str) -> None:
    led.record_many([("t", {"tag": tag, "i": i}, None) for i in range(n)], with_signature=False)
    led.commit()


def _note(origin: str, led: Ledger, size: int | None = None) -> str:
    cp = led.checkpoint(size)
    return sign_note(Checkpoint(origin, cp.size, cp.root).body(), [LOG])


@pytest.fixture
def witness(tmp_path: Path) -> Iterator[tuple[str, Witness, Ledger]]:
    led = _ledger(tmp_path, "a.db", 10)
    w = Witness(tmp_path / "witness.db", WIT, {led.origin: LOG.verifier()})
    with run_app(witness_app(w)) as url:
        yield url, w, led
    w.close()
    led.close()


def _post(url: str, old: int, proof: list[bytes], note: str | bytes) -> httpx.Response:
    return httpx.post(f"{url}/add-checkpoint", content=build_add_checkpoint(old, proof, note))


def test_witness_cosigns_a_consistent_log(witness: tuple[str, Witness, Ledger]) -> None:
    url, _, led = witness
    note = _note(led.origin, led)
    r = _post(url, 0, [], note)
    assert r.status_code == 200, r.text
    cosigned = parse_note((note + r.text).encode())
    assert [v.name for v in verified_witnesses(cosigned, [WIT.verifier()], 1)] == [WIT.name]
    _grow(led, 10, "a")
    note2 = _note(led.origin, led)
    stale = _post(url, 0, [], note2)
    assert stale.status_code == 409
    assert stale.headers["content-type"] == "text/x.tlog.size" and stale.text == "10\n"
    proof = led.consistency(10, 20)[0]
    assert _post(url, 10, proof, note2).status_code == 200
    # the same checkpoint again (old size = its size, empty proof) is cosigned again
    assert _post(url, 20, [], note2).status_code == 200


def test_witness_refuses_a_forked_log(witness: tuple[str, Witness, Ledger],
                                      tmp_path: Path) -> None:
    url, w, led = witness
    assert _post(url, 0, [], _note(led.origin, led)).status_code == 200
    # the log's key signs another history under the same origin
    fork = _ledger(tmp_path, "fork.db", 10)
    try:
        same_size = _note(led.origin, fork)
        assert _post(url, 10, [], same_size).status_code == 409  # same size, other root
        _grow(fork, 10, "fork")
        grown = _note(led.origin, fork)
        assert _post(url, 10, fork.consistency(10, 20)[0], grown).status_code == 422
        assert w.known(led.origin) == (10, led.tree_root())  # state untouched
        # a client demanding one cosignature refuses the forked checkpoint ...
        with pytest.raises(ThresholdError):
            open_checkpoint_note(grown, LOG.verifier(), witnesses=[WIT.verifier()],
                                 witness_threshold=1)
        # ... and accepts the real one, cosigned through the client library
        _grow(led, 10, "a")
        real = cosign(_note(led.origin, led), [url], lambda a, b: led.consistency(a, b)[0])
        cp = open_checkpoint_note(real, LOG.verifier(), witnesses=[WIT.verifier()],
                                  witness_threshold=1)
        assert cp.size == 20
    finally:
        fork.close()


def test_witness_refusals(witness: tuple[str, Witness, Ledger]) -> None:
    url, _, led = witness
    note = _note(led.origin, led)
    other = Ed25519NoteSigner("example.com/log", SigningKey.generate())
    forged = sign_note(led.checkpoint().body(), [other])
    assert _post(url, 0, [], forged).status_code == 403  # not the log's key
    unknown = sign_note(Checkpoint("other.example/log", 10, led.tree_root()).body(), [LOG])
    assert _post(url, 0, [], unknown).status_code == 403  # unknown origin
    assert _post(url, 11, [], note).status_code == 400  # old size above the checkpoint
    assert httpx.post(f"{url}/add-checkpoint", content=b"old 01\n\n" + note.encode()
                      ).status_code == 400
    assert httpx.post(f"{url}/add-checkpoint", content=note.encode()).status_code == 400
    crlf = note.replace("\n", "\r\n")
    assert _post(url, 0, [], crlf).status_code in (400, 403)
    assert _post(url, 0, [b"\x00" * 32], note).status_code == 422  # proof from size 0


def test_witness_state_survives_a_restart(tmp_path: Path) -> None:
    led = _ledger(tmp_path, "a.db", 10)
    w = Witness(tmp_path / "w.db", WIT, {led.origin: LOG.verifier()})
    body = build_add_checkpoint(0, [], _note(led.origin, led))
    assert w.add_checkpoint(body).status == 200
    w.close()
    w2 = Witness(tmp_path / "w.db", WIT, {led.origin: LOG.verifier()})
    out = w2.add_checkpoint(body)
    assert (out.status, out.body) == (409, b"10\n")
    w2.close()
    led.close()


def test_cli_witness_serve_and_tiles_publish_cosigned_checkpoint(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'l.db'}"
    led = _ledger(tmp_path, "l.db", 12)
    origin = led.origin
    led.close()
    log_key = tmp_path / "log.key"
    key = generate_keypair(log_key)
    log_vkey = Ed25519NoteSigner("auraseal-ledger", key).verifier().vkey()
    wkey = signer_key_string("w.example", SigningKey.generate(), 0x04)
    port = free_port()
    base = [sys.executable, "-m", "auraseal"]
    wvkey = subprocess.run([*base, "witness", "serve", "--key", wkey, "--log",
                                   f"{origin}={log_vkey}", "--print-key"],
                           capture_output=True, text=True, check=True).stdout.strip()
    proc = subprocess.Popen([*base, "witness", "serve", "--key", wkey, "--log",
                                    f"{origin}={log_vkey}", "--state", str(tmp_path / "w.db"),
                                    "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(port, 20, proc)
        out = tmp_path / "log"
        r = subprocess.run([*base, "ledger", "tiles", "--ledger", url, "--out", str(out),
                                   "--key", str(log_key), "--witness-url",
                                   f"http://127.0.0.1:{port}"],
                           capture_output=True, text=True, check=False)
        assert r.returncode == 0, r.stderr
        check = [*base, "ledger", "checkpoint", "--ledger", url, "--check",
                        str(out / "checkpoint"), "--pub", log_vkey, "--witness", wvkey]
        ok = subprocess.run(check, capture_output=True, text=True, check=False)
        assert ok.returncode == 0, ok.stderr
        other = signer_key_string("w2.example", SigningKey.generate(), 0x04)
        other_v = str(parse_signer_key_vkey(other))
        refused = subprocess.run([*check[:-1], other_v], capture_output=True, text=True,
                                 check=False)
        assert refused.returncode == 3, refused.stderr
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


def parse_signer_key_vkey(skey: str) -> str:
    from auraseal.ledger.note import parse_signer_key  # noqa: PLC0415

    return parse_signer_key(skey).verifier().vkey()


def test_ledger_cosigner_catches_up_from_the_witness_size(
        witness: tuple[str, Witness, Ledger]) -> None:
    url, w, led = witness
    cos = ledger_cosigner(led, [url])
    signer = Ed25519NoteSigner("example.com/log", LOG.key)
    first = cos(sign_note(Checkpoint(led.origin, 10, led.tree_root(10)).body(), [signer]))
    assert len(parse_note(first).signatures) == 2
    _grow(led, 7, "a")
    second = cos(sign_note(led.checkpoint().body(), [signer]))
    assert len(parse_note(second).signatures) == 2 and w.known(led.origin) == (17,
                                                                              led.tree_root())
