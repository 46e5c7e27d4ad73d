"""Ed25519 keys, signed envelopes, trust policies and rollback state.

An *envelope* (TUF style) is ``{"signed": {...}, "signatures": [{"keyid", "sig"}]}``
where each ``sig`` is the base64 Ed25519 signature over the RFC 8785 canonical
JSON of ``signed`` and ``keyid`` is the hex SHA-256 of the signer's raw
32-byte public key. A :class:`TrustPolicy` accepts an envelope when at least
``threshold`` *distinct trusted* keys produced valid signatures; signatures by
unknown keys never count. Each signature also carries its signer's raw public
key (``public_key``, base64) so a client can pin it on first use; it is never
trusted because it is there. :class:`TrustState` remembers the highest version
trusted per name so an older one (rollback) or a different document with the
same version is refused.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from auraseal._canonical import canonical_json
from auraseal._fs import atomic_write_bytes
from auraseal.errors import (
    BadSignatureError,
    ConfigError,
    ManifestFormatError,
    NotFoundError,
    RollbackError,
    StorageError,
    ThresholdError,
    UnknownKeyError,
)

__all__ = [
    "PKCS11_SCHEME",
    "PublicKey",
    "SignatureMemo",
    "Signer",
    "SigningKey",
    "TrustPolicy",
    "TrustState",
    "envelope_signers",
    "generate_keypair",
    "load_public_key",
    "load_signer",
    "load_signing_key",
    "sign_envelope",
    "verify_envelope",
    "verify_envelope_signers",
]


def _key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


class PublicKey:
    """An Ed25519 public key and its key id."""

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        self.raw: bytes = key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id: str = _key_id(self.raw)

    @classmethod
    def from_raw(cls, raw: bytes) -> PublicKey:
        if len(raw) != 32:
            raise ConfigError("Ed25519 public key must be 32 bytes", "public key")
        return cls(Ed25519PublicKey.from_public_bytes(raw))

    def verify(self, signature: bytes, data: bytes, where: str = "") -> None:
        try:
            self._key.verify(signature, data)
        except InvalidSignature as exc:
            raise BadSignatureError(
                f"signature by key {self.key_id[:16]} does not verify", where
            ) from exc

    def pem(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"PublicKey({self.key_id[:16]})"


@runtime_checkable
class Signer(Protocol):
    """Anything that makes Ed25519 signatures: a key file (:class:`SigningKey`)
    or a key inside a PKCS#11 token (:class:`auraseal.pkcs11.Pkcs11Signer`).
    Every function that signs takes a ``Signer``."""

    @property
    def public(self) -> PublicKey: ...

    @property
    def key_id(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...


class SigningKey:
    """An Ed25519 private key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public = PublicKey(key.public_key())
        self.key_id = self.public.key_id

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:
        return f"SigningKey({self.key_id[:16]})"


def generate_keypair(path: Path) -> SigningKey:
    """Create a key; write the private key (mode 0600) at ``path`` and the
    public key at ``path.pub``. Refuses to overwrite an existing key."""
    path = Path(path)
    pub = path.with_name(path.name + ".pub")
    for p in (path, pub):
        if p.exists():
            raise ConfigError("refusing to overwrite an existing key file", str(p))
    key = SigningKey.generate()
    atomic_write_bytes(path, key.pem(), mode=0o600)
    atomic_write_bytes(pub, key.public.pem(), mode=0o644)
    return key


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:  # a path the user named: bad input, as everywhere
        raise NotFoundError("no such file or directory", str(path)) from exc
    except OSError as exc:
        raise StorageError(f"cannot read key: {exc.strerror}", str(path)) from exc


def load_signing_key(path: Path) -> SigningKey:
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError("not a PEM private key", str(path)) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("not an Ed25519 private key", str(path))
    return SigningKey(key)


def load_public_key(path: Path) -> PublicKey:
    data = _read(path)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError("not a PEM public key", str(path)) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError("not an Ed25519 public key", str(path))
    return PublicKey(key)


#: a private key argument starting with this is an RFC 7512 PKCS#11 URI
PKCS11_SCHEME = "pkcs11:"


