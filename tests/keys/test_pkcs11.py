"""Hardware keys: an Ed25519 key generated inside Debian's SoftHSM2 signs
manifests and roots wherever a key file does (library and CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auraseal.cli import main
from auraseal.errors import ConfigError, MissingSecretError, NotFoundError, TrustError
from auraseal.manifest import MANIFEST_NAME, build_manifest, dump_signed, load_manifest
from auraseal.pkcs11 import generate_ed25519, open_signer, parse_uri
from auraseal.root import load_root
from auraseal.signing import PublicKey, TrustPolicy, load_public_key, load_signer

from .conftest import Token
from .helpers import FILES


@pytest.fixture(scope="module")
def token_key(softhsm_token: Token) -> tuple[Token, PublicKey]:
    pub = generate_ed25519("release", "k1", pin=softhsm_token.pin, module=softhsm_token.module)
    generate_ed25519("release", "k2", pin=softhsm_token.pin, module=softhsm_token.module)
    return softhsm_token, pub


def _tree(d: Path) -> Path:
    for rel, data in FILES.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    return d


def test_manifest_signed_through_softhsm_verifies_with_exported_public_key(
    token_key: tuple[Token, PublicKey], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tok, generated = token_key
    # the public key, exported from the token by the CLI (PIN from the environment)
    monkeypatch.setenv("AURASEAL_PKCS11_PIN", tok.pin)
    pub = tmp_path / "k1.pub"
    assert main(["root", "pubkey", tok.uri("k1"), "-o", str(pub)]) == 0
    exported = load_public_key(pub)
    assert exported == generated
    # library: a signer opened from the URI signs a manifest
    site = _tree(tmp_path / "site")
    m = build_manifest(site, name="site", version=3)
    with open_signer(tok.uri("k1"), pin=tok.pin) as signer:
        assert signer.key_id == exported.key_id
        data = dump_signed(m, [signer])
    got = load_manifest(data, policy=TrustPolicy([exported]))
    assert got.version == 3
    with pytest.raises(TrustError):
        load_manifest(data, policy=TrustPolicy([load_signer(tok.uri("k2"), pin=tok.pin).public]))
    # CLI: `manifest build --key pkcs11:...` with --pin-file, verified with the exported key
    monkeypatch.delenv("AURASEAL_PKCS11_PIN")
    pin_file = tmp_path / "pin"
    pin_file.write_text(tok.pin + "\n")
    capsys.readouterr()
    assert main(["manifest", "build", str(site), "--name", "site", "--key", tok.uri("k1"),
                 "--pin-file", str(pin_file)]) == 0
    assert main(["manifest", "verify", str(site), "--trusted-key", str(pub)]) == 0
    doc = json.loads((site / MANIFEST_NAME).read_bytes())
    assert [s["keyid"] for s in doc["signatures"]] == [exported.key_id]


def test_root_init_and_rotate_with_token_keys(
    token_key: tuple[Token, PublicKey], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    tok, _ = token_key
    monkeypatch.setenv("AURASEAL_PKCS11_PIN", tok.pin)
    assert main(["keygen", str(tmp_path / "file.key")]) == 0
    r1 = tmp_path / "r1.json"
    assert main(["root", "init", "-o", str(r1), "--key", tok.uri("k1"),
                 "--key", str(tmp_path / "file.key"), "--threshold", "2"]) == 0
    root1 = load_root(r1.read_bytes())
    assert root1.release.threshold == 2 and len(root1.release.keyids) == 2
    # rotate the file key out for the token's second key: both of v1's keys and k2 sign
    k2pub = tmp_path / "k2.pub"
    assert main(["root", "pubkey", tok.uri("k2"), "-o", str(k2pub)]) == 0
    r2 = tmp_path / "r2.json"
    assert main(["root", "rotate", str(r1), "-o", str(r2), "--sign-with", tok.uri("k1"),
                 "--remove-key", str(tmp_path / "file.key.pub"), "--add-key", str(k2pub)]) == 0
    assert main(["root", "status", str(r2), "--previous", str(r1)]) == 3  # a draft
    assert main(["root", "sign", str(r2), "--key", str(tmp_path / "file.key"),
                 "--previous", str(r1)]) == 0  # old threshold met; new needs k2
    assert main(["root", "status", str(r2), "--previous", str(r1)]) == 3
    assert main(["root", "sign", str(r2), "--key", tok.uri("k2")]) == 0
    assert main(["root", "status", str(r2), "--previous", str(r1)]) == 0


def test_token_refusals(
    token_key: tuple[Token, PublicKey], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    tok, _ = token_key
    with pytest.raises(TrustError, match="log in"):
        open_signer(tok.uri("k1"), pin="0000")
    with pytest.raises(MissingSecretError):
        open_signer(tok.uri("k1"))
    with pytest.raises(NotFoundError):
        open_signer(tok.uri("nosuch"), pin=tok.pin)
    with pytest.raises(NotFoundError):
        open_signer(f"pkcs11:token=other;object=k1?module-path={tok.module}", pin=tok.pin)
    with pytest.raises(ConfigError, match="unsupported"):
        parse_uri("pkcs11:token=release;objekt=k1")
    # CLI: wrong PIN is a trust failure (3), one line, no traceback
    monkeypatch.setenv("AURASEAL_PKCS11_PIN", "0000")
    capsys.readouterr()
    assert main(["root", "pubkey", tok.uri("k1"), "-o", str(tmp_path / "x.pub")]) == 3
    err = capsys.readouterr().err
    assert err.startswith("auraseal: error: pkcs11:token=release;object=k1:")
    assert err.count("\n") == 1


def test_parse_uri_rfc7512() -> None:
    u = parse_uri("pkcs11:token=My%20Token;object=release%2D1;id=%01%02"
                  "?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=12")
    assert (u.token, u.object, u.id) == ("My Token", "release-1", b"\x01\x02")
    assert (u.module_path, u.pin_value) == ("/usr/lib/softhsm/libsofthsm2.so", "12")
    with pytest.raises(ConfigError, match="names no key"):
        parse_uri("pkcs11:token=x")
