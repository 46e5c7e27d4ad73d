"""Ed25519 envelopes: thresholds, unknown keys, forged signatures, key files."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from auraseal.errors import (
    BadSignatureError,
    ConfigError,
    RollbackError,
    ThresholdError,
    UnknownKeyError,
)
from auraseal.signing import (
    SigningKey,
    TrustPolicy,
    TrustState,
    generate_keypair,
    load_public_key,
    load_signing_key,
    sign_envelope,
    verify_envelope,
)

DOC = {"name": "x", "version": 3, "files": {"a": {"size": 1}}}


def test_keygen_files_and_modes(tmp_path: Path) -> None:
    k = generate_keypair(tmp_path / "key")
    assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o600
    assert load_signing_key(tmp_path / "key").key_id == k.key_id
    assert load_public_key(tmp_path / "key.pub") == k.public
    with pytest.raises(ConfigError, match="overwrite"):
        generate_keypair(tmp_path / "key")
    (tmp_path / "junk").write_text("nope")
    with pytest.raises(ConfigError, match="not a PEM"):
        load_public_key(tmp_path / "junk")


def test_threshold_counts_distinct_trusted_keys() -> None:
    a, b, c, stranger = (SigningKey.generate() for _ in range(4))
    policy = TrustPolicy([a.public, b.public, c.public], threshold=2)
    assert verify_envelope(sign_envelope(DOC, [a, b]), policy) == DOC
    with pytest.raises(ThresholdError, match="1 of the required 2"):
        verify_envelope(sign_envelope(DOC, [a]), policy)
    # the same key twice is one key
    env = sign_envelope(DOC, [a])
    env["signatures"] = env["signatures"] * 2
    with pytest.raises(ThresholdError):
        verify_envelope(env, policy)
    # unknown keys never count
    with pytest.raises(ThresholdError):
        verify_envelope(sign_envelope(DOC, [a, stranger]), policy)
    with pytest.raises(UnknownKeyError, match="untrusted"):
        verify_envelope(sign_envelope(DOC, [stranger]), TrustPolicy([a.public]))


def test_tampered_content_or_signature_rejected() -> None:
    k = SigningKey.generate()
    policy = TrustPolicy([k.public])
    env = sign_envelope(DOC, [k])
    env["signed"] = {**DOC, "version": 4}
    with pytest.raises(BadSignatureError, match="does not verify"):
        verify_envelope(env, policy)
    env = sign_envelope(DOC, [k])
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[0] ^= 1
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(BadSignatureError):
        verify_envelope(env, policy)


def test_signature_is_over_canonical_json() -> None:
    """Key order and whitespace don't matter (RFC 8785), content does."""
    k = SigningKey.generate()
    env = sign_envelope({"b": 1, "a": [1, "é"]}, [k])
    env["signed"] = {"a": [1, "é"], "b": 1}
    verify_envelope(env, TrustPolicy([k.public]))
    k.public.verify(base64.b64decode(env["signatures"][0]["sig"]), '{"a":[1,"é"],"b":1}'.encode())


def test_policy_validation() -> None:
    k = SigningKey.generate()
    with pytest.raises(ConfigError, match="exceeds"):
        TrustPolicy([k.public, k.public], threshold=2)
    with pytest.raises(ConfigError):
        TrustPolicy([k.public], threshold=0)


def test_trust_state(tmp_path: Path) -> None:
    s = TrustState(tmp_path / "st" / "state.json")
    s.check_and_record("p", 2, "aa")
    s.check_and_record("p", 2, "aa")
    s.check_and_record("p", 3, "bb")
    with pytest.raises(RollbackError, match="older"):
        s.check("p", 2, "aa")
    with pytest.raises(RollbackError, match="differs"):
        s.check("p", 3, "cc")
    s.check("other", 1, "zz")
    assert s.get("p") == (3, "bb")