def load_signer(spec: str | Path, *, pin: str | None = None, module: str | None = None) -> Signer:
    """A signer from a key file path or a PKCS#11 URI (``pkcs11:token=...;object=...``).

    ``pin`` is the token's user PIN (PKCS#11 only; the URI's ``pin-value`` is
    used when absent) and ``module`` the PKCS#11 library when the URI names
    no ``module-path``."""
    text = str(spec)
    if text.startswith(PKCS11_SCHEME):
        from auraseal.pkcs11 import open_signer  # noqa: PLC0415 (imports this module)

        return open_signer(text, pin=pin, module=module)
    return load_signing_key(Path(text))


@dataclass(frozen=True)
class TrustPolicy:
    """Trusted keys and how many distinct ones must sign."""

    keys: tuple[PublicKey, ...]
    threshold: int = 1

    def __init__(self, keys: Sequence[PublicKey], threshold: int = 1) -> None:
        object.__setattr__(self, "keys", tuple(keys))
        object.__setattr__(self, "threshold", threshold)
        if threshold < 1:
            raise ConfigError("threshold must be at least 1", "threshold")
        distinct = len({k.key_id for k in self.keys})
        if distinct < threshold:
            raise ConfigError(
                f"threshold {threshold} exceeds the {distinct} distinct trusted key(s)",
                "threshold",
            )

    def by_id(self) -> dict[str, PublicKey]:
        return {k.key_id: k for k in self.keys}


def sign_envelope(signed: Mapping[str, Any], keys: Sequence[Signer]) -> dict[str, Any]:
    """Wrap ``signed`` in an envelope signed by each of ``keys``."""
    body = canonical_json(dict(signed))
    sigs = [
        {
            "keyid": k.key_id,
            "sig": base64.b64encode(k.sign(body)).decode("ascii"),
            "public_key": base64.b64encode(k.public.raw).decode("ascii"),
        }
        for k in keys
    ]
    return {"signed": dict(signed), "signatures": sigs}


#: signatures already checked over one body: ``(keyid, sig base64) -> verified``
#: (so a manifest's signatures are each verified once however many questions
#: are asked of it: see :class:`auraseal.manifest.ParsedManifest`)
SignatureMemo = dict[tuple[str, str], bool]


def _check_sig(
    key: PublicKey, sig_b64: str, raw: bytes, body: bytes, *, where: str,
    memo: SignatureMemo | None,
) -> None:
    """Verify one signature (raises BadSignatureError), at most once per memo."""
    if memo is not None:
        done = memo.get((key.key_id, sig_b64))
        if done is True:
            return
        if done is False:
            raise BadSignatureError(f"signature by key {key.key_id[:16]} does not verify", where)
    try:
        key.verify(raw, body, where)
    except BadSignatureError:
        if memo is not None:
            memo[(key.key_id, sig_b64)] = False
        raise
    if memo is not None:
        memo[(key.key_id, sig_b64)] = True


def envelope_signers(
    envelope: Mapping[str, Any],
    where: str = "",
    *,
    body: bytes | None = None,
    memo: SignatureMemo | None = None,
) -> list[PublicKey]:
    """The public keys carried in the envelope's signatures (``public_key``,
    base64 of the raw 32 bytes) whose key id matches and whose signature
    verifies — what trust on first use may pin. Proves only that the holder
    of each key signed; whether the key is the right one is the caller's call.
    ``body`` (the canonical bytes of ``signed``) and ``memo`` let a caller that
    already has them skip the re-serialization and any repeated verification."""
    signed = envelope.get("signed")
    sigs = envelope.get("signatures")
    if not isinstance(signed, dict) or not isinstance(sigs, list):
        return []
    if body is None:
        body = canonical_json(signed)
    out: dict[str, PublicKey] = {}
    for s in sigs:
        if not isinstance(s, dict):
            continue
        try:
            raw = base64.b64decode(str(s.get("public_key", "")), validate=True)
            sig_text = str(s.get("sig", ""))
            sig = base64.b64decode(sig_text, validate=True)
            key = PublicKey.from_raw(raw)
        except (binascii.Error, ConfigError, ValueError):
            continue
        if key.key_id != s.get("keyid") or key.key_id in out:
            continue
        try:
            _check_sig(key, sig_text, sig, body, where=where, memo=memo)
        except BadSignatureError:
            continue
        out[key.key_id] = key
    return list(out.values())


def verify_envelope(
    envelope: Mapping[str, Any], policy: TrustPolicy, where: str = ""
) -> dict[str, Any]:
    """Return ``envelope["signed"]`` if the policy's threshold is met.

    Raises :class:`BadSignatureError` if a *trusted* key's signature is
    invalid, :class:`UnknownKeyError` if only untrusted keys signed, and
    :class:`ThresholdError` if too few distinct trusted keys signed.
    """
    return verify_envelope_signers(envelope, policy, where)[0]


def verify_envelope_signers(
    envelope: Mapping[str, Any],
    policy: TrustPolicy,
    where: str = "",
    *,
    body: bytes | None = None,
    memo: SignatureMemo | None = None,
) -> tuple[dict[str, Any], frozenset[str]]:
    """:func:`verify_envelope`, also returning the ids of the trusted keys
    whose signatures verified (at least ``policy.threshold`` of them).
    ``body``/``memo``: as for :func:`envelope_signers`."""
    signed = envelope.get("signed")
    sigs = envelope.get("signatures")
    if not isinstance(signed, dict) or not isinstance(sigs, list):
        raise ManifestFormatError("envelope needs 'signed' object and 'signatures' list", where)
    if body is None:
        body = canonical_json(signed)
    trusted = policy.by_id()
    good: set[str] = set()
    unknown = 0
    for i, s in enumerate(sigs):
        if not isinstance(s, dict) or not isinstance(s.get("keyid"), str):
            raise ManifestFormatError(f"signature {i} is malformed", where)
        keyid: str = s["keyid"]
        key = trusted.get(keyid)
        if key is None:
            unknown += 1
            continue
        sig_text = str(s.get("sig", ""))
        try:
            raw = base64.b64decode(sig_text, validate=True)
        except binascii.Error as exc:
            raise BadSignatureError(f"signature {i} is not base64", where) from exc
        _check_sig(key, sig_text, raw, body, where=where, memo=memo)
        good.add(keyid)
    if len(good) >= policy.threshold:
        return signed, frozenset(good)
    if not good and unknown:
        raise UnknownKeyError(
            f"signed only by {unknown} untrusted key(s); none of the trusted keys signed", where
        )
    raise ThresholdError(
        f"{len(good)} of the required {policy.threshold} trusted signature(s)", where
    )


class TrustState:
    """A small JSON file of the highest version trusted per name.

    ``{"version": 1, "trusted": {"<name>": {"version": N, "digest": "<hex>"}}}``
    """

    FORMAT_VERSION = 1

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StorageError(f"unreadable trust state: {exc}", str(self.path)) from exc
        trusted = data.get("trusted") if isinstance(data, dict) else None
        if not isinstance(trusted, dict):
            raise StorageError("trust state has no 'trusted' object", str(self.path))
        return trusted

    def get(self, name: str) -> tuple[int, str] | None:
        rec = self._load().get(name)
        if not isinstance(rec, dict):
            return None
        return int(rec["version"]), str(rec["digest"])

    def check(self, name: str, version: int, digest: str, where: str = "") -> None:
        """Raise :class:`RollbackError` if ``version`` may not replace what is trusted."""
        prev = self.get(name)
        if prev is None:
            return
        pv, pd = prev
        if version < pv:
            raise RollbackError(
                f"version {version} is older than trusted version {pv} of '{name}' (rollback)",
                where,
            )
        if version == pv and digest != pd:
            raise RollbackError(
                f"version {version} of '{name}' differs from the one trusted before", where
            )

    def record(self, name: str, version: int, digest: str) -> None:
        trusted = self._load()
        trusted[name] = {"version": version, "digest": digest}
        doc = {"version": self.FORMAT_VERSION, "trusted": trusted}
        with contextlib.suppress(FileExistsError):
            os.makedirs(self.path.parent, exist_ok=True)
        atomic_write_bytes(self.path, json.dumps(doc, indent=2, sort_keys=True).encode())

    def check_and_record(self, name: str, version: int, digest: str, where: str = "") -> None:
        self.check(name, version, digest, where)
        self.record(name, version, digest)
